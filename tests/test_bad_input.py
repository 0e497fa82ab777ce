"""Bad input gets one clear line on stderr and a non-zero exit, and changes nothing.

Covers: empty messages, unknown turns, both ratings, empty corrections, generation
settings out of range, an unusable data root, a database from a newer learnloop, a model
path that does not exist, and Ctrl-C or a kill during `learn` (no half-written version
ever becomes active).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.helpers import run_cli, run_json

FAST = ("--max-new-tokens", "4")


def one_line_error(result, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def one_turn(tiny_model_dir: Path) -> dict:
    turn = run_json(tiny_model_dir, "ask", "Hello", *FAST)
    # a correction: the tiny model's own answers are always cut off, so no SFT target
    run_cli(tiny_model_dir, "feedback", str(turn["turn_id"]), "down", "--correction", "Hi!")
    return turn


def snapshot_rows() -> dict[str, list]:
    from learnloop.storage.store import Store

    with Store() as store:
        return {
            table: store.db.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in ("turns", "feedback", "runs", "versions", "activations")
        }


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_message(tiny_model_dir: Path, one_turn: dict, text: str) -> None:
    before = snapshot_rows()
    one_line_error(run_cli(tiny_model_dir, "ask", text), "message is empty")
    assert snapshot_rows() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["999", "up"], "no turn with id 999"),
        (["1", "up", "down"], "exactly one rating"),
        (["1", "down", "--correction", "  "], "correction is empty"),
        (["1", "up", "--correction", "Hello."], "goes with `down`"),
    ],
)
def test_bad_feedback(tiny_model_dir: Path, one_turn: dict, args: list[str], needle: str) -> None:
    before = snapshot_rows()
    one_line_error(run_cli(tiny_model_dir, "feedback", *args), needle)
    assert snapshot_rows() == before


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--max-new-tokens", "0", "--max-new-tokens must be at least 1"),
        ("--temperature", "-0.5", "--temperature must be between 0 and 2"),
        ("--top-p", "1.5", "--top-p must be above 0"),
        ("--repetition-penalty", "0", "--repetition-penalty must be above 0"),
    ],
)
def test_bad_generation_setting(
    tiny_model_dir: Path, one_turn: dict, flag: str, value: str, needle: str
) -> None:
    before = snapshot_rows()
    one_line_error(run_cli(tiny_model_dir, "ask", "Hello", flag, value), needle)
    assert snapshot_rows() == before


def test_unwritable_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LEARNLOOP_HOME", str(blocker / "home"))
    one_line_error(run_cli(None, "status"), "LEARNLOOP_HOME")
    assert blocker.read_text() == "not a folder"


def test_database_from_a_newer_schema_is_refused(home: Path) -> None:
    run_json(None, "status")
    db = duckdb.connect(str(home / "learnloop.duckdb"))
    db.execute("INSERT INTO migrations (number, name) VALUES (42, 'm042_future')")
    db.close()
    before = (home / "learnloop.duckdb").read_bytes()
    one_line_error(run_cli(None, "log"), "schema version 42", "upgrade learnloop")
    assert (home / "learnloop.duckdb").read_bytes() == before


def test_activate_unknown_version_and_rollback_from_base(one_turn: dict) -> None:
    before = snapshot_rows()
    one_line_error(run_cli(None, "activate", "v9"), "no version 'v9'")
    one_line_error(run_cli(None, "rollback"), "nothing to roll back to")
    assert snapshot_rows() == before


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing.gguf", "not a model id"])
def test_model_that_does_not_exist(spec: str) -> None:
    result = run_cli(Path(spec), "ask", "hi")
    one_line_error(result, spec.split("/")[-1])


def start_learn(model: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "learnloop.agent.cli",
            "--model",
            str(model),
            "learn",
            "--max-steps",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background (`cmd &` in a script) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt: a person's Ctrl-C
        # reaches a terminal's foreground process with the default handling.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    progress = Path(os.environ["LEARNLOOP_HOME"]) / "runs" / "run-1" / "progress.jsonl"
    deadline = time.monotonic() + 120
    while '"sft"' not in (progress.read_text() if progress.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"learn did not start training: {proc.communicate()}")
        time.sleep(0.2)
    return proc


def test_ctrl_c_during_learn_records_a_failed_run_and_keeps_the_version(
    tiny_model_dir: Path, one_turn: dict
) -> None:
    proc = start_learn(tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert run_json(tiny_model_dir, "status")["active_version"] == "base"
    assert [v["id"] for v in run_json(tiny_model_dir, "versions")] == ["base"]
    rows = snapshot_rows()["runs"]
    assert [(r[1], r[9]) for r in rows] == [("failed", "interrupted by the user (Ctrl-C)")]


def test_killed_learn_is_recorded_as_failed_on_the_next_cycle(
    tiny_model_dir: Path, one_turn: dict
) -> None:
    proc = start_learn(tiny_model_dir)
    proc.kill()
    proc.wait()
    trainer_log = Path(os.environ["LEARNLOOP_HOME"]) / "runs" / "run-1" / "trainer.stderr"
    deadline = time.monotonic() + 60  # the orphaned trainer notices and stops
    while "is gone" not in trainer_log.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    learned = run_json(tiny_model_dir, "learn", "--max-steps", "1", "--gate", "false")
    assert learned["version"] == "v1" and learned["run_id"] == 2
    runs = snapshot_rows()["runs"]
    assert runs[0][1] == "failed" and "ended before it finished" in runs[0][9]
    assert not (Path(os.environ["LEARNLOOP_HOME"]) / "runs" / "run-1" / "adapter").exists()
    assert run_json(tiny_model_dir, "status")["active_version"] == "v1"
