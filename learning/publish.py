"""Step 4 of a learning cycle: gate the trained candidate, move its adapter into
``adapters/<version>/`` with its config, metrics and verdict beside it, and register it
as promoted (and active) or rejected in one transaction (learning/cycle.py runs the
steps before).

Invariants:

- the version's folder is complete before its row exists: a kill in between leaves an
  unregistered folder, which the next publish of that id replaces; its checksum covers
  every file in it, the verdict included;
- a candidate is never promoted over a version someone made active while it trained,
  nor registered at all when a user it may have learned from was forgotten meanwhile
  (its adapter and its run's snapshot are deleted instead);
- a run trained by a process that could no longer open the database afterwards is
  published by the process that holds it (:class:`HandedOver`,
  :func:`publish_handed_over`), from the run's folder and the store alone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from learnloop.learning import control_cache
from learnloop.learning.adapters import checksum
from learnloop.learning.child import CycleFailed, disk_writes
from learnloop.learning.config import LearnConfig
from learnloop.learning.forget import scrub_run
from learnloop.learning.gate import Decision, decide
from learnloop.learning.models import ResolvedModel
from learnloop.learning.snapshot import measured_against, write_json
from learnloop.storage.errors import Conflict
from learnloop.storage.home import adapters_dir
from learnloop.storage.records import Version
from learnloop.storage.registry import ActiveChanged, ForgottenWhileTraining
from learnloop.storage.store import BASE_VERSION, Store


class HandedOver(Exception):
    """Training finished but another process (a server started meanwhile) holds the
    database: it must publish run ``run_id`` (:func:`publish_handed_over`)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"learning run {run_id} is handed over for publishing")
        self.run_id = run_id


def _gate_record(measured: dict[str, Any] | None, decision: Decision) -> dict[str, Any]:
    """The gate's numbers without the control answers (those get their own table)."""
    summary: dict[str, Any] = {**decision.to_dict()}
    if measured is not None:
        summary["active_version"] = measured["active_version"]
        for side in ("candidate", "active"):
            summary[side] = {k: v for k, v in measured[side].items() if k != "control_answers"}
        summary["base_control"] = measured.get("base_control")
        summary["kl"] = measured.get("kl")  # how far it moved from the active version
    return summary


def publish(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    run_id: int,
    run_dir: Path,
    counts: dict[str, int],
    metrics: dict[str, Any],
    who: str,
) -> tuple[Version, Decision]:
    """Step 4: gate, move the adapter into its version folder, register it. ``counts``
    are the snapshot's dataset sizes (the store has them too: :func:`publish_handed_over`).

    The parent is the version the candidate was measured against; a candidate is not
    promoted over a version someone made active while it trained."""
    measured_path = run_dir / "gate.json"
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else None
    run, now = store.get_run(run_id), store.active_version()
    started = run.active_at_start or now
    parent = measured["active_version"] if measured else measured_against(store, model, started)[0]
    decision = decide(measured, config)
    if now != started:
        decision = superseded(decision, started, now, parent)
    version_id = store.next_version_id()
    target = adapters_dir() / version_id
    request = json.loads((run_dir / "request.json").read_text())
    with disk_writes(f"the adapter of {version_id}", target):
        adapters_dir().mkdir(parents=True, exist_ok=True)
        if target.exists():  # left by a cycle killed before it registered: never active
            shutil.rmtree(target)
        move_folder(run_dir / "adapter", target)
        write_json(
            target / "learnloop-config.json",
            {
                "version": version_id,
                "parent": parent,
                "base_model": model.name,
                "base_model_path": model.path,
                "base_fingerprint": model.fingerprint,
                "run_id": run_id,
                "method": run.method,
                "learn_config": config.to_dict(),
                "lineage": request.get("lineage"),
            },
        )
        write_json(target / "metrics.json", metrics)
    version = Version(
        id=version_id,
        parent=parent,
        run_id=run_id,
        method=run.method,
        base_model=model.name,
        base_fingerprint=model.fingerprint,
        adapter_path=str(target),
        sft_count=counts["sft"],
        dpo_count=counts["dpo"],
        kto_count=counts["kto"],
        metrics=metrics,
        created_at=datetime.now(),
        started_from=request.get("started_from"),
        lineage=request.get("lineage"),
    )
    candidate = measured["candidate"]["control_answers"] if measured else None
    active = measured["active"]["control_answers"] if measured else None
    while True:
        version = _with_verdict(version, measured, decision, target)
        try:
            store.add_version(
                version,
                activate=decision.promote,
                who=who,
                why=f"learning run {run_id}",
                control_answers=candidate,
                parent_control=active,
                expect_active=started,
            )
        except ActiveChanged as exc:  # switched between the check above and now
            decision = superseded(decision, started, exc.active, parent)
            continue
        except ForgottenWhileTraining as exc:  # its adapter may have learned their rows
            shutil.rmtree(target, ignore_errors=True)
            scrub_run(run_dir)
            raise CycleFailed(str(exc)) from exc
        if measured is not None:  # only now: the version id is taken for good
            keep_control_scores(model, config, run_dir, version_id, measured)
        return version, decision


