"""The tools a turn called, on the web page: folded under its answer, shown live while it
streams, and corrected there (a call's arguments edited, calls removed and added).

A real Chromium (as tests/browser.py drives it) on a real server whose operator's tools
are the shared arithmetic task's ``calculate``; the model is tests/scripted.py's, which
makes the calls each test sets (the tiny random model never makes one). The tools run for
real, in the agent's graph and when a corrected call is saved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from learnloop.learning.toolbox import load_tools
from tests.browser import PHONE, browser, open_page
from tests.scripted import SHARED_TOOLS, ScriptedBackend, call
from tests.serving import Running, running_server

__all__ = ["browser"]  # the Chromium fixture of tests/browser.py, shared by this module

pytestmark = pytest.mark.skipif(not SHARED_TOOLS.is_file(), reason="../shared/data is absent")

QUESTION = "2824 boxes of 81 items: how many items?"
WRONG = call("calculate", expression="2824 * 82")  # the model multiplies the wrong numbers
BROKEN = call("calculate", expression="2 ** 9999")  # a call the tool refuses
ANSWER = "There are 231568 items."


@contextmanager
def tool_server(
    model_dir: Path, tokenizer_dir: Path, script: list[str]
) -> Iterator[tuple[Running, ScriptedBackend]]:
    """A server with ``calculate`` as the operator's tool and a model answering ``script``."""
    backend = ScriptedBackend(tokenizer_dir, script)
    toolbox = load_tools([str(SHARED_TOOLS)])
    with running_server(model_dir, backend=backend, toolbox=toolbox) as running:
        yield running, backend


@contextmanager
def tool_page(
    browser: Browser, model_dir: Path, tokenizer_dir: Path, script: list[str]
) -> Iterator[tuple[Running, Page]]:
    """:func:`tool_server` and the page it serves, open in the browser."""
    with (
        tool_server(model_dir, tokenizer_dir, script) as (running, _),
        open_page(browser, running.url) as page,
    ):
        yield running, page


def send(page: Page, text: str) -> Locator:
    """Send ``text``; the turn once its answer has finished."""
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()
    turn = page.get_by_test_id("turn").last
    expect(turn.get_by_test_id("user-message")).to_have_text(text)
    expect(turn.get_by_test_id("thumb-up")).to_be_enabled()
    return turn


def reopen(page: Page) -> Locator:
    """The page loaded again and the conversation opened from the thread list."""
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    page.get_by_test_id("thread-item").first.click()
    turn = page.get_by_test_id("turn").last
    expect(turn.get_by_test_id("thumb-up")).to_be_enabled()
    return turn


def stored_feedback(running: Running) -> list[dict[str, Any]]:
    with running.client() as http:
        (thread,) = http.get("/v1/threads").json()
        turns = http.get(f"/v1/threads/{thread['id']}").json()["turns"]
    return [f for t in turns for f in t["feedback"]]


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"


# -- the tests ----------------------------------------------------------------------------


