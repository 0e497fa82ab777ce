"""``learn --start active``: a cycle that trains the active version's adapter further, on
the feedback new since that version and a bounded replay of the older.

The replay's choice is pure (learning/replay.py) and tested on rows; the cycle through
the CLI, on the tiny model with real TRL steps: the second version starts from the
first's weights (at a continuing learning rate too small to move them, it *is* the first), trains
on the new rows plus the replay, records where it started and what it cost, and a forget
of feedback only the first version saw retires both.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from safetensors.torch import load_file

from learnloop.learning.replay import continual, replayed
from learnloop.storage.records import FeedbackExample
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json

_ids = itertools.count(1)
FRESH = ("--max-steps", "2", "--gate", "false", "--sft-learning-rate", "1e-2")


def example(
    rating: str = "down", correction: str | None = None, answer: str = "a"
) -> FeedbackExample:
    n = next(_ids)
    return FeedbackExample(
        feedback_id=n,
        turn_id=n,
        thread_id=f"t{n}",
        messages=[{"role": "user", "content": f"question {n}"}],
        answer=answer,
        rating=rating,
        correction=correction,
        user_name="ann",
    )


def test_the_replay_keeps_every_kind_and_label_represented() -> None:
    common = [example(correction="Positive.") for _ in range(10)]
    rare = [example(correction="negative"), example("up", answer="Neutral, I think")]
    picked = replayed([*common, *rare], 3, seed=0)
    assert len(picked) == 3
    assert set(map(id, rare)) <= set(map(id, picked))  # the rare groups first
    assert replayed([*common, *rare], 3, seed=0) == picked  # the same every time
    assert len(replayed(common, 50, seed=0)) == 10  # never more than there is


def test_after_a_job_change_the_replay_keeps_the_old_job() -> None:
    # the old job's rows say one of three labels; the new job's each say their own result
    labels = [example(correction=word) for word in ("positive", "negative", "neutral") * 20]
    results = [example(correction=str(1000 + n)) for n in range(60)]
    picked = {id(e) for e in replayed([*labels, *results], 30, seed=0)}
    assert len(picked) == 30
    assert len(picked & set(map(id, labels))) >= 20  # three label groups to one of results
    assert len(picked & set(map(id, results))) >= 5


def test_a_continual_cycle_takes_all_new_rows_and_the_replay_only() -> None:
    old = [example(correction="positive") for _ in range(5)]
    new = [example(correction="negative") for _ in range(2)]
    rows = continual([*old, *new], since=old[-1].feedback_id, replay=1, seed=0)
    assert [e.feedback_id for e in rows][-2:] == [e.feedback_id for e in new]
    assert len(rows) == 3


def test_a_pile_of_new_rows_is_capped_and_the_older_of_it_may_be_replayed() -> None:
    old = [example(correction="positive") for _ in range(3)]
    new = [example(correction="negative") for _ in range(5)]
    rows = continual([*old, *new], since=old[-1].feedback_id, replay=2, seed=0, max_new=2)
    ids = [e.feedback_id for e in rows]
    assert len(rows) == 4 and ids[-2:] == [e.feedback_id for e in new[-2:]]  # the newest two
    pool = {e.feedback_id for e in [*old, *new[:-2]]}
    assert set(ids[:-2]) <= pool  # the replay draws from the old rows and the capped ones


def rate(store: Store, user: str, question: str, fix: str) -> None:
    turn = store.add_turn(make_log(question, "no idea", thread_id=question, user_name=user))
    store.add_feedback(turn, "down", correction=fix, user_name=user)


def lora(version_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(version_dir / "adapter_model.safetensors"))


def test_it_trains_the_active_adapter_further_and_records_it(tiny_model_dir: Path) -> None:
    with Store() as store:
        rate(store, "alice", "What is the capital of France?", "Paris.")
        rate(store, "bob", "What colour is the sky?", "Blue.")
    assert run_cli(tiny_model_dir, "learn", *FRESH).exit_code == 0
    with Store() as store:
        rate(store, "bob", "What is 2 + 2?", "4")
        rate(store, "bob", "Name a primary colour.", "Red.")
    out = run_json(
        tiny_model_dir,
        "learn",
        "--json",
        "--start",
        "active",
        "--replay",
        "0",
        "--max-steps",
        "1",
        "--gate",
        "false",
        "--sft-learning-rate",
        "1e-2",  # a fresh adapter's rate; the continued one trains at the next
        "--sft-continue-learning-rate",
        "1e-12",
        "--method",
        "sft",
    )
    assert out["version"] == "v2" and out["sft_examples"] == 2  # the new rows, no replay
    versions = {v["id"]: v for v in run_json(None, "versions", "--json")}
    assert versions["v2"]["started_from"] == "v1" and versions["v1"]["started_from"] is None
    assert versions["v2"]["users"] == ["bob"]
    first, second = (lora(Path(versions[v]["adapter_path"])) for v in ("v1", "v2"))
    assert any(t.abs().max() > 0 for k, t in first.items() if "lora_B" in k)  # v1 learned
    for key, weights in first.items():  # v2 began as v1 and barely moved
        torch.testing.assert_close(second[key], weights, rtol=0, atol=1e-6)
    metrics = versions["v2"]["metrics"]
    assert metrics["sft"]["learning_rate"] == 1e-12
    assert metrics["cpu_seconds"] > 0
    assert abs(metrics["energy_wh"] - metrics["cpu_seconds"] * 4.0 / 3600) < 0.01
    assert "CPU-s" in run_cli(None, "versions").output

    # alice's row trained v1 only, but v2 grew from v1: both go
    forgot = run_json(tiny_model_dir, "forget", "--user", "alice", "--json", *FRESH)
    assert forgot["versions_retired"] == ["v1", "v2"]
    assert forgot["replacement"] == "v3" and forgot["active"] == "v3"
    versions = {v["id"]: v for v in run_json(None, "versions", "--json")}
    assert versions["v3"]["started_from"] is None  # nothing retired to start from


def test_both_always_adds_a_fresh_run_and_auto_only_after_a_rejection(
    tiny_model_dir: Path,
) -> None:
    with Store() as store:
        rate(store, "alice", "What is the capital of France?", "Paris.")
    assert run_cli(tiny_model_dir, "learn", *FRESH).exit_code == 0
    with Store() as store:
        rate(store, "bob", "What is 2 + 2?", "4")
        rate(store, "bob", "Name a primary colour.", "Red.")
    both = ("--start", "both", "--replay", "0", "--method", "sft", *FRESH)
    out = run_json(tiny_model_dir, "learn", "--json", *both)
    assert out["version"] == "v2" and out["started_from"] == "v1"
    assert out["sft_examples"] == 2  # the new rows only
    then = out["then"]
    assert then["version"] == "v3" and then["started_from"] is None
    assert then["sft_examples"] == 3 and then["parent"] == "v2"  # all rows; judged against v2

    with Store() as store:
        rate(store, "bob", "What is 3 + 3?", "6")
    auto = ("--start", "auto", "--method", "sft", "--promote-without-heldout", "true")
    kept = run_json(tiny_model_dir, "learn", "--json", *auto, "--gate", "false", "--max-steps", "1")
    assert kept["promoted"] and kept["started_from"] == "v3" and kept["then"] is None
    # any movement on the control set breaks this bound: the continual candidate fails,
    # and a fresh one follows (its verdict is printed after the first's)
    strict = ("--max-steps", "1", "--sft-learning-rate", "1e-2", "--gate-max-kl", "1e-9")
    again = run_cli(tiny_model_dir, "learn", "--force", *auto, *strict).output
    assert "version v5 not promoted" in again
    assert "then a fresh adapter on all feedback:\nversion v6 " in again
