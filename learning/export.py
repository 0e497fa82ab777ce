"""Export a learning snapshot as TRL conversational datasets, for use outside learnloop.

The source is either a recorded run's frozen snapshot (the files in ``runs/run-N/``, see
learning/snapshot.py) or the current feedback, built exactly as the next
``learnloop learn`` with default settings would build it, with nothing recorded. The
output folder receives, as ``NAME.jsonl`` or ``NAME.parquet``:

- ``sft``, ``dpo``, ``kto``: the datasets the run trains on (TRL's prompt-completion,
  preference and unpaired-preference formats; for ``SFTTrainer``, ``DPOTrainer``,
  ``KTOTrainer``);
- ``heldout_pairs``, ``heldout_fixes``: the held-out feedback the gate judges with
  (never trained on; preference pairs and corrections, usable as ``eval_dataset``);
- ``manifest.json``: the source, the content hash, the format and, per file, its rows,
  columns, trainer and split.

Invariants:

- Every input is read and checked (TRL's shapes, by learning/request.py's reader) before
  the first byte is written: bad input raises :class:`ExportError` (or ``NothingToLearn``
  when there is no feedback) and leaves the output folder as it was.
- The output folder must be missing or empty. With ``force`` only files an export writes
  are replaced, and stale ones from an earlier export removed, so the folder never mixes
  two exports; no other file there is touched.
- Empty datasets get no file (an empty Parquet file has no columns to infer a type from).
- Each file lands under a temporary name and is renamed into place; ``manifest.json`` is
  written last, so a folder with a manifest holds a complete export.
- The rows are the snapshot's rows with TRL's columns: JSONL lines are ``json.dumps`` of
  them, as the snapshot writes them; Parquet holds the same nested message lists (a
  message key that only some messages have reads back as null in the others).
- The manifest is deterministic: exporting the same snapshot twice gives equal folders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnloop.learning.config import LearnConfig
from learnloop.learning.datasets import Datasets
from learnloop.learning.request import DPO_KEYS, KTO_KEYS, SFT_KEYS, TrainerError, read_rows
from learnloop.learning.snapshot import NothingToLearn, Snapshot, build_snapshot
from learnloop.storage.errors import UsageError
from learnloop.storage.records import FeedbackExample, Run

Row = dict[str, Any]

FORMATS = ("jsonl", "parquet")
MANIFEST = "manifest.json"
CURRENT = "current feedback"


class ExportError(UsageError):
    """The export cannot be made as asked; the message says why. Nothing was written."""


@dataclass(frozen=True)
class Part:
    """One dataset of a snapshot: its file stem, TRL columns and the trainer it suits."""

    name: str
    keys: tuple[str, ...]
    trainer: str
    split: str  # "train": what the run trains on; "eval": held out, never trained on
    kind: str  # TRL's name for the dataset type


PARTS = (
    Part("sft", SFT_KEYS, "SFTTrainer", "train", "prompt-completion"),
    Part("dpo", DPO_KEYS, "DPOTrainer", "train", "preference"),
    Part("kto", KTO_KEYS, "KTOTrainer", "train", "unpaired preference"),
    Part("heldout_pairs", DPO_KEYS, "DPOTrainer", "eval", "preference"),
    Part("heldout_fixes", SFT_KEYS, "SFTTrainer", "eval", "prompt-completion"),
)


@dataclass(frozen=True)
class Export:
    """What gets written: every part's rows (empty parts included) and where they came
    from (``run_id`` is None for the current feedback)."""

    source: str
    run_id: int | None
    rows: dict[str, list[Row]]

    def content_hash(self) -> str:
        """The hash the store records for a run's snapshot (of the training rows only)."""
        return Datasets(
            sft=self.rows["sft"], dpo=self.rows["dpo"], kto=self.rows["kto"]
        ).content_hash()


# -- choosing and reading the source (no writes) -------------------------------------------
# An export is: check_format + check_out_dir, read the source (from_run or current_export,
# in the process that holds the database), then write_export.


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def pick_run(runs: list[Run], run_id: int | None) -> Run | None:
    """Run ``run_id``, or by default the newest run with a snapshot (None: there is none).

    A run without a snapshot stopped before its data was recorded: nothing to export."""
    if run_id is None:
        return next((r for r in reversed(runs) if r.snapshot_id is not None), None)
    run = next((r for r in runs if r.id == run_id), None)
    if run is None:
        known = f"runs so far: {runs[0].id}-{runs[-1].id}" if runs else "there are no runs yet"
        raise ExportError(f"no learning run {run_id} ({known})")
    if run.snapshot_id is None:
        raise ExportError(f"run {run_id} has no snapshot: it stopped before its data was written")
    return run


