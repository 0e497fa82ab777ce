"""One learning cycle: feedback -> snapshot -> trainer child -> gate -> new version.

Steps, each leaving the system consistent if the process is killed right after it:

1. clean the feedback, split it by thread into train and held-out parts, build the
   datasets the method trains on (pure, learning/snapshot.py);
2. write the snapshot files into ``runs/run-N/`` (N reserved first), then record the
   run, its snapshot (which feedback rows went into which dataset, a content hash, the
   quality report) and the version active now, in one transaction;
3. train and measure in a child process (``python -m learnloop.learning.trainer``), in
   its own session so a crash, OOM or Ctrl-C there never reaches the chat; the database
   is released meanwhile so other learnloop commands can use it;
4. let the gate decide (learning/gate.py), move the adapter into ``adapters/<version>/``
   with its config, metrics and gate results beside it, take its checksum, then register
   the version as promoted (and make it active) or rejected, with its control answers,
   in one transaction; keep the control scores measured (learning/control_cache.py).

Before step 1 commits to anything, a cycle that could only waste time is refused with
:class:`NothingToLearn`: no feedback since the last cycle that made a version (unless
``--force``), or nothing the gate could judge a candidate by. During step 3 a cancel
(:func:`~learnloop.learning.child.request_cancel`, from any process) stops the trainer;
the run is recorded as cancelled.

Invariants:

- the candidate is measured against the version active when its run was prepared, and
  that version is its ``parent``. If the active version changed while the run trained
  (an ``activate``, a ``rollback``), the candidate is not promoted over that choice: it
  is recorded as rejected with the reason, and ``learnloop activate`` can still use it.
  The check and the activation are one transaction, so no switch slips in between;
- a kill before step 4 commits leaves the active version unchanged; the run stays
  'running' until the next cycle finds its process gone and records it as failed;
- a full disk ends the cycle with :class:`DiskFull`, whose message says "no space left
  on device", whether the trainer child or the cycle's own writes ran out of space.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from learnloop.learning import control_cache
from learnloop.learning.adapters import checksum
from learnloop.learning.child import (
    Cancelled,
    CycleFailed,
    DiskFull,
    Progress,
    disk_writes,
    train_in_child,
)
from learnloop.learning.config import LearnConfig
from learnloop.learning.forget import scrub_run
from learnloop.learning.gate import Decision, decide
from learnloop.learning.models import ResolvedModel
from learnloop.learning.quality import QualityReport
from learnloop.learning.snapshot import (
    NothingToLearn,
    Snapshot,
    build_snapshot,
    control_set,
    gate_request,
    measured_against,
    start_from,
    task_rows,
    write_json,
    write_snapshot,
)
from learnloop.storage.errors import Conflict
from learnloop.storage.home import adapters_dir, pid_alive, runs_dir
from learnloop.storage.records import FeedbackExample, SnapshotRecord, Version
from learnloop.storage.registry import ActiveChanged, ForgottenWhileTraining
from learnloop.storage.store import BASE_VERSION, Store, StoreError

__all__ = ["Cancelled", "CycleFailed", "CycleResult", "DiskFull", "NothingToLearn", "run_cycle"]


class HandedOver(Exception):
    """Training finished but another process (a server started meanwhile) holds the
    database: it must publish run ``run_id`` (:func:`publish_handed_over`)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"learning run {run_id} is handed over for publishing")
        self.run_id = run_id


@dataclass(frozen=True)
class CycleResult:
    version: str
    parent: str
    run_id: int
    method: str
    promoted: bool
    summary: str  # the verdict in one line of plain words
    reasons: list[str]
    sft_examples: int
    dpo_pairs: int
    kto_rows: int
    heldout: int
    feedback_used: int
    quality: QualityReport
    metrics: dict[str, Any]
    gate: dict[str, Any] | None
    adapter_path: str
    seconds: float
    started_from: str | None = None  # the version whose adapter it trained further
    then: dict[str, Any] | None = None  # a --start both cycle's second, fresh run

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 2)
        return out


