"""`learnloop export`: a learning snapshot as TRL conversational datasets, JSONL or Parquet.

Invariants tested here (real DuckDB, real snapshot files, files read back with `datasets`):

- every exported row passes TRL's own conversational check and has exactly the columns
  its trainer expects; a correction becomes the SFT completion and the DPO chosen answer,
  the answer it corrects the DPO rejected one; held-out feedback lands only in the
  held-out files;
- JSONL and Parquet exports of the same snapshot hold the same rows;
- a run's export is its snapshot files as written (byte for byte in JSONL) with the
  content hash the store recorded; the default is the latest run with a snapshot, and
  the current feedback when no run has one;
- the manifest names the source, the hash and, per file, rows, columns and trainer;
- bad input (unknown run, a run without snapshot or folder, nothing to export, a bad
  format, a non-empty or file --out, --run with --current) is one line on stderr, exit 1,
  and nothing written; --force replaces an earlier export and keeps unrelated files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from datasets import Dataset, load_dataset
from trl.data_utils import is_conversational

from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import prepare_run
from learnloop.learning.models import ResolvedModel
from learnloop.learning.quality import is_held_out
from learnloop.learning.snapshot import build_snapshot
from learnloop.storage.records import TurnLog
from learnloop.storage.store import Store
from tests.helpers import run_cli, run_json

SHARE = LearnConfig().held_out_share
TRAIN_THREAD = next(t for t in (f"train-{i}" for i in range(100)) if not is_held_out(t, SHARE))
HELD_THREAD = next(t for t in (f"held-{i}" for i in range(100)) if is_held_out(t, SHARE))
SYSTEM = {"role": "system", "content": "You are helpful."}
COLUMNS = {
    "sft": ["prompt", "completion"],
    "dpo": ["prompt", "chosen", "rejected"],
    "kto": ["prompt", "completion", "label"],
    "heldout_pairs": ["prompt", "chosen", "rejected"],
    "heldout_fixes": ["prompt", "completion"],
}
# Four corrections: enough pairs (--min-pairs 4) for the default method to keep DPO.
FIXES = [
    ("What is the capital of Italy?", "Paris.", "Rome."),
    ("What is 2 + 2?", "5", "4"),
    ("Name a primary colour.", "Green.", "Red."),
    ("Which planet is largest?", "Mars.", "Jupiter."),
]
HELD_FIX = ("What is the capital of Spain?", "Lisbon.", "Madrid.")


# -- helpers ------------------------------------------------------------------------------


def rate(
    question: str,
    answer: str,
    rating: str,
    *,
    correction: str | None = None,
    thread: str = TRAIN_THREAD,
) -> None:
    """One answered turn and its feedback, through the real store."""
    log = TurnLog(
        thread_id=thread,
        user_message=question,
        messages=[SYSTEM, {"role": "user", "content": question}],
        prompt=f"<|user|>{question}<|assistant|>",
        answer=answer,
        version="base",
        model="tiny",
        settings={},
        prompt_tokens=5,
        completion_tokens=2,
        first_token_ms=1.0,
        total_ms=2.0,
        nodes=["respond"],
    )
    with Store() as store:
        store.add_feedback(store.add_turn(log), rating, correction=correction)


def give_feedback() -> None:
    for question, answer, fix in FIXES:
        rate(question, answer, "down", correction=fix)
    rate("Say hello.", "Hello!", "up")
    question, answer, fix = HELD_FIX
    rate(question, answer, "down", correction=fix, thread=HELD_THREAD)
    for n in range(LearnConfig().min_heldout - 1):  # enough to be worth holding out
        rate(
            f"What is {n} squared?", "No idea.", "down", correction=f"{n * n}.", thread=HELD_THREAD
        )


def record_run() -> tuple[int, Path]:
    """A real run with its snapshot (steps 1-2 of a cycle), then marked failed as a killed
    cycle would be, so that another run may start; no training."""
    model = ResolvedModel(spec="tiny", path="tiny", name="tiny")
    with Store() as store:
        run_id, run_dir, _ = prepare_run(store, model, LearnConfig())
        store.fail_run(run_id, "stopped by the test before training")
    return run_id, run_dir


def load(path: Path, cache: Path) -> Dataset:
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path), cache_dir=str(cache))
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))


def load_all(out: Path, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every dataset the manifest lists, read back with `datasets`, checked against TRL."""
    manifest = json.loads((out / "manifest.json").read_text())
    loaded = {}
    for entry in manifest["files"]:
        name = entry["file"].rsplit(".", 1)[0]
        data = load(out / entry["file"], tmp_path / "hf-cache")
        assert data.column_names == COLUMNS[name] == entry["columns"]
        assert len(data) == entry["rows"]
        rows = data.to_list()
        assert all(is_conversational(row) for row in rows)
        loaded[name] = rows
    return loaded


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def one_line_error(result: Result, needle: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


def export(out: Path, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = run_json(None, "export", "--out", str(out), *args)
    return result


# -- the current feedback -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_current_feedback_exports_trl_conversational_rows(tmp_path: Path, fmt: str) -> None:
    give_feedback()
    out = tmp_path / "export"
    manifest = export(out, "--current", "--format", fmt)

    assert manifest["source"] == "current feedback" and manifest["run_id"] is None
    assert manifest["format"] == fmt and manifest["out"] == str(out)
    trainers = {f["file"]: (f["trainer"], f["split"]) for f in manifest["files"]}
    assert trainers == {
        f"sft.{fmt}": ("SFTTrainer", "train"),
        f"dpo.{fmt}": ("DPOTrainer", "train"),
        f"heldout_pairs.{fmt}": ("DPOTrainer", "eval"),
        f"heldout_fixes.{fmt}": ("SFTTrainer", "eval"),
    }  # no kto file: with enough pairs the default method uses DPO, KTO stays empty
    assert sorted(p.name for p in out.iterdir()) == sorted([*trainers, "manifest.json"])

    rows = load_all(out, tmp_path)
    sft = {r["prompt"][-1]["content"]: r["completion"] for r in rows["sft"]}
    dpo = {r["prompt"][-1]["content"]: (r["chosen"], r["rejected"]) for r in rows["dpo"]}
    for question, answer, fix in FIXES:
        assert sft[question] == assistant(fix)
        assert dpo[question] == (assistant(fix), assistant(answer))
    assert sft["Say hello."] == assistant("Hello!")
    assert rows["sft"][0]["prompt"] == [SYSTEM, {"role": "user", "content": FIXES[0][0]}]

    question, answer, fix = HELD_FIX  # held out: judged with, never trained on
    assert question not in sft and question not in dpo
    held = [r["prompt"][-1]["content"] for r in rows["heldout_pairs"]]
    assert held[0] == question and len(held) == LearnConfig().min_heldout
    assert rows["heldout_pairs"][0]["chosen"] == assistant(fix)
    assert rows["heldout_pairs"][0]["rejected"] == assistant(answer)
    assert rows["heldout_fixes"][0]["completion"] == assistant(fix)

    with Store() as store:
        snap = build_snapshot(store.feedback_examples(), LearnConfig())
    assert manifest["content_hash"] == snap.data.content_hash()


def test_jsonl_and_parquet_hold_the_same_rows(tmp_path: Path) -> None:
    give_feedback()
    rate("Say bye.", "Potato.", "down")  # a thumbs-down alone: no SFT or DPO row
    as_jsonl = export(tmp_path / "j", "--current")
    as_parquet = export(tmp_path / "p", "--current", "--format", "parquet")
    assert as_jsonl["content_hash"] == as_parquet["content_hash"]
    assert load_all(tmp_path / "j", tmp_path) == load_all(tmp_path / "p", tmp_path)


def test_kto_rows_keep_their_boolean_label(tmp_path: Path) -> None:
    rate("Say hello.", "Hello!", "up")
    rate("Say bye.", "Potato.", "down")  # no pairs, both thumbs: the default method is KTO
    export(tmp_path / "out", "--current", "--format", "parquet")
    rows = load_all(tmp_path / "out", tmp_path)
    assert sorted((r["completion"][0]["content"], r["label"]) for r in rows["kto"]) == [
        ("Hello!", True),
        ("Potato.", False),
    ]


# -- recorded runs ------------------------------------------------------------------------


def test_the_default_is_the_latest_run_and_matches_its_snapshot(tmp_path: Path) -> None:
    give_feedback()
    first, first_dir = record_run()
    rate("Say bye.", "Bye!", "up")
    latest, latest_dir = record_run()

    manifest = export(tmp_path / "latest")
    assert manifest["source"] == f"run {latest}" and manifest["run_id"] == latest
    for entry in manifest["files"]:
        name = entry["file"].replace(".jsonl", "")
        assert (tmp_path / "latest" / entry["file"]).read_bytes() == (
            latest_dir / f"{name}.jsonl"
        ).read_bytes()
    with Store() as store:
        recorded = store.db.execute(
            "SELECT run_id, content_hash FROM snapshots ORDER BY run_id"
        ).fetchall()
    assert manifest["content_hash"] == dict(recorded)[latest]

    older = export(tmp_path / "older", "--run", str(first), "--format", "parquet")
    assert older["run_id"] == first and older["content_hash"] == dict(recorded)[first]
    sft = load_all(tmp_path / "older", tmp_path)["sft"]
    assert "Say bye." not in {r["prompt"][-1]["content"] for r in sft}  # came after run 1
    assert first_dir.is_dir()


def test_a_run_without_snapshot_is_skipped_by_default(tmp_path: Path) -> None:
    give_feedback()
    with Store() as store:  # a cycle killed between recording the run and its snapshot
        run_id = store.start_run("sft", {}, "", 0)
    manifest = export(tmp_path / "out")
    assert manifest["source"] == "current feedback"
    one_line_error(
        run_cli(None, "export", "--run", str(run_id), "--out", str(tmp_path / "x")),
        f"run {run_id} has no snapshot",
    )
    assert not (tmp_path / "x").exists()


# -- the output folder --------------------------------------------------------------------


def test_force_replaces_an_earlier_export_and_keeps_other_files(tmp_path: Path) -> None:
    give_feedback()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = run_cli(None, "export", "--current", "--out", str(out))
    one_line_error(refused, "is not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    export(out, "--current", "--force")
    manifest = export(out, "--current", "--format", "parquet", "--force")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f["file"] for f in manifest["files"]] + ["manifest.json", "notes.txt"])
    assert not any(name.endswith(".jsonl") for name in names)  # no stale files from before
    assert (out / "notes.txt").read_text() == "mine"


def test_human_output_lists_the_files(tmp_path: Path) -> None:
    give_feedback()
    result = run_cli(None, "export", "--current", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "exported current feedback as jsonl" in result.stdout
    assert "sft.jsonl" in result.stdout and "SFTTrainer (train)" in result.stdout


# -- bad input: one line, exit 1, nothing written -----------------------------------------


def test_nothing_to_export_without_runs_or_feedback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    one_line_error(run_cli(None, "export", "--out", str(out)), "nothing to export")
    assert not out.exists()


def test_a_run_whose_folder_is_gone(tmp_path: Path) -> None:
    give_feedback()
    run_id, run_dir = record_run()
    shutil.rmtree(run_dir)
    out = tmp_path / "out"
    one_line_error(run_cli(None, "export", "--out", str(out)), f"the folder of run {run_id}")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--run", "7"], "no learning run 7"),
        (["--current", "--format", "csv"], "--format must be one of jsonl, parquet"),
        (["--run", "1", "--current"], "not both"),
        (["--current", "--out", "IS_A_FILE"], "is a file"),
        (["--current", "--no-out"], "give --out DIR"),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, args: list[str], needle: str) -> None:
    give_feedback()
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    out = tmp_path / "out"
    if "--no-out" in args:
        argv = [a for a in args if a != "--no-out"]
    else:
        argv = [str(a_file) if a == "IS_A_FILE" else a for a in args]
        argv += [] if "--out" in argv else ["--out", str(out)]
    one_line_error(run_cli(None, "export", *argv), needle)
    assert not out.exists()
    assert a_file.read_text() == "keep"
