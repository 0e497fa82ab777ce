"""The trainer child on 1, 2, ... processes, side by side, in one run: the same SFT request
(``--rows`` rows of a labelled JSONL task, the bench's recipe: LoRA r16 on every linear
layer, 1 epoch at 6e-4, 4 rows a step) trained by ``python -m`` (1) and by ``accelerate
launch`` (more: learning/processes.py), each through ``train_in_child`` as a cycle runs it,
one after another, never two at once. On a CUDA machine the trainer uses the GPU (bf16);
``--accelerate-config`` launches every count with that file.

    python -m benchmarks.train_processes --train ../shared/data/financial_phrasebank/train.jsonl \\
        --out /tmp/train-processes [--rows 64] [--processes 1 2] [--json]

Reported per count: steps, training seconds (the SFT stage), seconds per row, the final
loss, CPU-seconds and peak memory of all processes together. Give the machine to it alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from learnloop.learning.child import train_in_child
from learnloop.learning.config import LearnConfig
from learnloop.learning.models import resolve_model
from learnloop.learning.tasks import task_message

INSTRUCTION = (
    "Classify the sentiment of this financial news sentence as positive, negative or "
    "neutral. Answer with one word."
)
RECIPE: dict[str, Any] = {
    "sft_epochs": 1.0,
    "sft_learning_rate": 6e-4,
    "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "max_length": 256,
    "batch_size": 4,
    "gate": False,
}


def sft_rows(train: Path, n: int, instruction: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in train.read_text().splitlines() if line.strip()][:n]
    return [
        {
            "prompt": [{"role": "user", "content": task_message(instruction, row["text"])}],
            "completion": [{"role": "assistant", "content": row["label"]}],
        }
        for row in rows
    ]


def run_once(out: Path, base: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> Any:
    """One trainer child on a fresh run folder; its metrics.json."""
    run_dir = out / f"processes-{settings['processes']}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = LearnConfig(**{**RECIPE, **settings}).to_dict()
    request = {"base_model": base, "config": config, "sft": "sft.jsonl", "gate": None}
    (run_dir / "request.json").write_text(json.dumps(request))
    return train_in_child(run_dir)


def figures(metrics: dict[str, Any]) -> dict[str, Any]:
    sft = metrics["sft"]
    return {
        "processes": metrics["processes"],
        "rows": sft["examples"],
        "steps": sft["steps"],
        "train_s": sft["seconds"],
        "s_per_row": round(sft["seconds"] / sft["examples"], 3),
        "final_loss": sft["losses"][-1] if sft["losses"] else None,
        "cpu_seconds": metrics["cpu_seconds"],
        "peak_rss_mb": metrics["peak_rss_mb"],
    }


def table(results: list[dict[str, Any]]) -> str:
    keys = list(results[0]) if results else []
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="labelled JSONL (text, label)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the run folders")
    ap.add_argument("--instruction", default=INSTRUCTION, help="put before each text")
    ap.add_argument("--rows", type=int, default=64, help="SFT rows [default: 64]")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="counts to run")
    ap.add_argument("--accelerate-config", default="", help="an accelerate config file")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M]")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    base = resolve_model(args.model).path
    rows = sft_rows(args.train, args.rows, args.instruction)
    results = []
    for n in args.processes:
        settings = {"processes": n, "accelerate_config": args.accelerate_config}
        results.append(figures(run_once(args.out, base, rows, settings)))
        print(f"{n} process(es): {results[-1]}", file=sys.stderr, flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
