"""Export learnloop's feedback as TRL datasets, then train on it with TRL outside learnloop.

Step 1 is what `learnloop export --out DIR` does, from Python: the latest learning run's
snapshot (or, before any run, the current feedback) is written as TRL conversational
JSONL files plus a manifest (``learnloop.learning.export``). Step 2 is plain Hugging
Face code, no learnloop in it: ``sft.jsonl`` loads with ``datasets``, TRL's
``SFTTrainer`` trains a small LoRA adapter on the base model for a few steps, and the
adapter is saved; the loss on those rows is measured before and after.

    learnloop chat                                   # give some 👍 or corrections first
    python examples/export_then_trl.py --out my-export
    python examples/export_then_trl.py --out my-export --model DIR --max-steps 3

The data comes from $LEARNLOOP_HOME (default ~/.learnloop); ``--out`` must be a new or
empty folder: it receives ``data/`` (the export) and ``adapter/`` (the trained LoRA).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from learnloop.agent.service import open_local
from learnloop.learning.export import Export, check_out_dir, write_export
from learnloop.learning.models import resolve_model
from learnloop.storage.errors import LearnloopError


def export(out_dir: Path, run_id: int | None) -> dict[str, Any]:
    with closing(open_local()) as service:  # reading the store needs no model
        data = service.export_data(run_id, current=False)
    manifest = write_export(Export(**data), out_dir, "jsonl")
    print(f"exported {manifest['source']} into {out_dir}:")
    for f in manifest["files"]:
        print(f"  {f['file']:22} {f['rows']:4} rows  for {f['trainer']} ({f['split']})")
    return manifest


def train(model_dir: str, sft_file: Path, out_dir: Path, args: Any) -> None:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = load_dataset("json", data_files=str(sft_file), split="train")
    cuda = torch.cuda.is_available()
    config = SFTConfig(
        output_dir=str(out_dir / "trainer"),
        max_steps=args.max_steps,
        per_device_train_batch_size=2,
        learning_rate=args.learning_rate,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=cuda,  # TRL defaults to bf16, which is slow on a CPU
        dataloader_pin_memory=cuda,
        activation_checkpointing=False,  # a small LoRA run does not need to save memory
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=config,
        train_dataset=rows,
        eval_dataset=rows,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=LoraConfig(r=args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    print(f"loss on the {len(rows)} SFT rows: {before:.3f} before, {after:.3f} after training")
    trainer.save_model(str(out_dir / "adapter"))
    saved = ", ".join(sorted(p.name for p in (out_dir / "adapter").iterdir()))
    print(f"LoRA adapter saved in {out_dir / 'adapter'}: {saved}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    parser.add_argument("--run", type=int, default=None, help="export run N's snapshot")
    parser.add_argument("--model", help="model id, checkpoint folder or .gguf (default SmolLM2)")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        check_out_dir(args.out, force=False)  # before anything is read or written
        manifest = export(args.out / "data", args.run)
        if not any(f["file"] == "sft.jsonl" for f in manifest["files"]):
            print("error: no SFT rows (no 👍 or corrections yet) to train on", file=sys.stderr)
            return 1
        train(resolve_model(args.model).path, args.out / "data" / "sft.jsonl", args.out, args)
    except (LearnloopError, ValueError) as exc:  # bad input: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
