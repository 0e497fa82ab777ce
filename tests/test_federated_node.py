"""A federated node's round on its own data root (learning/federated/node.py), with the
tiny model and real TRL steps: it trains from the round's global adapter and hands back
only tensors and a count; it adopts the aggregated adapter as a gated version with its
lineage; FFA-LoRA keeps A where the seed put it; nothing of the round stays on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learnloop.learning.config import LearnConfig
from learnloop.learning.federated.aggregate import Update, aggregate
from learnloop.learning.federated.node import adopt_round, train_round
from learnloop.learning.models import resolve_model
from learnloop.storage.home import data_root
from learnloop.storage.store import Store
from tests.helpers import make_log, run_json

QUICK = {"max_steps": 2, "sft_learning_rate": 1e-2, "lora_r": 4, "min_heldout": 1, "method": "sft"}


def teach(store: Store, *pairs: tuple[str, str]) -> None:
    for question, fix in pairs:
        turn = store.add_turn(make_log(question, "no idea", thread_id=question, user_name="ann"))
        store.add_feedback(turn, "down", correction=fix, user_name="ann")


FACTS = (
    ("What is the capital of France?", "Paris."),
    ("What colour is the sky?", "Blue."),
    ("What is 2 + 2?", "4"),
    ("Name a primary colour.", "Red."),
)


def test_a_round_trains_from_the_global_adapter_and_returns_only_tensors(
    tiny_model_dir: Path,
) -> None:
    model = resolve_model(str(tiny_model_dir))
    config = LearnConfig(**{**QUICK, "gate": False})
    with Store() as store:
        teach(store, *FACTS)
        first = train_round(store, model, config, None)
    assert first.examples == 4
    assert all(isinstance(v, np.ndarray) for v in first.adapter.values())
    kinds = {name.split(".")[-2] for name in first.adapter}
    assert kinds == {"lora_A", "lora_B"}
    assert any(np.abs(v).max() > 0 for k, v in first.adapter.items() if ".lora_B." in k)
    # the next round starts from what it is given: at a rate too small to move it, it
    # comes back as it went out
    still = LearnConfig(**{**QUICK, "gate": False, "sft_continue_learning_rate": 1e-12})
    with Store() as store:
        second = train_round(store, model, still, first.adapter)
    for name, weights in first.adapter.items():
        np.testing.assert_allclose(second.adapter[name], weights, rtol=0, atol=1e-6)
    assert not (data_root() / "federation").exists()  # the round's text is gone


def test_ffa_keeps_a_at_the_seeded_start_on_every_node(tiny_model_dir: Path) -> None:
    model = resolve_model(str(tiny_model_dir))
    config = LearnConfig(**{**QUICK, "gate": False, "lora_freeze_a": True})
    free = LearnConfig(**{**QUICK, "gate": False})
    with Store() as store:
        teach(store, *FACTS[:2])
        one = train_round(store, model, config, None)
        other = train_round(store, model, free, None)
    # A is what the seed made (the same for every node); without the setting A trains
    a_names = [k for k in one.adapter if ".lora_A." in k]
    assert any(not np.array_equal(one.adapter[k], other.adapter[k]) for k in a_names)
    updates = [Update("n1", one.adapter, 2), Update("n2", one.adapter, 1)]
    assert aggregate(updates, "ffa").nodes == ["n1", "n2"]
    mixed = aggregate([*updates, Update("n3", other.adapter, 1)], "ffa")
    assert "n3" in mixed.rejected and "lora_A" in mixed.rejected["n3"]


def test_adopting_a_round_registers_a_gated_version_with_its_lineage(
    tiny_model_dir: Path,
) -> None:
    model = resolve_model(str(tiny_model_dir))
    config = LearnConfig(**QUICK)
    with Store() as store:
        teach(store, *FACTS)
        trained = train_round(store, model, config, None)
        lineage = {"federation": "f1", "round": 1, "nodes": ["a", "b"], "aggregation": "fedavg",
                   "examples": 7}  # fmt: skip
        result = adopt_round(store, model, config, trained.adapter, lineage)
    assert result.method == "federated" and result.gate is not None
    version = {v["id"]: v for v in run_json(None, "versions", "--json")}[result.version]
    assert version["lineage"] == lineage
    assert version["users"] == ["ann"]  # its training rows are this node's: a forget finds them
    assert version["metrics"]["sft"] is None  # adopted as it came, not trained here
    adopted = Path(version["adapter_path"]) / "adapter_model.safetensors"
    from safetensors.numpy import load_file

    for name, weights in load_file(str(adopted)).items():
        np.testing.assert_array_equal(weights, trained.adapter[name])
    assert not (data_root() / "federation").exists()


def test_weights_of_another_shape_are_refused_in_one_line(tiny_model_dir: Path) -> None:
    from learnloop.learning.child import CycleFailed

    model = resolve_model(str(tiny_model_dir))
    with Store() as store:
        teach(store, *FACTS[:2])
        trained = train_round(store, model, LearnConfig(**{**QUICK, "gate": False}), None)
        wider = LearnConfig(**{**QUICK, "gate": False, "lora_r": 8})
        with pytest.raises(CycleFailed, match="do not fit this adapter"):
            train_round(store, model, wider, trained.adapter)
    assert not (data_root() / "federation").exists()
