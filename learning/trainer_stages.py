"""The training stages of the trainer child (learning/trainer.py): SFT, DPO and KTO, each
a TRL trainer set up from the cycle's LearnConfig and run with the child's progress lines.

Invariants: every stage trains the PeftModel it is given in place (SFT, then DPO or KTO on
the same model); DPO and KTO train against a frozen copy of the adapter as the stage
starts, dropped afterwards, so only the trained ``default`` adapter remains (the reason is
in learning/trainer.py's docstring).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learnloop.learning import chat_format, processes
from learnloop.learning.config import LearnConfig
from learnloop.learning.request import Row
from learnloop.learning.trainer_output import Progress, finite, progress_callback

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase, Trainer

OUTPUT_DIR = "trl-output"
DPO_FINAL_KEYS = ("rewards/accuracies", "rewards/margins")


def common_args(config: LearnConfig, run_dir: Path, stage: str) -> dict[str, Any]:
    """TrainingArguments shared by both stages."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(run_dir / OUTPUT_DIR / stage),
        "per_device_train_batch_size": processes.per_device_batch(config.batch_size),
        "max_length": config.max_length,
        "max_steps": config.max_steps if config.max_steps > 0 else -1,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": not cuda,
        # TRL configs default bf16 to True (CPU autocast included) and gradient
        # checkpointing to True: both only slow a small LoRA run down on a CPU.
        # (transformers 5 renamed gradient_checkpointing to activation_checkpointing.)
        "bf16": cuda,
        "activation_checkpointing": False,
        "dataloader_pin_memory": cuda,
    }


def train_sft(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    corrections: list[int],
    config: LearnConfig,
    run_dir: Path,
    progress: Progress,
    continuing: bool,
) -> dict[str, Any]:
    """SFT on ``rows``; ``continuing``: the model's adapter is a trained one (the active
    version's), which trains at ``sft_continue_learning_rate`` when that is set."""
    trainer = sft_trainer(model, tokenizer, rows, corrections, config, run_dir, continuing)
    return fit(trainer, "sft", len(rows), progress)


def sft_trainer(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    corrections: list[int],
    config: LearnConfig,
    run_dir: Path,
    continuing: bool,
) -> Trainer:
    """The SFT stage's trainer (learning/sft_loss.py's loss), set up as ``config`` says."""
    from datasets import Dataset
    from trl import SFTConfig

    from learnloop.learning.sft_loss import CompletionSFTTrainer

    rate = config.sft_continue_learning_rate if continuing else 0.0
    args = SFTConfig(
        **common_args(config, run_dir, "sft"),
        learning_rate=rate or config.sft_learning_rate,
        num_train_epochs=config.sft_epochs,
        completion_only_loss=True,
        train_sampling_strategy="group_by_length" if config.sft_group_by_length else "random",
    )
    tokenized = [
        chat_format.training_ids(tokenizer, row["prompt"], row["completion"], row.get("tools"))
        for row in with_corrections_repeated(rows, corrections, config)
    ]
    return CompletionSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(tokenized),  # tokenized: TRL builds the labels
        processing_class=tokenizer,
    )


def as_template_rows(tokenizer: PreTrainedTokenizerBase, rows: list[Row]) -> list[Row]:
    """Preference rows whose messages the chat template renders as they are: for a
    template without tools, every trajectory's calls and results as text and the tools
    in the system prompt (learning/chat_format.py), so that TRL's DPO and KTO trainers
    tokenize what the model is prompted with. Their loss covers a whole completion, tool
    results included: TRL marks no assistant steps in preference rows."""
    native = chat_format.knows_tools(tokenizer)
    out = []
    for row in rows:
        tools = row.get("tools")
        new = {
            k: chat_format.template_messages(v, None, native) if isinstance(v, list) else v
            for k, v in row.items()
            if k != "tools"
        }
        new["prompt"] = chat_format.template_messages(row["prompt"], tools, native)
        if native and tools:
            new["tools"] = tools
        out.append(new)
    return out


