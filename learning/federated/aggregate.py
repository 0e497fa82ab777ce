"""The aggregator's arithmetic: many nodes' LoRA adapters in, one global adapter out.

Pure numpy, no model, no Flower: an adapter here is a dict of tensor name -> array, as
PEFT saves it (``...q_proj.lora_A.weight`` is r x in, ``...q_proj.lora_B.weight`` is
out x r; the layer adds ``scale * B @ A`` to its weight, ``scale`` the same on every node).

Three rules, each weighted by the examples a node trained on:

- ``fedavg``: the mean of every tensor, A and B apart. Cheap and what most systems do,
  but the mean of B_k @ A_k is not (mean B) @ (mean A): the result is not the average of
  what the nodes learned (cross terms B_i @ A_j appear).
- ``svd``: the mean of the products, ``M = sum w_k B_k @ A_k``, factored back to the
  adapter's rank by a truncated SVD (``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``). Exact
  whenever M has rank <= r; otherwise the best rank-r approximation of the mean, and
  :class:`Aggregate` reports the relative error of the truncation.
- ``ffa``: FFA-LoRA. Every node keeps A frozen at the shared initialisation (the learn
  setting ``lora_freeze_a``), so the mean of B_k @ A is (mean B) @ A: exact. Updates whose
  A differs from the others' are refused rather than averaged.

Invariants: an aggregate has exactly the names and shapes of the updates it came from;
no input array is modified; a node's update that is malformed or far out of range never
enters a mean (:func:`screen`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Adapter = dict[str, np.ndarray]
RULES = ("fedavg", "svd", "ffa")
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"
# An update is refused when it moved this many times further from the round's starting
# adapter than the median node did (a node trained on garbage, or a wrong learning rate).
OUTLIER_FACTOR = 10.0
MAX_ABS = 1e4  # any weight beyond this is not a LoRA update


@dataclass(frozen=True)
class Update:
    """One node's reply to a round: its adapter and how many examples trained it."""

    node: str
    adapter: Adapter
    examples: int


@dataclass(frozen=True)
class Aggregate:
    adapter: Adapter
    rule: str
    nodes: list[str]  # whose updates are in it
    examples: int
    truncation_error: float | None = None  # svd: ||M - B A|| / ||M|| (worst module)
    rejected: dict[str, str] = field(default_factory=dict)  # node -> why


def aggregate(updates: list[Update], rule: str, start: Adapter | None = None) -> Aggregate:
    """Screen ``updates`` against each other and ``start`` (the adapter the round began
    from; None: a fresh one), then combine the accepted ones with ``rule``. Raises
    ValueError when none is left."""
    if rule not in RULES:
        raise ValueError(f"unknown aggregation {rule!r}; choose one of {', '.join(RULES)}")
    kept, rejected = screen(updates, start, frozen_a=rule == "ffa")
    if not kept:
        why = "; ".join(f"{node}: {reason}" for node, reason in rejected.items())
        raise ValueError(f"no usable update to aggregate ({why or 'no node replied'})")
    weights = np.array([u.examples for u in kept], dtype=np.float64)
    weights /= weights.sum()
    error = None
    if rule == "svd":
        adapter, error = product_mean(kept, weights)
    else:  # ffa's A are equal (screened), so its mean is that A
        adapter = {name: mean([u.adapter[name] for u in kept], weights) for name in names(kept)}
    return Aggregate(
        adapter=adapter,
        rule=rule,
        nodes=[u.node for u in kept],
        examples=sum(u.examples for u in kept),
        truncation_error=error,
        rejected=rejected,
    )


def names(updates: list[Update]) -> list[str]:
    return sorted(updates[0].adapter)


