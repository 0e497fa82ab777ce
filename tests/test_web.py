"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against a
real ``learnloop serve`` process over the tiny model and the test's own data root.

What a person does on the page is what the tests do: type a message and watch the answer
stream in with the version that wrote it, rate it, write a better answer, start learning
and follow its progress, then see the next answer come from the new version; resume and
regenerate; read the Learning view's table and plots.

The browser is the system's (``/usr/bin/chromium``, from Debian's ``chromium`` package);
Playwright never downloads one here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.browser import (
    FAST_LEARN,
    PHONE,
    SLOW,
    Server,
    browser,
    learn,
    open_page,
    page,
    send,
    serve,
    server,
    teach,
    watch_answers,
    watch_learning,
)
from tests.helpers import run_cli

__all__ = ["browser", "page", "server"]  # the fixtures of tests/browser.py

# -- the tests ----------------------------------------------------------------------------


def test_feedback_teaches_a_version_that_answers_the_next_message(page: Page) -> None:
    watch_answers(page)
    expect(page.get_by_test_id("active-version")).to_have_text("base")
    send(page, "What is the capital of France?")
    first = page.get_by_test_id("turn").last
    expect(first.get_by_test_id("version-badge")).to_have_text("base")
    expect(first.get_by_test_id("answer")).not_to_be_empty()
    assert page.evaluate("window.answerPieces") >= 2  # streamed, not written at once

    first.get_by_test_id("thumb-down").click()
    expect(first.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "true")
    expect(first.get_by_test_id("feedback-note")).to_contain_text("thanks")

    first.get_by_test_id("correct").click()
    first.get_by_test_id("correction-input").fill("The capital of France is Paris.")
    first.get_by_test_id("correction-submit").click()
    expect(first.get_by_test_id("correction-input")).to_be_hidden()
    # honest: a correction may be kept aside to test the next version rather than train it
    expect(first.get_by_test_id("feedback-note")).to_have_text(
        "thanks: the next learning cycle uses it"
    )
    expect(first.get_by_test_id("correction-text")).to_have_text("The capital of France is Paris.")

    page.evaluate(f"window.LEARN_OPTIONS = {json.dumps(FAST_LEARN)}")
    page.get_by_test_id("tab-learning").click()
    expect(page.get_by_test_id("feedback-waiting")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.get_by_test_id("versions-table")).to_contain_text("base")
    watch_learning(page)
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("learn-status")).to_have_text("succeeded", timeout=SLOW)

    states = page.evaluate("window.learnStates")
    assert any(s["status"] == "running" for s in states), states  # progress was shown
    end = states[-1]
    assert end["value"] == end["max"], states  # the bar reached its end
    expect(page.get_by_test_id("learn-loss")).to_have_text(re.compile(r"loss \d+\.\d{4}"))
    expect(page.get_by_test_id("learn-result")).to_contain_text("v1 promoted")
    v1 = page.locator("[data-testid=version-row][data-version=v1]")
    expect(v1.get_by_test_id("version-status")).to_have_text("promoted")
    expect(v1.get_by_test_id("activate")).to_be_disabled()  # it is the active one
    expect(page.get_by_test_id("active-version")).to_have_text("v1")
    expect(page.get_by_test_id("feedback-waiting")).to_have_text("0")
    expect(page.locator("[data-testid=plot-loss] svg path.line")).to_have_count(1)
    expect(page.locator("#bench-card")).to_be_hidden()  # no benchmark results here

    page.get_by_test_id("tab-chat").click()
    send(page, "And the capital of Italy?")
    badges = page.get_by_test_id("version-badge")
    expect(badges).to_have_text(["base", "v1"])  # each answer keeps the version that wrote it

    # reopened, the corrected answer says what learning did with the correction
    page.get_by_test_id("new-chat").click()
    page.get_by_test_id("thread-item").filter(has_text="capital of France").click()
    corrected = page.get_by_test_id("turn").first
    expect(corrected.get_by_test_id("feedback-note")).to_have_text("learned by v1")