def test_a_turn_that_called_tools_shows_them_folded_under_its_answer(
    browser: Browser, tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    script = [WRONG + BROKEN, ANSWER]
    with tool_page(browser, tiny_model_dir, smol_tokenizer_dir, script) as (running, page):
        turn = send(page, QUESTION)
        expect(turn.get_by_test_id("answer")).to_have_text(ANSWER)
        steps = turn.get_by_test_id("steps")
        expect(steps.get_by_test_id("steps-summary")).to_have_text("2 tool calls")
        lines = steps.get_by_test_id("step-line")
        expect(lines.first).to_be_hidden()  # folded until asked for

        steps.get_by_test_id("steps-summary").click()
        expect(lines).to_have_text(
            [
                'calculate({"expression": "2824 * 82"}) → 231568',
                re.compile(r'^calculate\(\{"expression": "2 \*\* 9999"\}\) ✗ .*raised'),
            ]
        )
        expect(lines.last).to_have_class(re.compile(r"\berror\b"))  # the failed call
        expect(lines.first).not_to_have_class(re.compile(r"\berror\b"))

        turn = reopen(page)  # the store has the steps; the fold is folded again
        steps = turn.get_by_test_id("steps")
        expect(steps.get_by_test_id("steps-summary")).to_have_text("2 tool calls")
        expect(steps.get_by_test_id("step-line").first).to_be_hidden()
        steps.get_by_test_id("steps-summary").focus()  # from the keyboard too
        page.keyboard.press("Enter")
        expect(steps.get_by_test_id("step-line").first).to_be_visible()
        page.keyboard.press("Enter")
        expect(steps.get_by_test_id("step-line").first).to_be_hidden()

        with open_page(browser, running.url, PHONE) as phone:
            phone.get_by_test_id("threads-toggle").click()
            phone.get_by_test_id("thread-item").first.click()
            turn = phone.get_by_test_id("turn").last
            turn.get_by_test_id("steps-summary").click()
            expect(turn.get_by_test_id("step-line").first).to_be_visible()
            turn.get_by_test_id("correct").click()
            expect(turn.get_by_test_id("call-row")).to_have_count(2)
            no_sideways_scroll(phone)


def test_a_turn_without_tools_shows_no_fold(
    browser: Browser, tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    with tool_page(browser, tiny_model_dir, smol_tokenizer_dir, ["Hello there."]) as (
        running,
        page,
    ):
        turn = send(page, "Hello")
        expect(turn.get_by_test_id("answer")).to_have_text("Hello there.")
        expect(turn.get_by_test_id("steps")).to_be_hidden()


def test_the_calls_show_live_while_the_answer_streams(
    browser: Browser, tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    with tool_page(browser, tiny_model_dir, smol_tokenizer_dir, [WRONG, ANSWER]) as (running, page):
        # every change of the fold while the answer streams, in order
        page.evaluate(
            """() => {
                window.foldChanges = [];
                new MutationObserver((records) => {
                    for (const r of records) {
                        const fold = r.target.closest && r.target.closest("details");
                        if (!fold) continue;
                        const streaming = !!document.querySelector(".answer-text.streaming");
                        window.foldChanges.push({kind: r.type, name: r.attributeName,
                            was: r.oldValue, streaming,
                            lines: fold.querySelectorAll("li").length});
                    }
                }).observe(document.getElementById("messages"), {subtree: true,
                    childList: true, attributes: true, attributeOldValue: true,
                    attributeFilter: ["open"]});
            }"""
        )
        turn = send(page, QUESTION)
        changes: list[dict[str, Any]] = page.evaluate("window.foldChanges")
        opened = [c for c in changes if c["name"] == "open" and c["was"] is None]
        assert opened and opened[0]["streaming"], changes  # unfolded while it streamed
        assert any(c["kind"] == "childList" and c["streaming"] for c in changes), changes
        steps = turn.get_by_test_id("steps")
        expect(steps).not_to_have_attribute("open", "")  # folded once it is done
        expect(steps.get_by_test_id("steps-summary")).to_have_text("1 tool call")


def test_a_corrected_call_is_run_again_and_stored_with_its_new_result(
    browser: Browser, tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    script = [WRONG + BROKEN, ANSWER]
    with tool_page(browser, tiny_model_dir, smol_tokenizer_dir, script) as (running, page):
        turn = send(page, QUESTION)
        expect(turn.get_by_test_id("steps-summary")).to_have_text("2 tool calls")
        turn.get_by_test_id("correct").click()
        rows = turn.get_by_test_id("call-row")
        expect(rows).to_have_count(2)
        first = rows.first.get_by_test_id("call-arguments")
        expect(first).to_have_value('{"expression": "2824 * 82"}')
        expect(rows.first.get_by_test_id("call-result")).to_have_text("→ 231568")
        first.fill('{"expression": "2824 * 81"')  # not JSON: the page says so
        rows.last.get_by_test_id("call-remove").click()
        expect(rows).to_have_count(1)
        turn.get_by_test_id("correction-input").fill("There are 228744 items.")
        turn.get_by_test_id("correction-submit").click()
        error = turn.get_by_test_id("correction-error")
        expect(error).to_contain_text("call 1 (calculate): the arguments are not JSON")
        expect(first).to_have_attribute("aria-invalid", "true")
        expect(first).to_be_focused()
        assert stored_feedback(running) == []  # nothing stored

        # a call of a tool the server does not have: its 400, next to the editor
        turn.get_by_test_id("call-add").click()
        expect(rows).to_have_count(2)
        rows.last.get_by_test_id("call-name").fill("multiply")
        rows.last.get_by_test_id("call-arguments").fill('{"a": 2824, "b": 81}')
        first.fill('{"expression": "2824 * 81"}')
        expect(rows.first.get_by_test_id("call-result")).to_contain_text("runs when you save")
        turn.get_by_test_id("correction-submit").click()
        expect(error).to_contain_text("no tool 'multiply'")
        assert stored_feedback(running) == []
        expect(first).to_have_value('{"expression": "2824 * 81"}')  # nothing lost
        expect(turn.get_by_test_id("correction-input")).to_have_value("There are 228744 items.")

        rows.last.get_by_test_id("call-remove").click()
        turn.get_by_test_id("correction-submit").click()
        expect(turn.get_by_test_id("correction-form")).to_be_hidden()
        expect(turn.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "true")
        fixed = 'calculate({"expression": "2824 * 81"}) → 228744'  # the tool ran again
        expect(turn.get_by_test_id("correction-steps").get_by_test_id("step-line")).to_have_text(
            [fixed]
        )
        expect(turn.get_by_test_id("correction-text")).to_have_text("There are 228744 items.")

        (feedback,) = stored_feedback(running)
        assert feedback["rating"] == "down"
        assert feedback["correction"] == "There are 228744 items."
        made, result, final = feedback["correction_messages"]
        assert [c["function"] for c in made["tool_calls"]] == [
            {"name": "calculate", "arguments": '{"expression": "2824 * 81"}'}
        ]
        assert result["role"] == "tool" and result["content"] == "228744"
        assert result["tool_call_id"] == made["tool_calls"][0]["id"]
        assert final == {"role": "assistant", "content": "There are 228744 items."}

        turn = reopen(page)  # the correction, as the store has it
        expect(turn.get_by_test_id("correction-steps").get_by_test_id("step-line")).to_have_text(
            [fixed]
        )
        expect(turn.get_by_test_id("steps-summary")).to_have_text("2 tool calls")  # as made
        turn.get_by_test_id("correct").click()  # the editor starts from the correction
        expect(turn.get_by_test_id("call-row")).to_have_count(1)
        expect(turn.get_by_test_id("call-result")).to_have_text("→ 228744")


def test_a_call_the_model_did_not_make_is_added_and_kept_results_are_not_run_again(
    browser: Browser, tiny_model_dir: Path, smol_tokenizer_dir: Path
) -> None:
    script = ["It is about 230000.", WRONG, "There are 231568 items."]
    with tool_page(browser, tiny_model_dir, smol_tokenizer_dir, script) as (running, page):
        turn = send(page, QUESTION)
        expect(turn.get_by_test_id("steps")).to_be_hidden()  # it called nothing
        turn.get_by_test_id("correct").click()
        expect(turn.get_by_test_id("call-row")).to_have_count(0)
        turn.get_by_test_id("call-add").click()
        row = turn.get_by_test_id("call-row")
        expect(row.get_by_test_id("call-name")).to_be_focused()
        row.get_by_test_id("call-name").fill("calculate")
        row.get_by_test_id("call-arguments").fill('{"expression": "2824 * 81"}')
        turn.get_by_test_id("correction-input").fill("There are 228744 items.")
        turn.get_by_test_id("correction-input").press("Control+Enter")
        expect(turn.get_by_test_id("correction-steps").get_by_test_id("step-line")).to_have_text(
            ['calculate({"expression": "2824 * 81"}) → 228744']
        )

        # a second message whose call was right: only its answer is corrected, and
        # the call's result is sent as it was (the server has nothing to run)
        turn = send(page, "And 2824 boxes of 82?")
        expect(turn.get_by_test_id("steps-summary")).to_have_text("1 tool call")
        turn.get_by_test_id("correct").click()
        turn.get_by_test_id("correction-input").fill("2824 * 82 = 231568 items.")
        with page.expect_request("**/v1/feedback") as sent:
            turn.get_by_test_id("correction-submit").click()
        body = sent.value.post_data_json
        assert body is not None
        made, result, final = body["correction_messages"]
        assert made["tool_calls"][0]["function"]["name"] == "calculate"
        assert result == {
            "role": "tool",
            "tool_call_id": made["tool_calls"][0]["id"],
            "content": "231568",
        }
        assert final == {"role": "assistant", "content": "2824 * 82 = 231568 items."}
        expect(turn.get_by_test_id("correction-text")).to_have_text("2824 * 82 = 231568 items.")
        corrections = [f["correction_messages"] for f in stored_feedback(running)]
        assert len(corrections) == 2 and corrections[1][1]["content"] == "231568"
