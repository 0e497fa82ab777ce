"""benchmarks/lora_sweep.py on the tiny model: one bench-like data root with a learning
run, a grid of two LoRA ranks, each point trained by the real trainer child on that run's
feedback and scored on an eval file; the source data root is left as it was. With
``--start active`` a point is the continual step its run took, from the same adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.lora_sweep import main
from learnloop.storage.home import data_root
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli

TEXTS = {"Profits rose sharply.": "positive", "The firm went bankrupt.": "negative"}


def test_each_point_trains_its_own_settings_on_the_runs_feedback(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    with Store() as store:
        for n, (text, label) in enumerate(TEXTS.items()):
            turn = store.add_turn(make_log(text, "no idea", thread_id=f"t{n}"))
            store.add_feedback(turn, "down", correction=label)
    settings = ["--eval-instruction", "Say positive or negative.", "--eval-labels"]
    learn = ["learn", "--max-steps", "1", "--gate", "false", *settings, "positive,negative"]
    assert run_cli(tiny_model_dir, *learn).exit_code == 0
    source = (data_root() / "learnloop.duckdb").read_bytes()
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"text": t, "label": x}) + "\n" for t, x in TEXTS.items()))
    out = tmp_path / "sweep"
    argv = ["--home", str(data_root()), "--run", "1", "--eval", str(dev), "--out", str(out)]
    assert main([*argv, "--grid", "lora_r=2,4", "--model", str(tiny_model_dir)]) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["feedback"] == 2 and results["eval_rows"] == 2
    assert [p["settings"] for p in results["points"]] == [{"lora_r": 2}, {"lora_r": 4}]
    for n, point in enumerate(results["points"], start=1):
        assert point["sft_rows"] == 2 and point["answers"] == 2
        assert 0.0 <= point["accuracy"] <= 1.0 and point["train_seconds"] > 0
        adapter = json.loads((out / f"point-{n}" / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == point["settings"]["lora_r"]
    assert (data_root() / "learnloop.duckdb").read_bytes() == source  # only read


def test_a_bad_grid_is_one_line_before_anything_trains(tmp_path: Path) -> None:
    argv = ["--home", str(tmp_path), "--run", "1", "--eval", "x", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="'lora_r=big': 'big' is not a int"):
        main([*argv, "--grid", "lora_r=big"])
    assert not (tmp_path / "o").exists()


def test_a_continual_step_is_swept_from_the_adapter_its_run_started_from(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = ["--eval-instruction", "Say positive or negative.", "--eval-labels"]
    learn = ["learn", "--max-steps", "2", "--gate", "false", *settings, "positive,negative"]
    learn += ["--sft-learning-rate", "1e-2", "--method", "sft"]
    for n, (text, label) in enumerate(TEXTS.items()):  # one text for v1, one for v2
        with Store() as store:
            turn = store.add_turn(make_log(text, "no idea", thread_id=f"t{n}"))
            store.add_feedback(turn, "down", correction=label)
        assert run_cli(tiny_model_dir, *learn, "--start", "active", "--replay", "0").exit_code == 0
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"text": t, "label": x}) + "\n" for t, x in TEXTS.items()))
    argv = ["--home", str(data_root()), "--eval", str(dev), "--model", str(tiny_model_dir)]
    argv += ["--start", "active", "--grid", "sft_continue_learning_rate=1e-12"]
    with pytest.raises(SystemExit, match="run 1 trained a fresh adapter"):
        main([*argv, "--run", "1", "--out", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "sweep"
    assert main([*argv, "--run", "2", "--out", str(out)]) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["start"]["version"] == "v1" and results["start"]["answers"] == 2
    (point,) = results["points"]
    assert point["sft_rows"] == 1  # the row new since v1, no replay: as run 2 trained
    with Store() as store:
        v1 = Path(store.get_version("v1").adapter_path)
    start, swept = (
        load_file(str(folder / "adapter_model.safetensors"))
        for folder in (v1, out / "point-1" / "adapter")
    )
    for key, weights in start.items():  # it began as v1 and, at that rate, stayed v1
        torch.testing.assert_close(swept[key], weights, rtol=0, atol=1e-6)
