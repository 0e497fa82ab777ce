"""The training child process, run for real (``python -m learnloop.learning.trainer RUN_DIR``) on a
tiny random-weight model: the LoRA weights change, the base does not, the adapter loads
back, and a bad request fails with one clear line and no adapter folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from learnloop.learning.trainer import NICENESS, session_niceness

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
STEPS = 3


def sft_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [
                {"role": "system", "content": "Answer with one word."},
                {"role": "user", "content": f"Sentiment of 'I loved film number {i}'?"},
            ],
            "completion": [{"role": "assistant", "content": "positive"}],
        }
        for i in range(n)
    ]


def dpo_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [
                {"role": "user", "content": f"Is 'dish {i} was awful' positive or negative?"}
            ],
            "chosen": [{"role": "assistant", "content": "negative"}],
            "rejected": [{"role": "assistant", "content": "It sounds positive to me!"}],
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_run(
    run_dir: Path,
    base_model: Path,
    sft: list[dict[str, Any]] | None,
    dpo: list[dict[str, Any]] | None,
    **config: Any,
) -> Path:
    """A run folder as the learning cycle writes it; ``None`` rows leave the file out."""
    run_dir.mkdir(parents=True)
    request: dict[str, Any] = {"base_model": str(base_model), "config": config}
    for name, rows in (("sft", sft), ("dpo", dpo)):
        request[name] = f"{name}.jsonl"
        if rows is not None:
            write_jsonl(run_dir / f"{name}.jsonl", rows)
    (run_dir / "request.json").write_text(json.dumps(request), encoding="utf-8")
    return run_dir


def run_trainer(run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "learnloop.learning.trainer", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def read_checkpoint(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def tiny_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "lora_r": 4,
        "lora_alpha": 8,
        "target_modules": ",".join(LORA_MODULES),
        "batch_size": 2,
        "max_length": 128,
        "max_steps": STEPS,
        # A large SFT rate moves the policy visibly in 3 steps (see the DPO reference test).
        "sft_learning_rate": 0.05,
        "dpo_learning_rate": 1e-3,
        "seed": 0,
    }
    return config | overrides


@dataclass
class Run:
    run_dir: Path
    result: subprocess.CompletedProcess[str]
    base_before: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "metrics.json").read_text())

    @property
    def progress(self) -> list[dict[str, Any]]:
        lines = (self.run_dir / "progress.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Run:
    """One SFT + DPO run shared by the tests that only read its outputs."""
    base_before = read_checkpoint(tiny_model_dir)
    run_dir = make_run(
        tmp_path_factory.mktemp("full") / "run",
        tiny_model_dir,
        sft_rows(6),
        dpo_rows(6),
        **tiny_config(),
    )
    return Run(run_dir, run_trainer(run_dir), base_before)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_run_trains_the_lora_weights_and_leaves_the_base_untouched(
    full_run: Run, tiny_model_dir: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert full_run.result.returncode == 0, full_run.result.stderr
    assert full_run.result.stderr == ""
    adapter = full_run.run_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "adapter_config.json").is_file()
    assert not (full_run.run_dir / "adapter.tmp").exists()
    assert not (adapter / "ref").exists()  # DPO's frozen reference copy is not saved

    # The checkpoint folder on disk is exactly what it was before training.
    after = read_checkpoint(tiny_model_dir)
    assert after.keys() == full_run.base_before.keys()
    for name, tensor in full_run.base_before.items():
        torch.testing.assert_close(after[name], tensor, rtol=0, atol=0)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base_logits = base(prompt).logits
    model = PeftModel.from_pretrained(base, adapter)
    model.eval()

    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(lora_b) == 2 * len(LORA_MODULES)  # two layers, every target module
    for name, weight in lora_b.items():
        assert weight.abs().max() > 0, f"{name} is still zero: the LoRA weights did not train"

    # Under the adapter, the base weights are the checkpoint's, untouched.
    compared = 0
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace(".base_layer", "")
        if key in full_run.base_before:
            torch.testing.assert_close(param.detach(), full_run.base_before[key], rtol=0, atol=0)
            compared += 1
    assert compared == len(full_run.base_before)

    # And the adapter really changes what the model says.
    with torch.no_grad():
        assert not torch.allclose(model(prompt).logits, base_logits)


def test_run_reports_metrics_and_progress(full_run: Run) -> None:
    assert full_run.result.returncode == 0, full_run.result.stderr
    metrics = full_run.metrics
    for stage, examples in (("sft", 6), ("dpo", 6)):
        section = metrics[stage]
        assert section["examples"] == examples
        assert section["steps"] == STEPS
        assert math.isfinite(section["train_loss"])
        assert len(section["losses"]) == STEPS
        assert all(math.isfinite(loss) for loss in section["losses"])
        assert section["seconds"] > 0
    assert 0.0 <= metrics["dpo"]["rewards/accuracies"] <= 1.0
    assert math.isfinite(metrics["dpo"]["rewards/margins"])
    assert metrics["trainable_params"] > 0
    assert metrics["peak_rss_mb"] > 0
    assert metrics["seconds"] > 0
    # it trained below its parent's CPU priority: a server's answers come first
    assert metrics["niceness"] == min(os.nice(0) + NICENESS, 19)
    # and so did its session's scheduling group, where the kernel schedules by session (a
    # kernel may show /proc/self/autogroup and leave it empty: cgroup scheduling instead)
    if session_niceness() is not None:
        assert metrics["session_niceness"] == NICENESS

    progress = full_run.progress
    assert all(set(line) == {"stage", "step", "total", "loss", "t"} for line in progress)
    stages = [line["stage"] for line in progress]
    assert stages[0] == "load" and stages[-2:] == ["save", "done"]
    assert stages.index("dpo") > max(i for i, s in enumerate(stages) if s == "sft")
    for stage in ("sft", "dpo"):
        lines = [line for line in progress if line["stage"] == stage]
        assert [line["step"] for line in lines] == list(range(STEPS + 1))
        assert all(line["total"] == STEPS for line in lines)
        assert lines[0]["loss"] is None
        assert [line["loss"] for line in lines[1:]] == full_run.metrics[stage]["losses"]
    times = [line["t"] for line in progress]
    assert times == sorted(times)


def test_dpo_reference_is_the_policy_that_sft_left(full_run: Run) -> None:
    """DPO after SFT on the same adapter measures rewards against the SFT'd policy (TRL
    freezes a copy of the adapter), not against the base: at DPO's first step policy and
    reference agree, so its loss is exactly log 2, although SFT did move the policy.
    (With the adapter disabled as reference, this run starts near 0.66 instead.)"""
    sft_losses = full_run.metrics["sft"]["losses"]
    assert sft_losses[-1] < sft_losses[0] - 0.1
    assert full_run.metrics["dpo"]["losses"][0] == pytest.approx(math.log(2), abs=1e-5)


def test_sft_only_run_skips_dpo(tmp_path: Path, tiny_model_dir: Path) -> None:
    run_dir = make_run(
        tmp_path / "run", tiny_model_dir, sft_rows(4), None, **tiny_config(max_steps=2)
    )
    result = run_trainer(run_dir)
    assert result.returncode == 0, result.stderr
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["dpo"] is None
    assert metrics["sft"]["steps"] == 2
    stages = {json.loads(line)["stage"] for line in (run_dir / "progress.jsonl").open()}
    assert stages == {"load", "sft", "save", "done"}


def test_a_handful_of_corrections_is_repeated_to_the_minimum_steps(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Seen: 4 feedback items trained 3 steps (3 epochs of one batch): nothing learned."""
    settings = tiny_config(max_steps=-1, sft_epochs=1.0, sft_min_steps=5)
    for corrections, steps in (([0], 5), ([], 2)):  # liked answers alone: just the epochs
        run_dir = make_run(tmp_path / f"run{steps}", tiny_model_dir, sft_rows(4), None, **settings)
        request = json.loads((run_dir / "request.json").read_text())
        request["sft_corrections"] = corrections
        (run_dir / "request.json").write_text(json.dumps(request))
        result = run_trainer(run_dir)
        assert result.returncode == 0, result.stderr
        assert json.loads((run_dir / "metrics.json").read_text())["sft"]["steps"] == steps


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no rows", "no training rows"),
        ("bad json line", "sft.jsonl line 2: not valid JSON"),
        ("pair without chosen", "dpo.jsonl line 1: 'chosen' must be a non-empty list"),
        ("no request", "no request.json"),
        ("no base checkpoint", "is not a checkpoint folder"),
        ("base without weights", "training failed: OSError"),
    ],
)
def test_bad_request_fails_with_one_line_and_no_adapter(
    tmp_path: Path, tiny_model_dir: Path, case: str, expected: str
) -> None:
    run_dir = make_run(tmp_path / "run", tiny_model_dir, [], None, **tiny_config())
    if case == "bad json line":
        good = json.dumps(sft_rows(1)[0])
        (run_dir / "sft.jsonl").write_text(good + "\n" + good[:-5] + "\n" + good + "\n")
    elif case == "pair without chosen":
        row = dpo_rows(1)[0]
        del row["chosen"]
        write_jsonl(run_dir / "dpo.jsonl", [row])
    elif case == "no request":
        (run_dir / "request.json").unlink()
    elif case == "no base checkpoint":
        (run_dir / "request.json").write_text(json.dumps({"base_model": str(tmp_path)}))
    elif case == "base without weights":
        # Passes the up-front checks, fails inside the libraries: still one line.
        write_jsonl(run_dir / "sft.jsonl", sft_rows(1))
        base = tmp_path / "no-weights"
        base.mkdir()
        shutil.copy(tiny_model_dir / "config.json", base)
        request = json.loads((run_dir / "request.json").read_text())
        (run_dir / "request.json").write_text(json.dumps(request | {"base_model": str(base)}))

    result = run_trainer(run_dir)

    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("learnloop trainer: ")
    assert expected in lines[0]
    assert not (run_dir / "adapter").exists()
    assert not (run_dir / "metrics.json").exists()
