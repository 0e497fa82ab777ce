"""The web page's test kit: the system's headless Chromium driven by Playwright, a real
``learnloop serve`` process over the tiny model and the test's own data root, and what a
person does on the page (send, watch the answers and the learning, teach).

The browser is the system's (``/usr/bin/chromium``, from Debian's ``chromium`` package);
Playwright never downloads one here. Test modules import the fixtures they use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.serving import serve_process
from tests.test_compare import wait_for

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


LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 700}


@contextmanager
def open_page(browser: Browser, url: str, viewport: ViewportSize = LAPTOP) -> Iterator[Page]:
    """The page in a fresh browser context (its own localStorage), ready to use."""
    context = browser.new_context(viewport=viewport)
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
    return wait_for(http, run, SLOW / 1000)
