"""SFT's step time with TRL's loss against learnloop's (learning/sft_loss.py), side by side,
interleaved, in one process: the same rows (a labelled JSONL task with the bench's
instruction, one-word answers), a fresh LoRA r16 on every linear layer of the same base
for each run, 4 rows a step, 1 epoch at 6e-4, on this machine's CPU (or GPU).

    python -m benchmarks.sft_loss_speed --train ../shared/data/financial_phrasebank/train.jsonl \\
        [--rows 64] [--rounds 2] [--json]

A third variant is learnloop's loss with batches of rows of about the same length
(``--sft-group-by-length``): less padding, the rows in another order. Reported per
variant: seconds per row of each round and their median, and the final loss of each run
(the first two are the same function, so their runs should agree closely).
Give the machine to it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.train_processes import INSTRUCTION, RECIPE, sft_rows
from learnloop.learning import chat_format
from learnloop.learning.models import resolve_model


def one_run(
    trainer_class: Any, base: str, rows: list[Any], out: str, grouped: bool
) -> tuple[float, float]:
    """Seconds per row and the last logged loss of one fresh SFT run (``grouped``: its
    batches of rows of about the same length, --sft-group-by-length)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig

    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=RECIPE["target_modules"].split(","))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora)
    ids = [chat_format.training_ids(tokenizer, r["prompt"], r["completion"], None) for r in rows]
    args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=RECIPE["batch_size"],
        max_length=RECIPE["max_length"],
        learning_rate=RECIPE["sft_learning_rate"],
        num_train_epochs=1,
        completion_only_loss=True,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
        activation_checkpointing=False,
        seed=0,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = trainer_class(
        model=model, args=args, train_dataset=Dataset.from_list(ids), processing_class=tokenizer
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm's: it prints every log
    started = time.perf_counter()
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return (time.perf_counter() - started) / len(rows), float(losses[-1])


def main(argv: list[str] | None = None) -> int:
    from trl import SFTTrainer

    from learnloop.learning.sft_loss import CompletionSFTTrainer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="labelled JSONL (text, label)")
    ap.add_argument("--rows", type=int, default=64, help="SFT rows per run [default: 64]")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each loss, interleaved")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M]")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    base = resolve_model(args.model).path
    rows = sft_rows(args.train, args.rows, INSTRUCTION)
    losses = {
        "TRL SFTTrainer": (SFTTrainer, False),
        "learnloop CompletionSFTTrainer": (CompletionSFTTrainer, False),
        "learnloop, batches grouped by length": (CompletionSFTTrainer, True),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in losses}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for name, (trainer_class, grouped) in losses.items():
                runs[name].append(one_run(trainer_class, base, rows, out, grouped))
                print(f"{name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    results = {
        name: {
            "s_per_row": [round(s, 3) for s, _ in done],
            "median_s_per_row": round(statistics.median(s for s, _ in done), 3),
            "final_loss": [round(loss, 4) for _, loss in done],
        }
        for name, done in runs.items()
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| loss | s per row (runs) | median | final loss (runs) |\n| --- | --- | ---: | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['s_per_row']} | {r['median_s_per_row']} | {r['final_loss']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