def test_threads_resume_regenerate_and_errors_show(page: Page, server: Server) -> None:
    send(page, "My name is Ada.")
    send(page, "What is my name?")
    expect(page.get_by_test_id("thread-item")).to_have_count(1)
    expect(page.get_by_test_id("thread-item").first).to_contain_text("My name is Ada.")
    expect(page.get_by_test_id("thread-item").first).to_contain_text("2 turns")

    second = page.get_by_test_id("turn").last
    old_id = second.get_attribute("data-turn-id")
    second.get_by_test_id("regen").click()
    expect(second).not_to_have_attribute("data-turn-id", old_id or "")
    expect(second.get_by_test_id("thumb-up")).to_be_enabled()
    new_id = second.get_attribute("data-turn-id")
    expect(page.get_by_test_id("turn")).to_have_count(2)  # replaced in view, not added
    second.get_by_test_id("thumb-up").click()
    expect(second.get_by_test_id("thumb-up")).to_have_attribute("aria-pressed", "true")

    page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("turn")).to_have_count(0)
    send(page, "A different subject")
    expect(page.get_by_test_id("thread-item")).to_have_count(2)

    page.get_by_test_id("thread-item").filter(has_text="My name is Ada.").click()
    turns = page.get_by_test_id("turn")
    expect(turns).to_have_count(2)
    expect(turns.get_by_test_id("user-message")).to_have_text(
        ["My name is Ada.", "What is my name?"]
    )
    expect(turns.last).to_have_attribute("data-turn-id", new_id or "")  # the regenerated one
    expect(turns.last.get_by_test_id("thumb-up")).to_have_attribute("aria-pressed", "true")
    send(page, "Thanks!")
    with server.client() as http:
        listed = http.get("/v1/threads").json()
    ada = next(t for t in listed if t["title"] == "My name is Ada.")
    with server.client() as http:
        history = http.get(f"/v1/threads/{ada['id']}").json()["turns"]
    assert [t["user_message"] for t in history][-1] == "Thanks!"  # continued, not a new thread

    page.get_by_test_id("tab-learning").click()
    expect(page.get_by_test_id("rollback")).to_be_disabled()  # the base model is active
    page.evaluate("window.LEARN_OPTIONS = {no_such_setting: 1}")
    page.get_by_test_id("learn-now").click()
    expect(page.get_by_test_id("error")).to_contain_text("unknown learn setting")
    expect(page.get_by_test_id("learn-now")).to_be_enabled()


def test_the_learning_view_draws_its_table_and_plots(page: Page, server: Server) -> None:
    expect(page.get_by_test_id("active-version")).to_have_text("base")
    page.get_by_test_id("tab-learning").click()
    expect(page.get_by_test_id("plot-approval")).to_contain_text("No rated answers yet")
    expect(page.get_by_test_id("plot-loss")).to_contain_text("No training runs yet")

    with server.client() as http:
        assert teach(http, "Capital of France?", "down", "Paris.") == "base"
        assert teach(http, "Capital of Spain?", "up") == "base"
        run = learn(http)
        assert (run["status"], run["version"], run["promoted"]) == ("succeeded", "v1", True)
        assert teach(http, "Capital of Italy?", "up") == "v1"
    server.bench_results.parent.mkdir(parents=True)
    server.bench_results.write_text(
        json.dumps(
            {
                "base": {"accuracy": 0.4},
                "cycles": [
                    {"interactions": 20, "accuracy": 0.55, "version": "v1"},
                    {"interactions": 40, "accuracy": 0.7, "version": "v2"},
                ],
            }
        )
    )

    page.reload()
    page.get_by_test_id("tab-learning").click()
    approval = page.locator("[data-testid=plot-approval] svg")
    expect(approval.locator("rect.bar")).to_have_count(2)
    expect(approval.locator("rect.bar[data-version=base]")).to_be_attached()
    expect(approval).to_contain_text("share of thumbs-up")  # axis labels
    expect(approval).to_contain_text("version")
    heights = approval.locator("rect.bar").evaluate_all(
        "bars => bars.map(b => Number(b.getAttribute('height')))"
    )
    assert heights[0] < heights[1]  # base 50 % approved, v1 100 %

    loss = page.locator("[data-testid=plot-loss] svg")
    expect(loss.locator("path.line")).to_have_count(1)
    assert "L" in (loss.locator("path.line").get_attribute("d") or "")  # more than one point
    expect(loss).to_contain_text("training step")
    expect(loss).to_contain_text("run 1 → v1")

    expect(page.locator("#bench-card")).to_be_visible()
    bench = page.locator("[data-testid=plot-bench] svg")
    expect(bench.locator("path.line")).to_have_count(1)
    expect(bench.locator("circle.dot")).to_have_count(3)
    expect(bench).to_contain_text("accuracy")

    rows = page.get_by_test_id("version-row")
    expect(rows).to_have_count(2)
    page.get_by_test_id("rollback").click()
    expect(page.get_by_test_id("active-version")).to_have_text("base")
    v1 = page.locator("[data-testid=version-row][data-version=v1]")
    expect(v1.get_by_test_id("activate")).to_be_enabled()
    v1.get_by_test_id("activate").click()
    expect(page.get_by_test_id("active-version")).to_have_text("v1")
    expect(v1.get_by_test_id("activate")).to_be_disabled()


