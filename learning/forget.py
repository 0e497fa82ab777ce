"""Forgetting a person, the files' part: what a forget's rows left on disk goes too.

storage/forgetting.py deletes the rows and retires the versions in one transaction, and
records there which files they left; :func:`delete_files` then removes:

1. each retired version's adapter folder, and its llama.cpp copy in the machine's cache
   (agent/llama_engine.py converts adapters into ``models/lora/<checksum>.gguf``);
2. in each run folder whose snapshot held a forgotten row, everything but the files that
   hold no user's words (:data:`KEPT`): the frozen datasets, the gate's inputs and
   results, the trainer's log, a candidate adapter;
3. the retired versions' control scores (their greedy answers) in the control cache;

records that they are gone, and has the store rewrite its file (storage/connection.py):
DuckDB leaves deleted rows' bytes in the blocks it frees.

Invariant: each step may run again. A forget killed before its files went is finished by
the next forget, of anyone (:func:`finish_forgets`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from learnloop.learning import control_cache
from learnloop.storage.forgetting import ForgetFiles
from learnloop.storage.home import model_cache_dir
from learnloop.storage.store import Store

# What a run folder keeps after a forget: numbers, losses and counts per user, no text.
KEPT = frozenset({"metrics.json", "progress.jsonl", "quality.json"})


def finish_forgets(store: Store) -> None:
    """Delete the files of every forget whose files are not all gone, then rewrite the
    database file so that no deleted row's bytes stay in it."""
    for forget_id, files in store.files_left():
        delete_files(files)
        store.files_deleted(forget_id)
    store.rewrite()


def delete_files(files: ForgetFiles) -> None:
    for path in files.adapter_paths:
        shutil.rmtree(path, ignore_errors=True)
    for checksum in files.checksums:
        (model_cache_dir() / "lora" / f"{checksum}.gguf").unlink(missing_ok=True)
    for run_dir in files.run_dirs:
        scrub_run(Path(run_dir))
    control_cache.drop(files.versions)


def scrub_run(run_dir: Path) -> None:
    """Delete everything in ``run_dir`` but :data:`KEPT`."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.name in KEPT:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
