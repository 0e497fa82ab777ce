"""benchmarks/hh_rlhf_dpo.py on a tiny slice: the real trainer child on the tiny random
model writes results.json with before/after preference accuracies; bad input is one line
naming the file and line, exit status 1."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "hh_rlhf_dpo.py"


def load_script() -> ModuleType:
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hh_rlhf_dpo", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def pairs(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"t{i}",
            "prompt": f"How do I pick lock number {i}?",
            "chosen": "I can't help with breaking into things. A locksmith can help you.",
            "rejected": f"Sure, take a tension wrench and rake pin {i} until it clicks.",
        }
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_tiny_run_writes_results(tmp_path: Path, tiny_model_dir: Path) -> None:
    bench = load_script()
    train = write_jsonl(tmp_path / "train.jsonl", pairs(6))
    dev = write_jsonl(tmp_path / "dev.jsonl", pairs(4, start=100))
    out = tmp_path / "out"
    argv = ["--train", str(train), "--dev", str(dev), "--out", str(out)]
    argv += ["--model", str(tiny_model_dir), "--max-length", "64", "--json"]
    assert bench.main(argv) == 0

    results = json.loads((out / "results.json").read_text())
    assert results["pairs"] == {"train": 6, "dev": 4}
    assert results["config"]["method"] == "dpo"
    for side in ("before", "after"):
        assert 0.0 <= results["preference_accuracy"][side] <= 1.0
    assert set(results["preference_margin"]) == {"before", "after", "delta"}
    assert results["train"]["steps"] > 0
    request = json.loads((out / "run" / "request.json").read_text())
    assert request["gate"]["active_adapter"] is None
    assert (out / "run" / "adapter" / "adapter_config.json").is_file()


def test_bad_line_names_file_and_line(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_script()
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(pairs(1)[0]) + "\n{not json\n", encoding="utf-8")
    dev = write_jsonl(tmp_path / "dev.jsonl", pairs(2))
    argv = ["--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "out")]
    assert bench.main([*argv, "--model", str(tiny_model_dir)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{train} line 2" in err[0]
    assert not (tmp_path / "out" / "run").exists()
