"""SFT's loss from the logits of the completion's positions alone.

TRL 1.16's SFTTrainer projects only the labelled positions through the LM head on Triton
devices; elsewhere (every CPU) it projects every position of every row through the
49,152-word head and masks afterwards, and its backward recomputes that projection. On
SmolLM2-135M that took 43% of an SFT step on this project's 2-core machine (profiled:
19.4 of 45.7 s for 48 sentiment rows), for a loss that reads 1 to 3 positions per row.

Invariant: the loss is TRL's ``nll`` loss, the same number to rounding: the summed
negative log-likelihood of every completion token over the token count (the Trainer's
``num_items_in_batch`` when it gives one), scaled by the process count as TRL scales it
for DDP. Only the logits differ: the model is asked for the positions some row of the
batch is scored on (``logits_to_keep``, the union over the batch), never for the rest.
Imported by the trainer child only (it imports TRL and torch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional
from trl import SFTTrainer


class CompletionSFTTrainer(SFTTrainer):
    """An SFTTrainer for prompt-completion rows (``completion_only_loss``) whose loss
    asks the model for the scored positions' logits only; it logs the loss alone (not
    TRL's entropy and token-accuracy metrics, which need every logit)."""

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        # The logits at position p predict token p + 1: p is kept when some row's label
        # at p + 1 is scored. A batch with none (a completion cut off by max_length) keeps
        # position 0 so that the loss is a zero connected to the model.
        targets = inputs["labels"][:, 1:]
        kept = (targets != -100).any(dim=0).nonzero().squeeze(-1)
        if kept.numel() == 0:
            kept = torch.zeros(1, dtype=torch.long, device=targets.device)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**model_inputs, use_cache=False, logits_to_keep=kept)
        targets = targets[:, kept]
        total = functional.cross_entropy(
            outputs.logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=-100,
            reduction="sum",
        )
        count = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
