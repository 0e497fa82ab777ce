"""A trainer child whose parent dies stops within a few seconds, in any stage.

The trainer runs in its own session (Ctrl-C in the chat must not reach it), so when the
cycle that started it is killed nothing else stops it: an orphan would train and judge
for nobody, and overlap the next cycle's trainer. Here a throwaway parent starts a real
trainer child the way the cycle does and is killed while the child loads, trains or
runs the gate (a long one: many control prompts, long greedy answers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_trainer import make_run, sft_rows, tiny_config

GONE_WITHIN = 5.0  # seconds from the parent's death

# Starts the trainer as learning/child.py does (its own session, output to a file, the
# command of learning/processes.py), says the child's pid and waits for it.
PARENT = """
import json, subprocess, sys
from pathlib import Path
from learnloop.learning.processes import trainer_command
run_dir = Path(sys.argv[1])
config = json.loads((run_dir / "request.json").read_text())["config"]
command, env = trainer_command(run_dir, config)
with open(run_dir / "trainer.stderr", "w") as log:
    child = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    print(child.pid, flush=True)
    child.wait()
"""


def slow_gate_run(run_dir: Path, model: Path) -> Path:
    """A run whose gate takes minutes on the tiny model: 200 control prompts answered
    greedily with up to 400 new tokens (the tiny model never stops on its own)."""
    make_run(run_dir, model, sft_rows(4), None, **tiny_config(max_steps=2))
    control = [
        {"prompt": f"Count to {i}.", "answer": "1, 2, 3.", "expect": "3"} for i in range(200)
    ]
    (run_dir / "control.jsonl").write_text("".join(json.dumps(c) + "\n" for c in control))
    request = json.loads((run_dir / "request.json").read_text())
    request["gate"] = {
        "active_version": "base",
        "active_adapter": None,
        "max_new_tokens": 400,
        "pairs": "heldout_pairs.jsonl",
        "fixes": "heldout_fixes.jsonl",
        "control": "control.jsonl",
        "task": "task.jsonl",
        "task_max_new_tokens": 16,
    }
    (run_dir / "request.json").write_text(json.dumps(request))
    return run_dir


def stages(run_dir: Path) -> list[str]:
    path = run_dir / "progress.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["stage"] for line in lines if line.endswith("}")]


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("stage", ["load", "sft", "gate"])
def test_the_trainer_stops_soon_after_its_parent_dies(
    tmp_path: Path, tiny_model_dir: Path, stage: str
) -> None:
    run_dir = slow_gate_run(tmp_path / "run", tiny_model_dir)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: stage in stages(run_dir), 120), stages(run_dir)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        died = time.monotonic()
        assert wait_for(lambda: gone(child), GONE_WITHIN), f"still running in {stages(run_dir)}"
        assert time.monotonic() - died < GONE_WITHIN
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
    assert (
        "the learning cycle that started this trainer is gone"
        in (run_dir / "trainer.stderr").read_text()
    )
    assert "done" not in stages(run_dir)
    assert not (run_dir / "metrics.json").exists()


def test_a_killed_cycle_not_yet_reaped_does_not_block_the_next_one() -> None:
    """Seen: a `learn` killed from a script stayed a zombie until its shell reaped it,
    and the next `learn` said its run "is still running"."""
    import subprocess
    import time

    from learnloop.storage.home import pid_alive

    alive = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(alive.pid)
        alive.kill()
        time.sleep(0.3)  # dead, not waited for: a zombie
        assert not pid_alive(alive.pid)
    finally:
        alive.wait()
    assert not pid_alive(alive.pid)