def keep_control_scores(
    model: ResolvedModel, config: LearnConfig, run_dir: Path, version_id: str, measured: Any
) -> None:
    """Keep the control scores of the (up to) three versions measured, for later cycles."""
    control = [json.loads(line) for line in (run_dir / "control.jsonl").read_text().splitlines()]
    sides = {
        version_id: measured["candidate"],
        measured["active_version"]: measured["active"],
        BASE_VERSION: measured.get("base_control") or {},
    }
    control_cache.keep(model, config, control, sides)


def move_folder(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; across file systems (``runs/`` mounted elsewhere)
    copy it beside the target first, so the target appears complete or not at all."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        os.replace(staging, target)
        shutil.rmtree(source)


def superseded(decision: Decision, started: str, now: str, parent: str) -> Decision:
    """The verdict once the active version changed from ``started`` to ``now`` during
    training: whatever the numbers said, not promoted over that switch."""
    reason = (
        f"the active version changed from {started} to {now} while this run trained; "
        f"it was measured against {parent}, so it is not promoted over {now}"
    )
    return Decision(
        False,
        [*decision.reasons, reason],
        f"not promoted: {now} was made active while it trained, and it is not put over that",
    )


def _with_verdict(
    version: Version, measured: dict[str, Any] | None, decision: Decision, target: Path
) -> Version:
    """Write the verdict beside the adapter (gate.json) and take the folder's checksum,
    which covers every file in it: the version as it is about to be registered."""
    gate = _gate_record(measured, decision)
    with disk_writes(f"the gate's verdict on {version.id}", target):
        write_json(target / "gate.json", gate)
        digest = checksum(target)
    return replace(
        version,
        status="promoted" if decision.promote else "rejected",
        gate=gate,
        checksum=digest,
    )


def publish_handed_over(
    store: Store, model: ResolvedModel, run_id: int, who: str
) -> tuple[Version, Decision]:
    """Publish run ``run_id``, trained by another process that could not open the database
    afterwards (:class:`HandedOver`): its folder holds the adapter, metrics and gate
    results, the store its settings and dataset sizes."""
    run = store.get_run(run_id)
    run_dir = Path(run.run_dir)
    if run.status != "running":
        raise Conflict(f"learning run {run_id} is {run.status}: there is nothing to publish")
    if not (run_dir / "adapter").is_dir() or not (run_dir / "metrics.json").is_file():
        raise Conflict(f"learning run {run_id} has not finished training: nothing to publish")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = LearnConfig(**run.config)
    counts = store.snapshot_counts(run_id)
    try:
        return publish(store, model, config, run_id, run_dir, counts, metrics, who)
    except CycleFailed as exc:
        store.fail_run(run_id, str(exc))
        raise
