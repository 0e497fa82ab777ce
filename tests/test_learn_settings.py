"""Every learn setting is checked before a run starts, in one line naming the setting.

The same settings come from `learnloop learn` flags and from a `POST /v1/learn` body, so
the line names the setting (``max_length``), not a flag. Each case here has feedback
that a cycle could train on: without the check, a run would be recorded and would fail
in the trainer, or train nothing useful. With it, `learn` exits 1 and records nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result

from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli
from tests.test_trainer import make_run, sft_rows, tiny_config


@pytest.fixture(autouse=True)
def thumbs_up(home: Path) -> None:
    """One thumbs-up answer: SFT data, but no DPO pair."""
    with Store() as store:
        turn = store.add_turn(make_log("What is the capital of Italy?", "Rome."))
        store.add_feedback(turn, "up")


def refused(result: Result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
    with Store() as store:
        assert store.runs() == []
    return lines[0]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-length", "-1", "max_length must be at least 1, not -1"),
        ("--gate-max-new-tokens", "-1", "gate_max_new_tokens must be at least 1"),
        ("--sft-epochs", "-1", "sft_epochs must be above 0"),
        ("--dpo-epochs", "0", "dpo_epochs must be above 0"),
        ("--max-steps", "0", "max_steps must be -1 or at least 1, not 0"),
        ("--batch-size", "0", "batch_size must be at least 1"),
        ("--lora-r", "0", "lora_r must be at least 1"),
        ("--lora-dropout", "1", "lora_dropout must be at least 0 and below 1"),
        ("--sft-learning-rate", "1e30", "sft_learning_rate must be above 0 and at most 1"),
        ("--dpo-beta", "nan", "dpo_beta must be a finite number"),
        ("--seed", "-1", "seed must be at least 0"),
        ("--eval-limit", "0", "eval_limit must be at least 1"),
        ("--held-out-share", "1.5", "held_out_share must be at least 0 and below 1"),
        ("--target-modules", " , ", "target_modules must name at least one module"),
        ("--method", "rlhf", "method must be one of auto, sft, dpo, kto"),
        ("--gate-metric", "task_accuracy", "gate_metric task_accuracy needs an eval_file"),
    ],
)
def test_a_setting_out_of_bounds_is_refused_by_name(
    tiny_model_dir: Path, flag: str, value: str, message: str
) -> None:
    line = refused(run_cli(tiny_model_dir, "learn", flag, value), message)
    assert flag not in line  # the API sends the same setting: name it, not the flag


def unusable_eval_file(kind: str, tmp_path: Path) -> Path:
    if kind == "missing":
        return tmp_path / "nowhere.jsonl"
    if kind == "a folder":
        return tmp_path
    if kind == "a device":
        return Path("/dev/zero")
    path = tmp_path / "tasks.jsonl"
    if kind == "not JSONL":
        path.write_text("text,label\nProfit rose.,positive\n")
    elif kind == "one endless line":
        path.write_bytes(b"\0" * 1_100_000)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such file"),
        ("a folder", "is a folder"),
        ("a device", "is not a regular file"),
        ("not JSONL", "line 1: not valid JSON"),
        ("one endless line", "a line is longer than"),
    ],
)
def test_an_unusable_eval_file_is_refused_before_a_run(
    tiny_model_dir: Path, tmp_path: Path, kind: str, message: str
) -> None:
    path = unusable_eval_file(kind, tmp_path)
    refused(run_cli(tiny_model_dir, "learn", "--eval-file", str(path)), str(path), message)


def test_dpo_without_pairs_is_refused_before_a_run(tiny_model_dir: Path) -> None:
    refused(run_cli(tiny_model_dir, "learn", "--method", "dpo"), "no DPO data")


def test_a_request_with_a_setting_out_of_bounds_fails_in_the_trainer_at_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The trainer child checks its request.json the same way (exit 2, one line)."""
    run_dir = make_run(tmp_path / "run", tiny_model_dir, sft_rows(1), None, **tiny_config())
    request = json.loads((run_dir / "request.json").read_text())
    request["config"]["max_length"] = -1
    (run_dir / "request.json").write_text(json.dumps(request))
    result = subprocess.run(
        [sys.executable, "-m", "learnloop.learning.trainer", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "learnloop trainer: request.json config: max_length must be at least 1, not -1"
    ]
    assert not (run_dir / "progress.jsonl").exists()  # stopped before loading anything
