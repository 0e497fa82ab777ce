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
from tests.scripted import SHARED_TOOLS

LABELS = "positive,negative,neutral"
TEXTS = [
    ("Profit rose sharply.", "positive"),
    ("Sales fell by half.", "negative"),
    ("The meeting is on Monday.", "neutral"),
    ("Orders doubled.", "positive"),
    ("The plant closed.", "negative"),
    ("The firm has 40 staff.", "neutral"),
]


# multiplications a random tiny model never gets right
TOOL_ROWS = [
    {"text": f"What is {a} * {b}?", "answer": str(a * b),
     "calls": [{"name": "calculate", "arguments": {"expression": f"{a} * {b}"}}]}
    for a, b in [(4821, 37), (1203, 58), (9917, 12), (3344, 71), (2718, 28), (5150, 19)]
]  # fmt: skip


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
    assert results["learn_config"]["liked_as_label"]  # needs the labels: --labels gives them
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


def test_a_tool_task_is_taught_with_demonstrations_that_ran_the_real_tool(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = TOOL_ROWS
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    result = run_cli(
        tiny_model_dir, "bench", "--tools", str(SHARED_TOOLS),
        "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "dev.jsonl"),
        "--instruction", "Use the calculate tool.", "--gate-rows", "3",
        "--max-new-tokens", "8", "--set", "max_steps=2", "--interactions", "4",
        "--cycle-every", "4", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # The table a person pastes says how often each version called the tool, and how well.
    header = result.stdout.splitlines()[0]
    assert "tool use" in header and "tried a call" in header and "well-formed" in header
    assert "macro-F1" not in header
    for point in [results["base"], *results["cycles"]]:
        assert point["macro_f1"] is None and 0 <= point["tool_use"] <= 1
        assert 0 <= point["attempted"] <= 1
    # A random tiny model answers no multiplication right: each miss is corrected with the
    # row's call, run with the real tool, and then the answer, and trained on.
    with Store(tmp_path / "out" / "home" / "learnloop.duckdb") as store:
        examples = store.feedback_examples()
    corrected = [e for e in examples if e.correction_messages]
    assert len(corrected) == results["feedback"]["corrections"] >= 3
    by_text = {r["text"]: r for r in rows}
    for example in corrected:
        call, result_message, final = example.correction_messages  # type: ignore[misc]
        row = by_text[example.messages[-1]["content"].split("\n")[-1].strip()]
        assert call["tool_calls"][0]["function"]["name"] == "calculate"
        assert result_message == {
            "role": "tool",
            "tool_call_id": call["tool_calls"][0]["id"],
            "content": row["answer"],
        }
        assert row["answer"] in final["content"]
        assert [t["function"]["name"] for t in example.tools] == ["calculate"]
    assert results["cycles"] and results["cycles"][0]["examples"]["sft"] >= 1


def test_a_tool_task_can_be_taught_with_thumbs_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Thumbs mode trains a liked sentiment answer as its label word; a tool task has no
    labels, so there a liked answer trains as said (this once refused to start)."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOOL_ROWS * 2))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TOOL_ROWS[:2]))
    result = run_cli(
        tiny_model_dir, "bench", "--tools", str(SHARED_TOOLS), "--feedback", "thumbs",
        "--train", str(tmp_path / "train.jsonl"), "--eval", str(tmp_path / "dev.jsonl"),
        "--instruction", "Use the calculate tool.", "--gate-rows", "2",
        "--max-new-tokens", "8", "--set", "max_steps=2", "--interactions", "3",
        "--cycle-every", "3", "--out", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    assert results["feedback"]["corrections"] == 0 and results["feedback"]["down"] >= 1
    assert results["learn_config"]["liked_as_label"] is False


def test_the_job_can_change_part_way_and_both_tasks_are_measured_throughout(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """--switch-at 3: three sentiment texts, then three tool questions; every measurement
    holds both tasks, and the cycle after the switch is judged on the second task."""
    rows = TOOL_ROWS
    (tmp_path / "train2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (tmp_path / "dev2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    args = bench_args(
        tmp_path, "--interactions", "6", "--cycle-every", "3", "--switch-at", "3",
        "--train2", str(tmp_path / "train2.jsonl"), "--eval2", str(tmp_path / "dev2.jsonl"),
        "--instruction2", "Use the calculate tool.", "--tools2", str(SHARED_TOOLS),
    )  # fmt: skip
    result = run_cli(tiny_model_dir, *args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "2nd task accuracy" in result.stdout.splitlines()[0]
    for point in [results["base"], *results["cycles"], results["final"]]:
        assert 0 <= point["accuracy"] <= 1 and 0 <= point["macro_f1"] <= 1  # the first task
        second = point["second"]
        assert 0 <= second["accuracy"] <= 1 and second["macro_f1"] is None  # a tool task
        assert second["answers"] == 2
    with Store(tmp_path / "out" / "home" / "learnloop.duckdb") as store:
        sent = [t.log.user_message for t in store.recent_turns(100) if t.feedback]
        runs = store.runs()
    assert [m.startswith("Sentiment?") for m in sent] == [True] * 3 + [False] * 3
    # each cycle's gate judges the task being taught when it ran
    assert runs[0].config["eval_instruction"] == "Sentiment? One word."
    assert runs[-1].config["eval_instruction"] == "Use the calculate tool."
    assert runs[-1].config["tools"] == str(SHARED_TOOLS)
    assert runs[0].config["eval_labels"] and runs[-1].config["eval_labels"] == ""


def test_users_take_turns_and_one_can_be_forgotten_at_the_end(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    args = bench_args(
        tmp_path, "--interactions", "6", "--cycle-every", "3", "--users", "3",
        "--forget", "user1", "--json",
    )  # fmt: skip
    result = run_cli(tiny_model_dir, *args)
    assert result.exit_code == 0, result.output
    forgot = json.loads(result.stdout)["forget"]
    assert forgot["user"] == "user1" and forgot["feedback_deleted"] == 2  # a third
    assert forgot["versions_retired"] == ["v1", "v2"]  # both cycles trained on user1's rows
    assert forgot["seconds"] > 0 and 0 <= forgot["after"]["accuracy"] <= 1
    with Store(tmp_path / "out" / "home" / "learnloop.duckdb") as store:
        assert not store.user_exists("user1")
        left = {f.user_name for t in store.recent_turns(100) for f in t.feedback}
    assert left == {"user2", "user3"}
    (tmp_path / "x").mkdir()
    refused = run_cli(tiny_model_dir, *bench_args(tmp_path / "x", "--forget", "user7"))
    assert refused.exit_code == 1 and "--forget names a simulated user" in refused.stderr
