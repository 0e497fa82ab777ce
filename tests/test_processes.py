"""The trainer child on two processes (learn setting ``processes``): ``accelerate launch``
of two real processes training over gloo on the CPU, started the way a cycle starts the
trainer (learning/child.py). The run gives what one process gives: the same request, the
same outputs, the same steps and, on batches that do not depend on the order, the same
adapter; rank 0 alone writes progress and runs the gate; the metrics count both
processes; a failure is one line; a killed cycle leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from learnloop.learning.child import CycleFailed, train_in_child
from learnloop.storage.errors import UsageError
from tests.test_orphan_trainer import PARENT, gone, stages, wait_for
from tests.test_trainer import make_run, tiny_config, write_jsonl

GATE = {
    "active_version": "base",
    "active_adapter": None,
    "max_new_tokens": 8,
    "pairs": "heldout_pairs.jsonl",
    "fixes": "heldout_fixes.jsonl",
    "control": "control.jsonl",
    "task": "task.jsonl",
    "task_max_new_tokens": 8,
}


def same_rows(n: int) -> list[dict[str, Any]]:
    """``n`` copies of one row: every batch is the same whatever the order, so one process
    and two must take the same steps."""
    row = {
        "prompt": [{"role": "user", "content": "Sentiment of 'profits rose sharply'?"}],
        "completion": [{"role": "assistant", "content": "positive"}],
    }
    return [row] * n


def gated_run(run_dir: Path, model: Path, **config: Any) -> Path:
    settings = tiny_config(**({"max_steps": -1, "sft_epochs": 1.0, "lora_dropout": 0.0} | config))
    make_run(run_dir, model, same_rows(8), None, **settings)
    control = [{"prompt": "Say hi.", "answer": "hi", "expect": "hi"}] * 2
    write_jsonl(run_dir / "control.jsonl", control)
    request = json.loads((run_dir / "request.json").read_text())
    request["gate"] = GATE
    (run_dir / "request.json").write_text(json.dumps(request))
    return run_dir


def adapter_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[int, Path]:
    """The same gated SFT run on one process and on two."""
    folder = tmp_path_factory.mktemp("processes")
    out = {}
    for n in (1, 2):
        run_dir = gated_run(folder / f"p{n}", tiny_model_dir, processes=n)
        train_in_child(run_dir)
        out[n] = run_dir
    return out


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_processes_train_the_adapter_one_process_trains(runs: dict[int, Path]) -> None:
    import torch

    one, two = metrics(runs[1]), metrics(runs[2])
    assert (one["processes"], two["processes"]) == (1, 2)
    # A step holds batch_size (2) examples in all: 8 rows are 4 steps either way.
    assert one["sft"]["steps"] == two["sft"]["steps"] == 4
    assert one["sft"]["losses"] == pytest.approx(two["sft"]["losses"], rel=1e-4)
    mine, theirs = adapter_weights(runs[2]), adapter_weights(runs[1])
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert torch.allclose(tensor, theirs[name], rtol=1e-3, atol=1e-6), name
    assert any(float(t.abs().max()) > 0 for n, t in mine.items() if "lora_B" in n)


def test_rank_zero_alone_reports_and_gates(runs: dict[int, Path]) -> None:
    lines = [json.loads(line) for line in (runs[2] / "progress.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if line["stage"] == "sft"]
    assert steps == [0, 1, 2, 3, 4], "one writer: each step once"
    assert [line["stage"] for line in lines].count("done") == 1
    gate = json.loads((runs[2] / "gate.json").read_text())
    assert gate.keys() == json.loads((runs[1] / "gate.json").read_text()).keys()


def test_the_metrics_count_both_processes(runs: dict[int, Path]) -> None:
    one, two = metrics(runs[1]), metrics(runs[2])
    # The second process holds torch, the libraries and a model too: hundreds of MB.
    assert two["peak_rss_mb"] > one["peak_rss_mb"] + 200
    assert two["cpu_seconds"] > one["cpu_seconds"]
    assert two["energy_wh"] == pytest.approx(two["cpu_seconds"] * 4.0 / 3600, abs=1e-3)


def test_a_failure_on_two_processes_is_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    # target modules the model lacks: each process fails in PEFT; the launcher's report
    # follows their lines in the log, the cycle's message is the trainer's line.
    run_dir = gated_run(tmp_path / "run", tiny_model_dir, processes=2, target_modules="nope")
    with pytest.raises(CycleFailed) as failed:
        train_in_child(run_dir)
    message = str(failed.value)
    assert message.startswith("training failed (exit 1): learnloop trainer: training failed:")
    assert "nope" in message and "\n" not in message
    assert not (run_dir / "adapter").exists()


def test_a_missing_accelerate_config_is_refused_before_anything_starts(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    run_dir = gated_run(tmp_path / "run", tiny_model_dir, accelerate_config="/nowhere/acc.yaml")
    with pytest.raises(UsageError, match="accelerate_config: no file /nowhere/acc.yaml"):
        train_in_child(run_dir)
    assert not (run_dir / "trainer.stderr").exists()


def processes_of(run_dir: Path) -> list[int]:
    """The live processes whose command line names ``run_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(run_dir) in command and not gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_killed_cycle_stops_every_training_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = gated_run(tmp_path / "run", tiny_model_dir, processes=2, max_steps=100000)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    launcher = int(parent.stdout.readline())
    try:
        assert wait_for(lambda: "sft" in stages(run_dir), 180), stages(run_dir)
        started = set(processes_of(run_dir)) - {parent.pid}
        assert len(started) == 3 and launcher in started, "the launcher and its two processes"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # (A process on its way out shows an empty command line before it is a zombie.)
        assert wait_for(lambda: gone(launcher) and not processes_of(run_dir), 15)
    finally:
        for pid in processes_of(run_dir):
            os.kill(pid, signal.SIGKILL)
    assert (
        "the learning cycle that started this trainer is gone"
        in (run_dir / "trainer.stderr").read_text()
    )
    assert not (run_dir / "metrics.json").exists()
