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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import run_cli
from tests.serving import serve_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Learning settings that make the tiny model's run short and its version promoted: the
# tiny model's answers cannot pass a real gate, and the gate is tested elsewhere.
FAST_LEARN = {"max_steps": 3, "sft_learning_rate": 1e-2, "gate": False}
SLOW = 180_000  # ms: a learning run, on a busy 2-core machine

expect.set_options(timeout=30_000)


@dataclass
class Server:
    url: str
    bench_results: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


@pytest.fixture
def server(tiny_model_dir: Path, home: Path, tmp_path: Path) -> Iterator[Server]:
    with serve(tiny_model_dir, home, tmp_path) as running:
        yield running


@contextmanager
def serve(model_dir: Path, home: Path, tmp_path: Path, *flags: str) -> Iterator[Server]:
    """``learnloop serve FLAGS`` in a child process, as a user starts it."""
    bench_results = tmp_path / "bench" / "results.json"
    options = ("--max-new-tokens", "8", "--auto-learn", "false")
    options += ("--bench-results", str(bench_results), *flags)
    with serve_process(model_dir, home, tmp_path / "server.log", *options) as url:
        yield Server(url, bench_results)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    with open_page(browser, server.url) as opened:
        yield opened


@contextmanager
def open_page(browser: Browser, url: str) -> Iterator[Page]:
    """The page in a fresh browser context (its own localStorage), ready to use."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    opened.on("console", lambda msg: problems.extend(script_errors(msg.type, msg.text)))
    opened.goto(url)
    expect(opened.locator("body[data-ready=true]")).to_be_attached()
    yield opened
    context.close()
    assert problems == []  # no uncaught exceptions or logged errors in the page's script


def script_errors(kind: str, text: str) -> list[str]:
    # the browser logs every 4xx answer too; those the page must show, and tests check it does
    if kind != "error" or text.startswith("Failed to load resource"):
        return []
    return [f"console error: {text}"]


# -- helpers ------------------------------------------------------------------------------


def send(page: Page, text: str) -> None:
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("send").click()
    turn = page.get_by_test_id("turn").last
    expect(turn.get_by_test_id("user-message")).to_have_text(text)
    expect(turn.get_by_test_id("thumb-up")).to_be_enabled()  # the answer has finished


def watch_answers(page: Page) -> None:
    """Count the pieces of text added to answers as they stream (window.answerPieces)."""
    page.evaluate(
        """() => {
            window.answerPieces = 0;
            new MutationObserver((records) => {
                for (const r of records) {
                    if (r.target.dataset && r.target.dataset.testid === "answer") {
                        const texts = [...r.addedNodes].filter((n) => n.nodeType === 3);
                        window.answerPieces += texts.length;
                    }
                }
            }).observe(document.getElementById("messages"), {childList: true, subtree: true});
        }"""
    )


def watch_learning(page: Page) -> None:
    """Record every state the learning panel shows (window.learnStates)."""
    page.evaluate(
        """() => {
            window.learnStates = [];
            const bar = document.querySelector("[data-testid=learn-progress]");
            const record = () => window.learnStates.push({
                status: document.querySelector("[data-testid=learn-status]").textContent,
                stage: document.querySelector("[data-testid=learn-stage]").textContent,
                value: bar.hasAttribute("value") ? bar.value : null,
                max: bar.max,
            });
            new MutationObserver(record).observe(document.getElementById("learn-panel"),
                {childList: true, subtree: true, characterData: true, attributes: true});
        }"""
    )


def teach(http: httpx.Client, question: str, rating: str, correction: str | None = None) -> str:
    """Ask through the API and rate the answer; return the version that answered."""
    answer = http.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]}
    ).json()
    feedback: dict[str, Any] = {"turn_id": answer["turn_id"], "rating": rating}
    if correction is not None:
        feedback["correction"] = correction
    assert http.post("/v1/feedback", json=feedback).status_code == 201
    return str(answer["version"])


def learn(http: httpx.Client) -> dict[str, Any]:
    run = http.post("/v1/learn", json=FAST_LEARN).json()["run"]
    deadline = time.monotonic() + SLOW / 1000
    while time.monotonic() < deadline:
        view: dict[str, Any] = http.get(f"/v1/learn/{run}").json()
        if view["status"] != "running":
            return view
        time.sleep(0.2)
    raise AssertionError(f"run {run} still running")


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
    expect(first.get_by_test_id("feedback-note")).to_contain_text("learned from")

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