def mean(arrays: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    total = sum(w * a.astype(np.float64) for w, a in zip(weights, arrays, strict=True))
    return np.asarray(total, dtype=arrays[0].dtype)


def product_mean(updates: list[Update], weights: np.ndarray) -> tuple[Adapter, float]:
    """The ``svd`` rule; also returns the worst module's relative truncation error."""
    out: Adapter = {}
    worst = 0.0
    for name in names(updates):
        if name.endswith(B_SUFFIX):
            continue
        if not name.endswith(A_SUFFIX):  # not a LoRA factor (a trained bias, say): the mean
            out[name] = mean([u.adapter[name] for u in updates], weights)
            continue
        b_name = name[: -len(A_SUFFIX)] + B_SUFFIX
        product = sum(
            w * (u.adapter[b_name].astype(np.float64) @ u.adapter[name].astype(np.float64))
            for w, u in zip(weights, updates, strict=True)
        )
        a, b, error = factor(np.asarray(product), updates[0].adapter[name].shape[0])
        out[name] = a.astype(updates[0].adapter[name].dtype)
        out[b_name] = b.astype(updates[0].adapter[b_name].dtype)
        worst = max(worst, error)
    return out, worst


def factor(product: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, relative error) with ``B @ A`` the best rank-``rank`` approximation of
    ``product``; the singular values are split evenly between the two factors."""
    u, s, vt = np.linalg.svd(product, full_matrices=False)
    root = np.sqrt(s[:rank])
    b = u[:, :rank] * root
    a = root[:, None] * vt[:rank]
    if a.shape[0] < rank:  # a product smaller than the rank (tiny layers): pad with zeros
        a = np.vstack([a, np.zeros((rank - a.shape[0], a.shape[1]))])
        b = np.hstack([b, np.zeros((b.shape[0], rank - b.shape[1]))])
    norm = float(np.linalg.norm(s))
    error = float(np.linalg.norm(s[rank:]) / norm) if norm > 0 else 0.0
    return a, b, error


def screen(
    updates: list[Update], start: Adapter | None, *, frozen_a: bool = False
) -> tuple[list[Update], dict[str, str]]:
    """(accepted, rejected node -> reason). Refused: no examples; names or shapes other
    than the round's (``start``'s, or else the most common among the updates); a value
    that is not finite or beyond :data:`MAX_ABS`; a move from ``start`` more than
    :data:`OUTLIER_FACTOR` times the median node's (with three or more updates); with
    ``frozen_a``, an A that differs from ``start``'s (or the first update's)."""
    rejected: dict[str, str] = {}
    shape = _layout(start) if start is not None else _common_layout(updates)
    kept = []
    for u in updates:
        reason = _malformed(u, shape)
        if reason:
            rejected[u.node] = reason
        else:
            kept.append(u)
    if frozen_a and kept:
        reference = start if start is not None else kept[0].adapter
        for u in list(kept):
            if not _same_a(u.adapter, reference):
                rejected[u.node] = "its lora_A differs from the shared one (ffa keeps A frozen)"
                kept.remove(u)
    if len(kept) >= 3:
        for node, reason in _outliers(kept, start).items():
            rejected[node] = reason
        kept = [u for u in kept if u.node not in rejected]
    return kept, rejected


def _layout(adapter: Adapter) -> dict[str, tuple[int, ...]]:
    return {name: tuple(array.shape) for name, array in adapter.items()}


def _common_layout(updates: list[Update]) -> dict[str, tuple[int, ...]]:
    layouts = [_layout(u.adapter) for u in updates]
    return max(layouts, key=layouts.count) if layouts else {}


def _malformed(u: Update, shape: dict[str, tuple[int, ...]]) -> str | None:
    if not isinstance(u.examples, int) or u.examples <= 0:
        return f"it reports {u.examples!r} training examples"
    if set(u.adapter) != set(shape):
        missing, extra = sorted(set(shape) - set(u.adapter)), sorted(set(u.adapter) - set(shape))
        return f"its tensors do not match the round's (missing {missing[:2]}, extra {extra[:2]})"
    for name, array in u.adapter.items():
        if tuple(array.shape) != shape[name]:
            return f"{name} has shape {tuple(array.shape)}, not {shape[name]}"
        if not np.issubdtype(array.dtype, np.floating):
            return f"{name} holds {array.dtype}, not floating-point numbers"
        if not np.all(np.isfinite(array)):
            return f"{name} holds NaN or infinite values"
        if array.size and float(np.max(np.abs(array))) > MAX_ABS:
            return f"{name} holds values beyond ±{MAX_ABS:g}"
    return None


def _same_a(adapter: Adapter, reference: Adapter) -> bool:
    return all(
        np.allclose(adapter[name], reference[name], rtol=0, atol=1e-6)
        for name in adapter
        if name.endswith(A_SUFFIX)
    )


def _outliers(updates: list[Update], start: Adapter | None) -> dict[str, str]:
    moves = {u.node: _distance(u.adapter, start) for u in updates}
    median = float(np.median(list(moves.values())))
    if median <= 0:
        return {}
    return {
        node: f"it moved {move / median:.0f}x as far as the median node (limit {OUTLIER_FACTOR:g}x)"
        for node, move in moves.items()
        if move > OUTLIER_FACTOR * median
    }


def _distance(adapter: Adapter, start: Adapter | None) -> float:
    """How far a node's adapter moved: the norm of the change of its products B @ A
    (the part that acts on the model), from ``start`` or from zero."""
    total = 0.0
    for name, a in adapter.items():
        if not name.endswith(A_SUFFIX):
            continue
        b_name = name[: -len(A_SUFFIX)] + B_SUFFIX
        delta = adapter[b_name].astype(np.float64) @ a.astype(np.float64)
        if start is not None:
            delta -= start[b_name].astype(np.float64) @ start[name].astype(np.float64)
        total += float(np.sum(delta * delta))
    return math.sqrt(total)
