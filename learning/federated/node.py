"""A node's side of a federated round, on its own data root: train, then adopt.

A node is an ordinary learnloop data root. In each round it

1. **trains** (:func:`train_round`): builds its snapshot as a cycle does (cleaned, split
   by thread, held-out threads kept back), writes it into a scratch folder under the
   data root, and trains in the trainer child from the round's global adapter (round 1:
   a fresh adapter from the federation's seed, the same on every node); it returns only
   the adapter's tensors and the number of examples that trained them;
2. **adopts** (:func:`adopt_round`): gates the round's aggregated adapter on its own
   held-out feedback and control set, exactly as a cycle gates a candidate, and
   registers it as a version of method 'federated' with its lineage (federation, round,
   nodes, aggregation); promoted (and active) when the gate says so, as any version.

Invariants: nothing but tensors and counts leaves this module (the caller puts them on
the wire); the scratch folder, which holds the node's feedback text, is deleted however
the round ends (a killed round's folder is deleted at the next one), so a forget never
misses text in it; an adopted version records the node's training rows, so forgetting
one of its users retires it (storage/forgetting.py) like any version that learned them.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from learnloop.learning.child import Progress, disk_writes, train_in_child
from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import CycleResult, complete_cycle, prepare_run
from learnloop.learning.federated.aggregate import Adapter
from learnloop.learning.models import ResolvedModel
from learnloop.learning.snapshot import Given, build_snapshot, control_set, write_snapshot
from learnloop.storage.home import data_root
from learnloop.storage.records import FeedbackExample
from learnloop.storage.store import Store

SCRATCH = "federation"  # under the data root; only ever holds a round in progress
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Trained:
    adapter: Adapter
    examples: int  # training rows (SFT examples + DPO pairs + KTO rows)
    metrics: dict[str, Any]  # the trainer's (losses, seconds, CPU-seconds)


def save_weights(adapter: Adapter, path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in adapter.items()}, str(path))


def load_weights(path: Path) -> Adapter:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


@contextlib.contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A private folder for one round's files under the data root, deleted afterwards,
    along with any left by a killed round."""
    root = data_root() / SCRATCH
    shutil.rmtree(root, ignore_errors=True)
    folder = root / name
    with disk_writes("a federated round's files", folder):
        folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(root, ignore_errors=True)


def train_round(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    start: Adapter | None,
    progress: Progress | None = None,
) -> Trained:
    """Train this node's snapshot from ``start`` (None: a fresh adapter seeded by
    ``config.seed``); raises NothingToLearn when the node has nothing to train on."""
    examples = store.feedback_examples()
    real_users = frozenset(key.name for key in store.api_keys())
    control = control_set(store)
    store.release()
    return train_examples(examples, real_users, control, model, config, start, progress)


def train_examples(
    examples: list[FeedbackExample],
    real_users: frozenset[str],
    control: list[dict[str, str]],
    model: ResolvedModel,
    config: LearnConfig,
    start: Adapter | None = None,
    progress: Progress | None = None,
    keep: Path | None = None,
) -> Trained:
    """Train on ``examples`` as a cycle's snapshot would (the held-out threads kept back),
    in the trainer child, in a scratch folder; ``keep``: copy the adapter folder there
    (the simulation scores it afterwards)."""
    snap = build_snapshot(examples, config, real_users)
    with scratch("train") as folder:
        given = None
        if start is not None:
            save_weights(start, folder / "start.safetensors")
            given = Given(folder / "start.safetensors", train=True, lineage={})
        run_dir = folder / "run"
        run_dir.mkdir()
        no_gate = replace(config, gate=False)
        write_snapshot(run_dir, snap, model, no_gate, None, control, [], None, given)
        metrics = train_in_child(run_dir, progress)
        adapter = load_weights(run_dir / "adapter" / WEIGHTS_FILE)
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(run_dir / "adapter", keep)
    data = snap.data
    return Trained(adapter, len(data.sft) + len(data.dpo) + len(data.kto), metrics)


def adopt_round(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    adapter: Adapter,
    lineage: dict[str, Any],
    progress: Progress | None = None,
) -> CycleResult:
    """Gate the round's global ``adapter`` here and register it as a version."""
    who = f"federation {lineage.get('federation', '?')}"
    with scratch("adopt") as folder:
        weights = folder / WEIGHTS_FILE
        save_weights(adapter, weights)
        given = Given(weights, train=False, lineage=lineage)
        prepared = prepare_run(store, model, replace(config, force=True), given)
    return complete_cycle(store, model, config, prepared, progress=progress, who=who)