def from_run(run: Run) -> Export:
    """Read and check a run's snapshot files. Held-out files may be missing (runs from
    before the gate); at least one training row must be there."""
    folder = Path(run.run_dir) if run.run_dir else None
    if folder is None or not folder.is_dir():
        raise ExportError(
            f"the folder of run {run.id} is gone ({run.run_dir or 'never recorded'}); "
            "export another run or --current"
        )
    try:
        rows = {p.name: read_rows(folder, f"{p.name}.jsonl", p.keys) for p in PARTS}
    except TrainerError as exc:
        raise ExportError(f"run {run.id}'s snapshot in {folder} is damaged: {exc}") from exc
    export = Export(f"run {run.id}", run.id, rows)
    if not any(rows[p.name] for p in PARTS if p.split == "train"):
        raise ExportError(f"run {run.id}'s snapshot in {folder} has no training rows")
    return export


def from_snapshot(snap: Snapshot) -> Export:
    data = snap.data
    rows = {
        "sft": data.sft,
        "dpo": data.dpo,
        "kto": data.kto,
        "heldout_pairs": snap.heldout_pairs,
        "heldout_fixes": snap.heldout_fixes,
    }
    return Export(CURRENT, None, rows)


def check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; --out takes a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(
            f"{out_dir} is not empty; choose an empty or new folder, or pass --force to "
            "replace an earlier export there"
        )


# -- writing -------------------------------------------------------------------------------


def _jsonl(path: Path, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _parquet(path: Path, rows: list[Row]) -> None:
    import pyarrow as pa  # only here: a JSONL export needs no pyarrow
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


_WRITERS: dict[str, Callable[[Path, list[Row]], None]] = {"jsonl": _jsonl, "parquet": _parquet}


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _land(path: Path, write: Callable[[Path, Any], None], value: Any) -> None:
    """Write under a temporary name, then rename: no file is ever seen half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp, value)
    os.replace(tmp, path)


def _clear_earlier_export(out_dir: Path) -> None:
    """Remove only what an export writes (the manifest first: no longer complete)."""
    (out_dir / MANIFEST).unlink(missing_ok=True)
    for part in PARTS:
        for fmt in FORMATS:
            (out_dir / f"{part.name}.{fmt}").unlink(missing_ok=True)


def has_tools(rows: list[Row]) -> bool:
    """Whether rows have TRL's ``tools`` column (trajectories of turns offered tools)."""
    return any("tools" in row for row in rows)


def manifest_of(export: Export, fmt: str) -> dict[str, Any]:
    files = [
        {
            "file": f"{p.name}.{fmt}",
            "rows": len(export.rows[p.name]),
            "columns": [*p.keys, *(["tools"] if has_tools(export.rows[p.name]) else [])],
            "type": p.kind,
            "trainer": p.trainer,
            "split": p.split,
        }
        for p in PARTS
        if export.rows[p.name]
    ]
    return {
        "source": export.source,
        "run_id": export.run_id,
        "content_hash": export.content_hash(),
        "format": fmt,
        "dataset_format": "TRL conversational",
        "files": files,
    }


def write_export(export: Export, out_dir: Path, fmt: str) -> dict[str, Any]:
    """Write the non-empty parts and the manifest (last) into ``out_dir``; return it.
    The caller has checked ``out_dir`` (:func:`check_out_dir`)."""
    manifest = manifest_of(export, fmt)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc.strerror}") from exc
    _clear_earlier_export(out_dir)
    for part in PARTS:
        if export.rows[part.name]:
            _land(out_dir / f"{part.name}.{fmt}", _WRITERS[fmt], export.rows[part.name])
    _land(out_dir / MANIFEST, _json, manifest)
    return manifest


def current_export(examples: list[FeedbackExample]) -> Export:
    """The current feedback as the next default ``learn`` would snapshot it (pure
    :func:`build_snapshot`: no run is recorded)."""
    try:
        snap = build_snapshot(examples, LearnConfig())
    except NothingToLearn as exc:
        raise ExportError(f"nothing to export: {exc}") from exc
    return from_snapshot(snap)
