"""Automatic learning: the trigger's rule, a cycle started in the background by feedback,
one cycle at a time, and a running cycle's progress in `learnloop status`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from learnloop.learning.triggers import TriggerConfig, background_log, is_due
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json

NOW = datetime(2026, 11, 27, 12, 0)


class TestIsDue:
    def test_enough_new_feedback_and_time_starts_a_cycle(self) -> None:
        due = is_due(TriggerConfig(learn_after=3), 3, NOW - timedelta(minutes=11), None, NOW)
        assert due.due and due.reason == "3 new feedback items"
        assert is_due(TriggerConfig(learn_after=3), 3, None, None, NOW).due  # never learned

    def test_too_little_feedback_too_soon_a_running_cycle_or_off_do_not(self) -> None:
        config = TriggerConfig(learn_after=3, learn_every_minutes=10)
        assert is_due(config, 2, None, None, NOW).reason == "2 of 3 new feedback items"
        soon = is_due(config, 5, NOW - timedelta(minutes=4), None, NOW)
        assert not soon.due and "6.0 to go" in soon.reason
        assert is_due(config, 5, None, 7, NOW).reason == "learning run 7 is running"
        off = is_due(TriggerConfig(auto_learn=False), 99, None, None, NOW)
        assert not off.due and "--auto-learn false" in off.reason

    def test_bad_settings_are_refused(self) -> None:
        with pytest.raises(ValueError, match="--learn-after"):
            TriggerConfig(learn_after=0)
        result = run_cli(None, "feedback", "1", "up", "--learn-every-minutes", "-1")
        assert result.exit_code == 1 and "--learn-every-minutes must be 0 or more" in result.stderr


def add_turns(count: int) -> list[int]:
    with Store() as store:
        ids = []
        for n in range(count):
            store.create_thread(f"t{n}")
            ids.append(
                store.add_turn(make_log(f"What is {n} + {n}?", "No idea.", thread_id=f"t{n}"))
            )
        return ids


def wait_for_runs_to_end(timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store() as store:
            runs = store.runs()
        if runs and all(r.status != "running" for r in runs):
            return
        time.sleep(0.5)
    raise AssertionError(f"no finished run after {timeout} s: {background_log().read_text()}")


def test_feedback_starts_one_background_cycle_when_enough_waits(tiny_model_dir: Path) -> None:
    first, second, third = add_turns(3)
    fast = ("--learn-after", "2", "--learn-every-minutes", "0")
    one = run_json(tiny_model_dir, "feedback", str(first), "up", *fast)
    assert one["learning_started"] is None  # 1 of 2
    out = run_cli(tiny_model_dir, "feedback", str(second), "down", "--correction", "2", *fast)
    assert out.exit_code == 0 and "learning started in the background (2 new feedback" in out.output
    # The cycle is recorded as running at once or within a few seconds; meanwhile more
    # feedback never starts a second one.
    third_fb = run_json(tiny_model_dir, "feedback", str(third), "down", "--correction", "0", *fast)
    wait_for_runs_to_end()
    with Store() as store:
        runs = store.runs()
        versions = store.versions()
    assert len(runs) == 1 or third_fb["learning_started"] is None
    assert runs[0].status == "succeeded" and versions[0].id == "v1"
    assert versions[0].run_id == runs[0].id
    assert "run 1: v1" in background_log().read_text()


def test_status_shows_a_running_cycles_stage_step_and_loss(
    home: Path, tiny_model_dir: Path
) -> None:
    with Store() as store:
        run_id = store.start_run("sft", {}, "", os.getpid())  # alive: this process
        run_dir = home / "runs" / f"run-{run_id}"
        run_dir.mkdir(parents=True)
        store.set_run_dir(run_id, str(run_dir))
    progress = [
        {"stage": "load", "step": 0, "total": 0, "loss": None, "t": 1.0},
        {"stage": "sft", "step": 3, "total": 10, "loss": 0.5, "t": 2.0},
    ]
    (run_dir / "progress.jsonl").write_text("".join(json.dumps(p) + "\n" for p in progress))
    status = run_json(None, "status")
    assert status["learning"] == {"run": run_id, **progress[-1]}
    assert "learning: run 1 · sft step 3/10 · loss 0.500" in run_cli(None, "status").output
    # One cycle at a time: learning on demand says which one is running.
    add_turns(1)
    second = run_cli(tiny_model_dir, "learn")
    assert second.exit_code == 1 and f"learning run {run_id} is still running" in second.stderr


def test_status_after_the_cycles_process_died_says_idle(home: Path) -> None:
    with Store() as store:
        store.start_run("sft", {}, "", 2**22 + 12345)  # no such process
    status = run_json(None, "status")
    assert status["learning"] is None and status["running_run"] is None


def test_a_chat_starts_a_background_cycle_keeps_going_and_says_how_it_ended(
    tiny_model_dir: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "learnloop.agent.cli", "--model", str(tiny_model_dir), "chat",
         "--max-new-tokens", "4", "--learn-after", "2", "--learn-every-minutes", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write("Hello\n/up\n/fix Hello to you\nStill there?\n")
        proc.stdin.flush()
        wait_for_runs_to_end()  # the chat answered meanwhile: it never waits for learning
        proc.stdin.write("/status\n/quit\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    started = out.index("learning started in the background (2 new feedback items)")
    assert out.index("[turn 2 · base]") > started  # answered while the cycle ran
    assert re.search(r"background learning run 1: v1 (promoted|not promoted)", out), out