def test_off_loopback_the_page_asks_for_a_key_and_keeps_it(
    browser: Browser, tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    created = run_cli(None, "keys", "create", "ada", "--json")
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)["key"]
    with (
        serve(tiny_model_dir, home, tmp_path, "--host", "0.0.0.0") as keyed,
        open_page(browser, keyed.url) as page,
    ):
        expect(page.get_by_test_id("key-form")).to_be_visible()
        expect(page.get_by_test_id("key-refused")).to_be_hidden()
        expect(page.get_by_test_id("error")).to_be_hidden()  # the form says it, once
        page.get_by_test_id("key-input").fill("not-a-key")
        page.get_by_test_id("key-save").click()
        expect(page.get_by_test_id("key-refused")).to_be_visible()

        page.get_by_test_id("key-input").fill(key)
        page.get_by_test_id("key-save").click()
        expect(page.get_by_test_id("key-forget")).to_be_visible()
        expect(page.get_by_test_id("key-form")).to_be_hidden()
        send(page, "Hello")
        expect(page.get_by_test_id("version-badge")).to_have_text(["base"])
        page.get_by_test_id("turn").last.get_by_test_id("thumb-up").click()
        expect(page.get_by_test_id("feedback-note")).to_contain_text("thanks")
        with keyed.client() as http:
            http.headers["Authorization"] = f"Bearer {key}"
            (turn,) = http.get("/v1/log").json()
        assert [f["user"] for f in turn["feedback"]] == ["ada"]  # the key names the user

        page.reload()  # the key stays in this browser
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        expect(page.get_by_test_id("thread-item")).to_have_count(1)
        page.get_by_test_id("key-forget").click()
        expect(page.get_by_test_id("key-form")).to_be_visible()
        expect(page.get_by_test_id("thread-item")).to_have_count(0)


# -- what people expect of a chat page ------------------------------------------------------


def test_regenerate_keeps_the_rated_answer_beside_the_new_one(page: Page, server: Server) -> None:
    send(page, "Tell me about owls")
    turn = page.get_by_test_id("turn").last
    first_id = turn.get_attribute("data-turn-id")
    turn.get_by_test_id("correct").click()
    turn.get_by_test_id("correction-input").fill("Owls hunt at night.")
    turn.get_by_test_id("correction-submit").click()
    expect(turn.get_by_test_id("correction-text")).to_have_text("Owls hunt at night.")
    expect(turn.get_by_test_id("siblings")).to_be_hidden()  # one answer: no ‹ 1/1 ›

    turn.get_by_test_id("regen").click()
    expect(turn.get_by_test_id("answer-index")).to_have_text("2/2")
    expect(turn.get_by_test_id("thumb-up")).to_be_enabled()
    expect(turn).not_to_have_attribute("data-turn-id", first_id or "")
    second_id = turn.get_attribute("data-turn-id")
    expect(turn.get_by_test_id("correction-shown")).to_be_hidden()  # the new one is unrated
    expect(turn.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "false")
    expect(turn.get_by_test_id("next-answer")).to_be_disabled()
    turn.get_by_test_id("thumb-up").click()  # rates the answer shown: the new one
    expect(turn.get_by_test_id("thumb-up")).to_have_attribute("aria-pressed", "true")

    turn.get_by_test_id("prev-answer").click()  # the rated answer is still there
    expect(turn.get_by_test_id("answer-index")).to_have_text("1/2")
    expect(turn).to_have_attribute("data-turn-id", first_id or "")
    expect(turn.get_by_test_id("thumb-down")).to_have_attribute("aria-pressed", "true")
    expect(turn.get_by_test_id("correction-text")).to_have_text("Owls hunt at night.")
    expect(turn.get_by_test_id("prev-answer")).to_be_disabled()
    expect(page.get_by_test_id("turn")).to_have_count(1)

    page.reload()  # the thread keeps both answers, the newest shown
    page.get_by_test_id("thread-item").first.click()
    turn = page.get_by_test_id("turn").last
    expect(turn.get_by_test_id("answer-index")).to_have_text("2/2")
    expect(turn).to_have_attribute("data-turn-id", second_id or "")
    turn.get_by_test_id("prev-answer").click()
    expect(turn.get_by_test_id("correction-text")).to_have_text("Owls hunt at night.")
    with server.client() as http:
        log = {t["turn_id"]: t for t in http.get("/v1/log").json()}
    assert [f["rating"] for f in log[int(first_id or 0)]["feedback"]] == ["down"]
    assert [f["rating"] for f in log[int(second_id or 0)]["feedback"]] == ["up"]


