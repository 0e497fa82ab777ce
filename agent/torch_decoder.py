"""The batcher's decoder for transformers (agent/batching.py): one DynamicCache for every
running row, PEFT's per-row adapters.

A row joins with its prompt prefilled alone; its key/value cache is then merged into the
batch's, every row left-padded to a common length with the padding masked out. Each step
runs the model once over the last token of every row, each row through its own adapter
(PEFT's ``adapter_names``, ``__base__`` for the base model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from learnloop.agent.batching import Row

BASE_ROW = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class TorchDecoder:
    """Invariant: ``_cache`` holds one row per running row, in the batcher's order."""

    def __init__(self, model: Callable[[], Any]) -> None:
        self._model = model  # read anew each call: wrapping it for adapters replaces it
        self._cache: Any = None  # the running rows' DynamicCache
        self._new: Any = None  # the cache of the row just prefilled

    def reserve(self, row: Row) -> bool:
        return True  # the cache grows as it must

    def prefill(self, row: Row) -> Any:
        from transformers import DynamicCache

        self._new, model = DynamicCache(), self._model()
        out = model(
            input_ids=row.prompt,
            cache=self._new,
            use_cache=True,
            logits_to_keep=1,
            **_adapters(model, [row]),
        )
        return out.logits[:, -1, :]

    def admit(self, row: Row) -> None:
        self._cache = self._new if self._cache is None else _merge(self._cache, self._new)
        self._new = None

    def discard(self, row: Row) -> None:
        self._new = None

    def step(self, rows: list[Row]) -> Any:
        import torch

        device = rows[0].prompt.device
        width = self._cache.get_seq_length()
        mask = torch.zeros((len(rows), width + 1), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            mask[i, width - row.cached :] = 1
        model = self._model()
        out = model(
            input_ids=torch.tensor([[row.tokens[-1]] for row in rows], device=device),
            attention_mask=mask,
            position_ids=torch.tensor([[row.cached] for row in rows], device=device),
            cache=self._cache,
            use_cache=True,
            **_adapters(model, rows),
        )
        return out.logits[:, -1, :]

    def retain(self, rows: list[Row], keep: list[int]) -> None:
        self._cache = _select(self._cache, keep, [rows[i] for i in keep])

    def reset(self) -> None:
        self._cache = self._new = None


def _adapters(model: Any, rows: list[Row]) -> dict[str, Any]:
    """Each row's adapter, for a model wrapped for adapters (one that is not has only
    base rows: loading a version's adapter wraps it, before its first row is queued)."""
    if not hasattr(model, "peft_config"):
        return {}
    return {"adapter_names": [row.adapter or BASE_ROW for row in rows]}


def _merge(cache: Any, new: Any) -> Any:
    """``cache`` (one row per running row) with ``new``'s one row appended below, every
    row left-padded with zeros to the longer of the two lengths."""
    import torch

    width = max(cache.get_seq_length(), new.get_seq_length())
    for old, add in zip(cache.layers, new.layers, strict=True):
        old.keys = torch.cat([_pad_left(t, width) for t in (old.keys, add.keys)], dim=0)
        old.values = torch.cat([_pad_left(t, width) for t in (old.values, add.values)], dim=0)
    return cache


def _select(cache: Any, keep: list[int], rows: list[Row]) -> Any:
    """``cache`` with only the rows ``keep``, and without the columns that are padding in
    every one of them."""
    if not keep:
        return None
    trim = cache.get_seq_length() - max(row.cached for row in rows)
    for layer in cache.layers:
        layer.keys = layer.keys[keep, :, trim:, :]
        layer.values = layer.values[keep, :, trim:, :]
    return cache


def _pad_left(t: Any, width: int) -> Any:
    import torch

    missing = width - t.shape[2]
    if missing == 0:
        return t
    pad = t.new_zeros((t.shape[0], t.shape[1], missing, t.shape[3]))
    return torch.cat([pad, t], dim=2)
