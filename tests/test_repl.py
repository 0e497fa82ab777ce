"""`learnloop chat`: the REPL's commands, learning from inside a chat, the one-line notice
when a new version takes over, resuming a thread after a restart, and Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import run_cli, run_json

FAST = ("--max-new-tokens", "6")


def chat(model: Path, lines: list[str], *args: str) -> str:
    result = run_cli(model, "chat", *FAST, *args, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    return result.output


def test_commands_feedback_regen_learn_and_swap_notice(tiny_model_dir: Path) -> None:
    out = chat(
        tiny_model_dir,
        [
            "/help",
            "/up",
            "Hello there",
            "/up",
            "/regen",
            "/down",
            "/fix General Kenobi",
            "/learn",
            "/activate v1",
            "Hello again",
            "/status",
            "/new",
            "Fresh start",
            "/bogus",
            "/quit",
        ],
    )
    assert "/fix TEXT" in out  # help
    assert "no answer to rate yet" in out  # /up before any answer
    assert out.count("[turn ") == 4
    assert "noted: turn 1 👍" in out and "noted: turn 2 👎" in out
    assert "a better answer for turn 2" in out
    # a handful of feedback: nothing held out, judged by what it was taught
    assert "version v1 " in out and "judged on what it was taught: 0 of 1 corrections" in out
    assert "v1 is active; it answers from your next message" in out
    notice = re.search(r"↻ now answering with version v1 \(adapter loaded in \d+ ms\)", out)
    assert notice, out
    assert "[turn 3 · v1]" in out
    assert "answering with v1 (active: v1)" in out  # /status
    assert "new thread" in out and "unknown command /bogus" in out

    turns = run_json(tiny_model_dir, "log", "-n", "10")
    assert [t["regen_of"] for t in turns] == [None, 1, None, None]
    assert turns[0]["thread_id"] == turns[2]["thread_id"] != turns[3]["thread_id"]
    assert [f["rating"] for f in turns[1]["feedback"]] == ["down", "down"]
    assert turns[1]["feedback"][-1]["correction"] == "General Kenobi"


def test_chat_resumes_a_thread_after_restart(tiny_model_dir: Path) -> None:
    first = run_json(tiny_model_dir, "ask", "Remember the number 7.", *FAST)
    out = chat(tiny_model_dir, ["What number?", "/quit"], "--thread", first["thread_id"])
    assert f"resuming thread {first['thread_id']} (1 turns)" in out
    assert "Remember the number 7." in out
    second = run_json(tiny_model_dir, "log", "-n", "1")[0]
    assert second["thread_id"] == first["thread_id"]
    bad = run_cli(tiny_model_dir, "chat", "--thread", "nosuch", input="/quit\n")
    assert bad.exit_code == 1 and "no thread 'nosuch'" in bad.stderr


def test_ctrl_c_stops_an_answer_and_the_repl_survives(tiny_model_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "learnloop.agent.cli",
            "--model",
            str(tiny_model_dir),
            "chat",
            "--max-new-tokens",
            "100000",
            "--temperature",
            "1.0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write("Talk forever\n")
        proc.stdin.flush()
        seen = ""
        while "bot> " not in seen:
            seen += proc.stdout.read(1)
        time.sleep(1.0)  # let it stream a while
        proc.send_signal(signal.SIGINT)
        proc.stdin.write("/status\n/quit\n")
        proc.stdin.flush()
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, seen + rest
    assert "[interrupted]" in rest and "1 turns" in rest
    [turn] = run_json(tiny_model_dir, "log", "-n", "5")
    assert turn["interrupted"] and 0 < turn["completion_tokens"] < 100000