def prepare_run(
    store: Store, model: ResolvedModel, config: LearnConfig
) -> tuple[int, Path, Snapshot]:
    """Steps 1-2: build the snapshot, write its files, then record the run in one
    transaction. On any failure neither the run's row nor its folder is left."""
    store.fail_stale_runs(pid_alive)
    running = store.running_run()
    if running is not None:
        raise NothingToLearn(f"learning run {running} is still running; wait for it to finish")
    examples = store.feedback_examples()
    if not config.force:
        nothing_new(store, examples)
    real_users = frozenset(key.name for key in store.api_keys())
    active, control = store.active_version(), control_set(store)
    start = start_from(store, model, config, active)
    snap = build_snapshot(examples, config, real_users, start.since if start else None)
    task = task_rows(config)  # a bad --eval-file fails here, before anything is recorded
    if config.gate and not config.promote_without_heldout:
        judgeable(snap, task)
    gate = gate_request(store, model, config, active, control)
    run_id = store.reserve_run_id()
    run_dir = runs_dir() / f"run-{run_id}"
    try:
        with disk_writes(f"the snapshot of run {run_id}", run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            write_snapshot(run_dir, snap, model, config, gate, control, task, start)
        store.record_prepared_run(
            run_id,
            method=snap.data.method,
            config=config.to_dict(),
            run_dir=str(run_dir),
            pid=os.getpid(),
            active_at_start=active,
            snapshot=snapshot_record(snap),
        )
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_id, run_dir, snap


def nothing_new(store: Store, examples: list[FeedbackExample]) -> None:
    """Raise NothingToLearn when no feedback arrived since the last cycle that made a
    version: training again on the same feedback would only repeat it."""
    last = store.last_learned()
    if last is None or not examples or max(e.feedback_id for e in examples) > last[1]:
        return
    raise NothingToLearn(
        f"no new feedback since learning run {last[0]} made {last[2]}; "
        "give some feedback first, or `learn --force` to train on the same feedback again"
    )


def judgeable(snap: Snapshot, task: list[dict[str, Any]]) -> None:
    """Raise NothingToLearn, before anything is trained or measured, when the gate would
    have nothing to judge the candidate by (it would only reject it)."""
    if snap.heldout_pairs or snap.heldout_fixes or task or snap.taught_fixes or snap.taught_liked:
        return
    raise NothingToLearn(
        "the gate would have nothing to judge a new version by: no correction, no liked "
        "answer, no held-out feedback and no --eval-file; give a correction or a thumbs-up, "
        "or learn with --promote-without-heldout true"
    )


def snapshot_record(snap: Snapshot) -> SnapshotRecord:
    data = snap.data
    return SnapshotRecord(
        content_hash=data.content_hash(),
        upto=snap.upto,
        rows={
            "sft": data.sft_feedback,
            "dpo": data.dpo_feedback,
            "kto": data.kto_feedback,
            "heldout": snap.heldout_ids,
        },
        counts={"sft": len(data.sft), "dpo": len(data.dpo), "kto": len(data.kto)},
        quality=asdict(snap.quality),
    )


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
    started = store.get_run(run_id).active_at_start or store.active_version()
    parent = measured["active_version"] if measured else measured_against(store, model, started)[0]
    decision = decide(measured, config)
    if store.active_version() != started:
        decision = superseded(decision, started, store.active_version(), parent)
    version_id = store.next_version_id()
    target = adapters_dir() / version_id
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
                "method": store.get_run(run_id).method,
                "learn_config": config.to_dict(),
            },
        )
        write_json(target / "metrics.json", metrics)
    method = store.get_run(run_id).method
    version = _version(version_id, parent, run_id, model, target, method, counts, metrics)
    request = json.loads((run_dir / "request.json").read_text())
    version = replace(version, started_from=request.get("started_from"))
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


