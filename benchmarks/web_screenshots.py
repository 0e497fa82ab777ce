"""A screenshot of the chat page, taken in a real browser from a real server.

    python -m benchmarks.web_screenshots --home out/bench-tools-correct/home \\
        --tools ../shared/data/tool_arithmetic/tools.py --out docs/web-tools.png \\
        --ask "Answer the question. Use the calculate tool for arithmetic. What is 4821 + 3977?"

``--home`` is a data root whose active version is worth showing (a bench's ``OUT/home``);
it is copied first, so the questions asked land in the copy. Each ``--ask`` is sent on the
chat page and answered by that version (real generation: the default model unless
``--model``), and the tool steps of the last answer are unfolded before the shot. The
browser is Debian's Chromium (``/usr/bin/chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks.loop_run import log
from benchmarks.serve_kit import start_server

CHROMIUM = "/usr/bin/chromium"
ANSWER_MS = 180_000  # a real answer with a tool call, on a busy 2-core machine
PORT = 8765


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a data root to copy")
    parser.add_argument("--model", default=None, help="the model spec (default: the default)")
    parser.add_argument("--tools", default="", help="the server's --tools spec")
    parser.add_argument("--out", type=Path, default=Path("docs/web-tools.png"), help="the PNG")
    parser.add_argument("--ask", action="append", default=[], help="a message (repeatable)")
    parser.add_argument("--port", type=int, default=PORT, help="the server's loopback port")
    args = parser.parse_args(argv)
    # a turn's time cap well above an answer's time on a machine busy with a benchmark
    flags = ("--turn-seconds", "600", *(("--tools", args.tools) if args.tools else ()))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("runs"))
        server = start_server(home, args.port, args.model, *flags)
        try:
            shoot(f"http://127.0.0.1:{args.port}", args.ask, args.out)
        finally:
            server.terminate()
            server.wait(timeout=60)
    log(f"wrote {args.out}")
    return 0


def shoot(url: str, messages: list[str], out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        for message in messages:
            log(f"asking: {message}")
            page.get_by_test_id("message-input").fill(message)
            page.get_by_test_id("send").click()
            turn = page.get_by_test_id("turn").last
            expect(turn.get_by_test_id("thumb-up")).to_be_enabled(timeout=ANSWER_MS)  # done
        summary = page.get_by_test_id("turn").last.get_by_test_id("steps-summary")
        if messages and summary.count():
            summary.click()
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    raise SystemExit(main())
