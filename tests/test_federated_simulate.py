"""``learnloop federate simulate`` end to end on the tiny model: simulated users on two
nodes, each seeing one label, Flower's Simulation Engine (Ray) for the rounds, and the
federated, local and centralized adapters scored on the eval rows. The split is pure and
tested on rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from learnloop.agent.bench.federated import split_non_iid
from learnloop.learning.tasks import Example
from tests.helpers import run_cli

LABELS = ["yes", "no", "maybe"]


def rows(n: int) -> list[Example]:
    return [Example(f"statement {i} about item {7 * i}", LABELS[i % 3], i + 1) for i in range(n)]


def test_each_node_sees_mostly_its_own_label_and_no_row_twice() -> None:
    parts = split_non_iid(rows(300), LABELS, nodes=4, per_node=50, share=0.8, seed=0)
    assert [len(p) for p in parts] == [50] * 4
    for i, part in enumerate(parts):
        home = LABELS[i % 3]
        assert sum(r.label == home for r in part) == 40  # 0.8 of 50; the rest other labels
    texts = [r.text for p in parts for r in p]
    assert len(set(texts)) == len(texts)
    assert split_non_iid(rows(300), LABELS, 4, 50, 0.8, 0) == parts  # seeded


def test_a_label_that_runs_out_is_filled_from_the_others() -> None:
    parts = split_non_iid(rows(12), LABELS, nodes=2, per_node=6, share=1.0, seed=0)
    assert [len(p) for p in parts] == [6, 6]
    assert sum(r.label == "yes" for r in parts[0]) == 4  # all four "yes" rows there are


@pytest.mark.slow
def test_simulate_trains_federated_local_and_centralized_and_scores_them(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    before = dict(os.environ)
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps({"text": r.text, "label": r.label}) + "\n"
                             for r in rows(30)))  # fmt: skip
    evaluation.write_text("".join(json.dumps({"text": f"eval {i}", "label": LABELS[i % 3]})
                                  + "\n" for i in range(6)))  # fmt: skip
    out = tmp_path / "sim"
    result = run_cli(
        tiny_model_dir, "federate", "simulate", "--train", str(train), "--eval", str(evaluation),
        "--instruction", "Answer yes, no or maybe.", "--labels", "yes,no,maybe",
        "--nodes", "2", "--rounds", "2", "--interactions", "4", "--aggregation", "fedavg,svd",
        "--set", "max_steps=2", "--set", "lora_r=4", "--out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert json.loads(result.stdout) == results
    assert [part["yes"] for part in results["split"]] == [3, 0]  # 0.8 of 4: 3 home rows
    assert [part["no"] for part in results["split"]][1] == 3
    for way in ("base", "federated", "local", "centralized"):
        assert 0 <= results[way]["accuracy"] <= 1 and 0 <= results[way]["macro_f1"] <= 1
    assert set(results["rules"]) == {"fedavg", "svd"}
    sent = results["bytes_per_round"]
    assert len(sent) == 2 and 0 < sent[0] < sent[1]  # round 2 sends the global adapter out too
    assert len(results["local"]["nodes"]) == 2
    for name in ("PYTHONPATH", "LEARNLOOP_HOME", "LEARNLOOP_MODEL", "FLWR_HOME"):
        assert os.environ.get(name) == before.get(name), name  # Ray's and ours put back
    # the aggregator's folders hold tensors and numbers, never a text the users sent
    for folder in out.glob("federated-*"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"statement" not in path.read_bytes(), path