def _version(
    version_id: str,
    parent: str,
    run_id: int,
    model: ResolvedModel,
    target: Path,
    method: str,
    counts: dict[str, int],
    metrics: dict[str, Any],
) -> Version:
    return Version(
        id=version_id,
        parent=parent,
        run_id=run_id,
        method=method,
        base_model=model.name,
        base_fingerprint=model.fingerprint,
        adapter_path=str(target),
        sft_count=counts["sft"],
        dpo_count=counts["dpo"],
        kto_count=counts["kto"],
        metrics=metrics,
        created_at=datetime.now(),
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


def run_cycle(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    *,
    progress: Progress | None = None,
    who: str = "learnloop learn",
    publish_here: Callable[[], bool] = lambda: True,
) -> CycleResult:
    """Run one whole learning cycle; raise NothingToLearn or CycleFailed if none results
    (or HandedOver: see :func:`complete_cycle`)."""
    started = time.perf_counter()
    prepared = prepare_run(store, model, config)
    result = complete_cycle(
        store, model, config, prepared, progress=progress, who=who, since=started,
        publish_here=publish_here,
    )  # fmt: skip
    second = fresh_after(config, result)
    if second is None:
        return result
    try:
        then = run_cycle(
            store, model, second, progress=progress, who=who, publish_here=publish_here
        )
    except NothingToLearn:  # another cycle got in first
        return result
    return replace(result, then=then.to_dict())


def fresh_after(config: LearnConfig, first: CycleResult) -> LearnConfig | None:
    """The second run of a cycle whose first run trained the active adapter further: a
    fresh adapter on the same feedback, gated against whichever of the two the gate kept,
    so the better one ends active. ``--start both`` always has one; ``--start auto``
    when the gate rejected the first (continual training drifts: measured, after three
    or four steps candidates lost control prompts and were rejected one after another).
    None: no second run."""
    wanted = config.start == "both" or (config.start == "auto" and not first.promoted)
    if not wanted or first.started_from is None:
        return None
    return replace(config, start="fresh", force=True)


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


def complete_cycle(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    prepared: tuple[int, Path, Snapshot],
    *,
    progress: Progress | None = None,
    who: str = "learnloop learn",
    since: float | None = None,
    publish_here: Callable[[], bool] = lambda: True,
) -> CycleResult:
    """Steps 3-5 of a run :func:`prepare_run` recorded: train, judge, publish. The server
    answers with the run id after step 2 and completes the cycle in a thread.

    ``publish_here`` says, once training is done, whether this process may still open the
    database; if not (a server started meanwhile and holds it), :class:`HandedOver`
    tells the caller to have that server publish the trained run."""
    started = since if since is not None else time.perf_counter()
    run_id, run_dir, snap = prepared
    store.release()  # other processes may use the database while the child trains
    try:
        metrics = train_in_child(run_dir, progress)
    except Cancelled as exc:
        store.cancel_run(run_id, "cancelled; the active version is unchanged")
        raise Cancelled(
            f"learning run {run_id} cancelled; the active version is unchanged"
        ) from exc
    except KeyboardInterrupt:
        store.fail_run(run_id, "interrupted by the user (Ctrl-C)")
        raise
    except CycleFailed as exc:
        store.fail_run(run_id, str(exc))
        raise
    counts = snapshot_record(snap).counts
    try:
        if not publish_here():
            raise HandedOver(run_id)
        version, decision = publish(store, model, config, run_id, run_dir, counts, metrics, who)
    except CycleFailed as exc:  # raised before the version's transaction: nothing published
        store.fail_run(run_id, str(exc))
        raise
    except StoreError:
        if publish_here():
            raise
        raise HandedOver(run_id) from None  # a server took the database while we trained
    data = snap.data
    return CycleResult(
        version=version.id,
        parent=version.parent,
        run_id=run_id,
        method=version.method,
        promoted=decision.promote,
        summary=decision.summary,
        reasons=decision.reasons,
        sft_examples=len(data.sft),
        dpo_pairs=len(data.dpo),
        kto_rows=len(data.kto),
        heldout=len(snap.heldout_ids),
        feedback_used=len(set(data.sft_feedback) | set(data.dpo_feedback) | set(data.kto_feedback)),
        quality=snap.quality,
        metrics=metrics,
        gate=version.gate,
        adapter_path=version.adapter_path,
        seconds=time.perf_counter() - started,
        started_from=version.started_from,
    )