def test_stop_ends_the_answer_and_keeps_what_it_wrote(page: Page, server: Server) -> None:
    watch_answers(page)
    # a long answer, so that there is time to stop it: the tiny model never ends by itself
    page.evaluate("window.CHAT_OPTIONS = {max_tokens: 900, whole_answer: true}")
    page.get_by_test_id("message-input").fill("Tell me a very long story")
    page.get_by_test_id("send").click()
    turn = page.get_by_test_id("turn").last
    page.wait_for_function("window.answerPieces >= 3")
    expect(page.get_by_test_id("send")).to_be_disabled()
    page.get_by_test_id("stop").click()

    expect(turn.get_by_test_id("thumb-up")).to_be_enabled()  # logged, so it can be rated
    expect(turn.get_by_test_id("feedback-note")).to_have_text("(stopped)")
    expect(turn).to_have_class(re.compile(r"\bstopped\b"))
    expect(turn.get_by_test_id("answer")).not_to_be_empty()
    expect(page.get_by_test_id("stop")).to_be_hidden()
    expect(page.get_by_test_id("send")).to_be_enabled()
    turn_id = int(turn.get_attribute("data-turn-id") or 0)
    with server.client() as http:
        (logged,) = http.get("/v1/log").json()
    assert logged["turn_id"] == turn_id
    assert logged["interrupted"] is True
    assert 0 < logged["completion_tokens"] < 900  # it stopped generating, not just showing
    turn.get_by_test_id("thumb-down").click()
    expect(turn.get_by_test_id("feedback-note")).to_have_text("(stopped) · thanks")

    page.evaluate("window.CHAT_OPTIONS = {}")
    send(page, "Short one now")  # the next answer runs to its end
    last = page.get_by_test_id("turn").last
    expect(last.get_by_test_id("feedback-note")).to_have_text("(cut off at the length limit)")


MARKDOWN_ANSWER = """Here is **bold**, *italic*, `code` and snake_case_name.

- first item
- second with a [link](https://example.org/docs)
1. one
2. two

```python
print("<b>not bold</b>")
```

<img src=x onerror="window.pwned = 1"> and [bad](javascript:window.pwned=2) stay text.
<script>window.pwned = 3</script>"""


