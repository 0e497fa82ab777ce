"""The aggregator's arithmetic (learning/federated/aggregate.py), on small LoRA-shaped
arrays: the weighted mean, the exact rules for LoRA (the mean of the products factored
back; FFA's frozen A), and the updates it refuses to average."""

from __future__ import annotations

import numpy as np
import pytest

from learnloop.learning.federated.aggregate import Update, aggregate

A, B = "m.q_proj.lora_A.weight", "m.q_proj.lora_B.weight"
rng = np.random.default_rng(0)


def adapter(rank: int = 2, a: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {
        A: rng.normal(size=(rank, 6)).astype(np.float32) if a is None else a.copy(),
        B: rng.normal(size=(5, rank)).astype(np.float32),
    }


def product(weights: dict[str, np.ndarray]) -> np.ndarray:
    return weights[B].astype(np.float64) @ weights[A].astype(np.float64)


def test_fedavg_weights_each_tensor_by_examples() -> None:
    one, two = adapter(), adapter()
    result = aggregate([Update("a", one, 1), Update("b", two, 3)], "fedavg")
    np.testing.assert_allclose(result.adapter[A], 0.25 * one[A] + 0.75 * two[A], rtol=1e-6)
    assert result.nodes == ["a", "b"] and result.examples == 4
    assert result.adapter[A].dtype == np.float32 and one[A] is not result.adapter[A]


def test_svd_gives_the_mean_of_what_the_nodes_learned_where_fedavg_does_not() -> None:
    # rank-1 updates of rank-2 adapters: the weighted mean of two products has rank 2
    ones = [adapter(rank=2) for _ in range(2)]
    for weights in ones:
        weights[A][1], weights[B][:, 1] = 0, 0
    updates = [Update("a", ones[0], 2), Update("b", ones[1], 1)]
    wanted = (2 * product(ones[0]) + product(ones[1])) / 3
    exact = aggregate(updates, "svd")
    np.testing.assert_allclose(product(exact.adapter), wanted, atol=1e-5)
    assert exact.truncation_error is not None and exact.truncation_error < 1e-6
    naive = aggregate(updates, "fedavg")
    assert np.abs(product(naive.adapter) - wanted).max() > 0.1  # the cross terms


def test_svd_reports_what_a_rank_too_small_loses() -> None:
    updates = [Update(n, adapter(rank=1), 1) for n in "abc"]  # the mean has rank 3
    result = aggregate(updates, "svd")
    assert result.adapter[A].shape == (1, 6) and 0 < (result.truncation_error or 0) < 1


def test_ffa_averages_b_under_the_shared_a_exactly() -> None:
    shared = rng.normal(size=(2, 6)).astype(np.float32)
    ones = [adapter(a=shared) for _ in range(3)]
    counts = (1, 2, 3)
    updates = [Update(n, w, k) for n, w, k in zip("abc", ones, counts, strict=True)]
    result = aggregate(updates, "ffa")
    wanted = sum(k * product(w) for w, k in zip(ones, counts, strict=True)) / 6
    np.testing.assert_allclose(product(result.adapter), wanted, atol=1e-5)
    np.testing.assert_array_equal(result.adapter[A], shared)


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda w: {**w, B: np.full_like(w[B], np.nan)}, "NaN"),
        (lambda w: {A: w[A]}, "do not match"),
        (lambda w: {**w, B: np.zeros((5, 3), np.float32)}, "shape"),
        (lambda w: {**w, B: w[B].astype(np.int32)}, "floating-point"),
        (lambda w: {**w, B: w[B] * 1e6}, "beyond"),
        (lambda w: {**w, B: w[B] * 50}, "median"),
    ],
)
def test_a_malformed_or_far_out_update_is_refused_and_the_rest_go_on(spoil, why) -> None:  # type: ignore[no-untyped-def]
    start = adapter()
    updates = [Update(n, {k: v + 0.01 * rng.normal(size=v.shape).astype(np.float32)
                          for k, v in start.items()}, 1) for n in "abc"]  # fmt: skip
    bad = Update("bad", spoil(updates[0].adapter), 1)
    result = aggregate([*updates, bad], "fedavg", start)
    assert result.nodes == ["a", "b", "c"]
    assert why in result.rejected["bad"]


def test_nothing_usable_is_an_error_naming_each_node() -> None:
    with pytest.raises(ValueError, match="a: it reports 0 training examples"):
        aggregate([Update("a", adapter(), 0)], "fedavg")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([Update("a", adapter(), 1)], "median")
