"""`learnloop bench`: a simulated user teaches the tiny model a labelled task through the
real agent, the trigger and the gate; results.json and the learning curve are written;
bad benchmark files are refused naming the line, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learnloop.agent.bench.label_task import score
from learnloop.learning.tasks import Example, exact_format, is_correct, named_labels
from learnloop.storage.store import Store
from tests.helpers import run_cli

LABELS = "positive,negative,neutral"
TEXTS = [
    ("Profit rose sharply.", "positive"),
    ("Sales fell by half.", "negative"),
    ("The meeting is on Monday.", "neutral"),
    ("Orders doubled.", "positive"),
    ("The plant closed.", "negative"),
    ("The firm has 40 staff.", "neutral"),
]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


def bench_args(tmp_path: Path, *extra: str) -> list[str]:
    train = write_rows(tmp_path / "train.jsonl", TEXTS * 2)
    dev = write_rows(tmp_path / "dev.jsonl", TEXTS[:4])
    return [
        "bench", "--train", str(train), "--eval", str(dev), "--labels", LABELS,
        "--instruction", "Sentiment? One word.", "--gate-rows", "3", "--max-new-tokens", "4",
        "--set", "max_steps=2", "--out", str(tmp_path / "out"), *extra,
    ]  # fmt: skip


def test_the_judge_wants_exactly_one_label_word_and_the_gold_one() -> None:
    labels = LABELS.split(",")
    assert is_correct("Positive.", "positive", labels)
    assert not is_correct("positive or negative", "positive", labels)
    assert not is_correct("It is neutralised", "neutral", labels)
    assert named_labels("NEGATIVE news", labels) == ["negative"]
    assert exact_format(" neutral. ", labels) and not exact_format("neutral news", labels)
    rows = [Example("a", "positive", 1), Example("b", "negative", 2)]
    scored = score(["positive", "The sentiment is positive"], rows, labels)
    assert (scored["accuracy"], scored["exact_format"]) == (0.5, 0.5)
    assert scored["predicted"] == {"positive": 2, "negative": 0, "neutral": 0, "none": 0}


def run_bench(model: Path, tmp_path: Path, *mode: str) -> dict:
    args = bench_args(tmp_path, "--interactions", "6", "--cycle-every", "3", *mode, "--json")
    result = run_cli(model, *args)
    assert result.exit_code == 0, result.output
    results: dict = json.loads(result.stdout)
    out = tmp_path / "out"
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert results["interactions"] == 6
    for point in [results["base"], *results["cycles"], results["final"]]:
        assert 0 <= point["accuracy"] <= 1 and 0 <= point["exact_format"] <= 1
        assert 0 <= point["macro_f1"] <= 1
    return results


def test_correct_mode_learns_through_the_real_loop_and_writes_its_results(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    results = run_bench(tiny_model_dir, tmp_path, "--feedback", "correct")
    first = results["cycles"][0]
    assert first["version"] == "v1" and first["gate"]["candidate"]["task_accuracy"] is not None
    assert first["train_seconds"] > 0 and first["peak_rss_mb"] > 0
    # a cycle every 3 interactions, each started through the chat's trigger
    assert [c["interactions"] for c in results["cycles"]] == [3, 6]
    assert results["feedback"]["corrections"] == results["feedback"]["down"]
    # Everything went through the store: turns, feedback, runs and versions are there.
    with Store(tmp_path / "out" / "home" / "learnloop.duckdb") as store:
        status = store.status()
        runs = store.runs()
    evaluated = {"base"} | {c["active_version"] for c in results["cycles"]}
    assert status.turns == 6 + 4 * len(evaluated)  # eval turns never get feedback
    assert status.feedback == 6
    assert [r.version_id for r in runs] == [c["version"] for c in results["cycles"]]
    assert results["learn_config"]["gate_metric"] == "task_accuracy"


def test_thumbs_mode_regenerates_after_a_miss_and_never_corrects(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    results = run_bench(tiny_model_dir, tmp_path, "--feedback", "thumbs", "--regen", "1")
    tally = results["feedback"]
    misses = 6 - tally["correct_first_try"]
    assert tally["regenerations"] == misses and tally["corrections"] == 0
    assert all(c["interactions"] in (3, 6) for c in results["cycles"])  # not per feedback
    assert results["learn_config"]["gate_metric"] == "task_macro_f1"
    with Store(tmp_path / "out" / "home" / "learnloop.duckdb") as store:
        regens = store.db.execute("SELECT count(*) FROM turns WHERE regen_of IS NOT NULL")
        assert regens.fetchone() == (misses,)
    if tally["up"] == 0:  # the random tiny model never names the right label: thumbs-down
        assert results["cycles"] == []  # alone trains nothing, so no cycle started
        log = (tmp_path / "out" / "home" / "runs").exists()
        assert not log  # and no background process was spawned for nothing


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok", "label": "positive"}\nnot json\n', "train.jsonl line 2: not valid JSON"),
        ('{"text": "ok"}\n', 'train.jsonl line 1: "label" is missing'),
        ('{"text": "ok", "label": "happy"}\n', "train.jsonl line 1: unknown label 'happy'"),
    ],
)
def test_bad_benchmark_files_are_refused_naming_the_line(
    tmp_path: Path, content: str, expected: str
) -> None:
    args = bench_args(tmp_path)
    (tmp_path / "train.jsonl").write_text(content)
    result = run_cli(None, *args)
    assert result.exit_code == 1 and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_bench_settings_are_refused(tmp_path: Path) -> None:
    for extra, expected in [
        (("--set", "sft_epochs=lots"), "'lots' is not a float"),
        (("--set", "nonsense=1"), "expected FIELD=VALUE"),
        (("--instruction", " "), "--instruction is empty"),
    ]:
        result = run_cli(None, *bench_args(tmp_path), *extra)
        assert result.exit_code == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