def test_answers_render_as_markdown_and_their_html_as_text(
    browser: Browser, tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    from learnloop.storage.store import Store
    from tests.helpers import make_log

    with Store() as store:  # an answer as a model might write it, stored before the server
        store.add_turn(make_log("Show me markdown", MARKDOWN_ANSWER, thread_id="md"))
    with serve(tiny_model_dir, home, tmp_path) as running, open_page(browser, running.url) as page:
        page.get_by_test_id("thread-item").first.click()
        answer = page.get_by_test_id("answer").last
        expect(answer.locator("strong")).to_have_text("bold")
        expect(answer.locator("em")).to_have_text("italic")
        expect(answer.locator("p code")).to_have_text("code")
        expect(answer).to_contain_text("snake_case_name")  # no italics inside a word
        expect(answer.locator("ul > li")).to_have_count(2)
        expect(answer.locator("ol > li")).to_have_text(["one", "two"])
        link = answer.locator("a")
        expect(link).to_have_count(1)  # the javascript: one is no link
        expect(link).to_have_attribute("href", "https://example.org/docs")
        expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
        expect(answer.locator("pre code")).to_have_text('print("<b>not bold</b>")')
        expect(answer.locator("img, script, b")).to_have_count(0)  # no HTML got through
        expect(answer).to_contain_text('<img src=x onerror="window.pwned = 1">')
        expect(answer).to_contain_text("<script>window.pwned = 3</script>")
        expect(answer).to_contain_text("[bad](javascript:window.pwned=2)")
        assert page.evaluate("window.pwned") is None

        # a correction is rendered the same way, and safely
        turn = page.get_by_test_id("turn").last
        turn.get_by_test_id("correct").click()
        turn.get_by_test_id("correction-input").fill(
            "Use **`ls -la`** <img src=y onerror=alert(1)>"
        )
        turn.get_by_test_id("correction-submit").click()
        shown = turn.get_by_test_id("correction-text")
        expect(shown.locator("strong code")).to_have_text("ls -la")
        expect(shown).to_contain_text("<img src=y onerror=alert(1)>")
        expect(shown.locator("img")).to_have_count(0)


def test_conversations_are_renamed_searched_and_deleted(page: Page, server: Server) -> None:
    send(page, "Plan a trip to Lisbon")
    page.get_by_test_id("new-chat").click()
    send(page, "Recipe for pancakes")
    items = page.get_by_test_id("thread-item")
    expect(items).to_have_count(2)

    lisbon = page.get_by_test_id("thread-row").filter(has_text="Plan a trip to Lisbon")
    lisbon.get_by_test_id("thread-rename").click()
    title = page.get_by_test_id("thread-title-input")
    title.fill("")
    title.press("Enter")
    expect(page.get_by_test_id("error")).to_contain_text("1 to 200 characters")
    title.fill("Holiday")
    title.press("Enter")
    expect(page.get_by_test_id("thread-title")).to_have_text(["Recipe for pancakes", "Holiday"])

    search = page.get_by_test_id("thread-search")
    search.fill("holi")  # the title
    expect(page.get_by_test_id("thread-title")).to_have_text(["Holiday"])
    search.fill("LISBON")  # the messages, any case
    expect(page.get_by_test_id("thread-title")).to_have_text(["Holiday"])
    search.fill("no such words")
    expect(items).to_have_count(0)
    expect(page.locator("#thread-empty")).to_have_text("No conversation matches “no such words”.")
    search.fill("")
    expect(items).to_have_count(2)

    pancakes = page.get_by_test_id("thread-row").filter(has_text="Recipe for pancakes")
    expect(pancakes.get_by_test_id("thread-item")).to_have_class(re.compile(r"\bcurrent\b"))
    page.once("dialog", lambda dialog: dialog.dismiss())  # "Delete ...?" Cancel
    pancakes.get_by_test_id("thread-delete").click()
    expect(items).to_have_count(2)
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    pancakes.get_by_test_id("thread-delete").click()
    expect(items).to_have_count(1)
    assert "keep what they learned" in messages[0]
    expect(page.get_by_test_id("turn")).to_have_count(0)  # it was the one shown
    with server.client() as http:
        assert [t["title"] for t in http.get("/v1/threads").json()] == ["Holiday"]


def test_the_page_fits_a_phone_and_has_an_icon(browser: Browser, server: Server) -> None:
    def no_sideways_scroll() -> None:
        width = page.evaluate("document.scrollingElement.scrollWidth")
        wide = page.evaluate(  # what sticks out, to say in the failure
            """() => [...document.querySelectorAll("body *")]
                .filter((e) => e.getBoundingClientRect().right > innerWidth + 0.5)
                .slice(0, 5).map((e) => `${e.tagName}#${e.id}.${e.className}`)"""
        )
        assert width <= PHONE["width"], f"the page is {width} px wide: {wide}"

    with open_page(browser, server.url, PHONE) as page:
        sidebar = page.locator("#sidebar")
        expect(sidebar).to_be_hidden()  # the thread list waits behind ☰
        no_sideways_scroll()
        send(page, "Hello from a phone")
        turn = page.get_by_test_id("turn").last
        turn.get_by_test_id("correct").click()
        wide = "```\n" + "x" * 300 + "\n```\nand a " + "y" * 200 + " word"
        turn.get_by_test_id("correction-input").fill(wide)
        turn.get_by_test_id("correction-submit").click()
        expect(turn.get_by_test_id("correction-text").locator("pre")).to_be_visible()
        no_sideways_scroll()

        page.get_by_test_id("threads-toggle").click()
        expect(sidebar).to_be_visible()
        expect(page.get_by_test_id("threads-toggle")).to_have_attribute("aria-expanded", "true")
        no_sideways_scroll()
        page.get_by_test_id("thread-item").first.click()
        expect(sidebar).to_be_hidden()  # picking a thread closes the list
        expect(page.get_by_test_id("turn")).to_have_count(1)

        page.get_by_test_id("tab-learning").click()
        expect(page.get_by_test_id("learn-now")).to_be_visible()
        no_sideways_scroll()

        icon = page.locator("link[rel=icon]")
        expect(icon).to_have_attribute("type", "image/svg+xml")
        href = page.evaluate("document.querySelector('link[rel=icon]').href")
        served = page.request.get(href)
        assert served.status == 200
        assert served.headers["content-type"].startswith("image/svg+xml")
        assert "<svg" in served.text()
