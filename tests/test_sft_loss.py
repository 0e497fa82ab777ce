"""learning/sft_loss.py: the SFT loss from the scored positions' logits is TRL's loss, and
moves the adapter the same way, on a real TRL batch of rows of different lengths (one of
them a two-step tool trajectory), and a batch with nothing to score trains nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from learnloop.learning import chat_format

ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Is 'profit rose' positive?", [{"role": "assistant", "content": "positive"}]),
    (
        "Sentiment of 'the company cut its whole workforce and closed every plant'?",
        [{"role": "assistant", "content": "negative, without a doubt"}],
    ),
    (
        "What is 12 + 30?",
        [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "calculate", "arguments": '{"a": 12, "b": 30}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "42"},
        ],
    ),
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "add two numbers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            },
        },
    }
]


def trainers(tiny_model_dir: Path, tmp_path: Path) -> tuple[Any, Any, Any]:
    """TRL's SFTTrainer and ours on one LoRA model, and a collated batch of ROWS."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from learnloop.learning.sft_loss import CompletionSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a gradient path
            torch.nn.init.normal_(param, std=0.05)
    rows = [
        chat_format.training_ids(
            tokenizer,
            [{"role": "user", "content": prompt}],
            completion,
            TOOLS if any("tool_calls" in m for m in completion) else None,
        )
        for prompt, completion in ROWS
    ]
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=len(rows),
        completion_only_loss=True,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    data = Dataset.from_list(rows)
    kwargs = {"model": model, "args": args, "train_dataset": data, "processing_class": tokenizer}
    theirs, ours = SFTTrainer(**kwargs), CompletionSFTTrainer(**kwargs)
    batch = next(iter(ours.get_train_dataloader()))
    return theirs, ours, batch


def loss_and_grads(trainer: Any, batch: dict[str, Any], items: Any) -> tuple[float, list[Any]]:
    model = trainer.model
    model.zero_grad()
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
    loss.backward()
    value = float(loss.detach())
    grads = [p.grad.clone() for n, p in model.named_parameters() if p.requires_grad]
    return value, grads


@pytest.mark.parametrize("counted", [False, True], ids=["mean", "num_items_in_batch"])
def test_same_loss_and_gradients_as_trl(
    tiny_model_dir: Path, tmp_path: Path, counted: bool
) -> None:
    import torch

    theirs, ours, batch = trainers(tiny_model_dir, tmp_path)
    scored = int((batch["labels"] != -100).sum())
    assert scored >= 8, "the rows' completions are scored"
    items = torch.tensor(scored + 3) if counted else None
    their_loss, their_grads = loss_and_grads(theirs, batch, items)
    our_loss, our_grads = loss_and_grads(ours, batch, items)
    assert our_loss == pytest.approx(their_loss, rel=1e-5)
    assert len(our_grads) == len(their_grads) > 0
    for mine, trl in zip(our_grads, their_grads, strict=True):
        assert torch.allclose(mine, trl, rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in our_grads)


def test_a_batch_with_nothing_scored_is_a_zero_loss_that_trains_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    # As when max_length cuts every row of a batch before its answer.
    _, ours, batch = trainers(tiny_model_dir, tmp_path)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss, grads = loss_and_grads(ours, batch, None)
    assert loss == 0.0
    assert all(float(g.abs().max()) == 0 for g in grads)


@pytest.mark.parametrize("grouped", [False, True])
def test_sft_group_by_length_batches_rows_of_one_length(
    tiny_model_dir: Path, tmp_path: Path, grouped: bool
) -> None:
    """--sft-group-by-length: each batch holds rows of about one length (less padding)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learnloop.learning.config import LearnConfig
    from learnloop.learning.trainer_stages import sft_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, task_type="CAUSAL_LM")
    )
    words = {"short": "Up?", "long": "Is this " + "very " * 40 + "long sentence positive?"}
    rows = [
        {
            "prompt": [{"role": "user", "content": words[kind]}],
            "completion": [{"role": "assistant", "content": "yes"}],
        }
        for kind in ["short", "long"] * 4
    ]
    config = LearnConfig(batch_size=2, sft_group_by_length=grouped, seed=0)
    trainer = sft_trainer(model, tokenizer, rows, [], config, tmp_path, continuing=False)
    lengths = [b["attention_mask"].sum(dim=1).tolist() for b in trainer.get_train_dataloader()]
    mixed = [pair for pair in lengths if max(pair) > 2 * min(pair)]
    assert len(lengths) == 4
    assert (not mixed) == grouped, lengths