def with_corrections_repeated(
    rows: list[Row], corrections: list[int], config: LearnConfig
) -> list[Row]:
    """``rows``, plus copies of the correction rows (``corrections``: their indices) when
    the epochs would take fewer than ``sft_min_steps`` steps (and no --max-steps caps
    them): a handful of feedback then still teaches its corrections. Only corrections
    are repeated: measured on the walkthrough, going over the liked answers (the model's
    own words) that often drove the control answers' log-prob per token from -1.16 to
    -2.62 and the gate rejected the version."""
    per_epoch = math.ceil(config.sft_min_steps / config.sft_epochs) * config.batch_size
    if config.max_steps > 0 or not corrections or len(rows) >= per_epoch:
        return rows
    fixes = [rows[i] for i in corrections]
    return rows + [fixes[k % len(fixes)] for k in range(per_epoch - len(rows))]


def train_dpo(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: LearnConfig,
    run_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        **common_args(config, run_dir, "dpo"),
        learning_rate=config.dpo_learning_rate,
        num_train_epochs=config.dpo_epochs,
        beta=config.dpo_beta,
    )
    trainer = preference_trainer(DPOTrainer, args, model, tokenizer, rows)
    metrics = fit_against_reference(model, trainer, "dpo", len(rows), progress)
    last = next((log for log in reversed(trainer.state.log_history) if "loss" in log), {})
    for key in DPO_FINAL_KEYS:
        if key in last:
            metrics[key] = finite(last[key])
    return metrics


def train_kto(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
    config: LearnConfig,
    run_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    from trl import KTOConfig, KTOTrainer

    desirable = sum(1 for r in rows if r["label"])
    undesirable = len(rows) - desirable
    # Weigh the two sides so that their total contributions are about equal (TRL's advice
    # for imbalanced feedback), within the range TRL considers sane.
    weight = min(4.0, max(0.25, undesirable / desirable)) if desirable and undesirable else 1.0
    args = KTOConfig(
        **common_args(config, run_dir, "kto"),
        learning_rate=config.kto_learning_rate,
        num_train_epochs=config.kto_epochs,
        beta=config.kto_beta,
        desirable_weight=weight,
        undesirable_weight=1.0,
    )
    trainer = preference_trainer(KTOTrainer, args, model, tokenizer, rows)
    metrics = fit_against_reference(model, trainer, "kto", len(rows), progress)
    metrics.update(desirable=desirable, undesirable=undesirable, desirable_weight=weight)
    return metrics


def preference_trainer(
    trainer_class: type[Trainer],
    args: Any,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[Row],
) -> Trainer:
    """A DPO or KTO trainer of ``model`` on ``rows`` rendered as the chat template does."""
    from datasets import Dataset

    return trainer_class(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(as_template_rows(tokenizer, rows)),
        processing_class=tokenizer,
    )


def fit_against_reference(
    model: PeftModel, trainer: Trainer, stage: str, examples: int, progress: Progress
) -> dict[str, Any]:
    """Train a DPO / KTO stage. Given no ref_model, TRL freezes a copy of the current
    adapter as adapter "ref" (see learning/trainer.py's docstring); it is dropped afterwards so that
    only the trained adapter is saved."""
    metrics = fit(trainer, stage, examples, progress)
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
    return metrics


def fit(trainer: Trainer, stage: str, examples: int, progress: Progress) -> dict[str, Any]:
    """Train one stage with our progress lines instead of printed logs."""
    from transformers import PrinterCallback

    # disable_tqdm swaps the progress bar for PrinterCallback, which prints every log dict.
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(progress_callback(progress, stage))
    started = time.monotonic()
    output = trainer.train()
    return {
        "examples": examples,
        "steps": trainer.state.global_step,
        "learning_rate": trainer.args.learning_rate,
        "train_loss": finite(output.training_loss),
        "seconds": round(time.monotonic() - started, 3),
        "losses": [finite(log["loss"]) for log in trainer.state.log_history if "loss" in log],
    }
