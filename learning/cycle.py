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
   in one transaction; keep the control scores measured (learning/publish.py,
   learning/control_cache.py).

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

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from learnloop.learning.child import (
    Cancelled,
    CycleFailed,
    DiskFull,
    Progress,
    disk_writes,
    train_in_child,
)
from learnloop.learning.config import LearnConfig
from learnloop.learning.models import ResolvedModel
from learnloop.learning.processes import launch_config
from learnloop.learning.publish import HandedOver, publish, publish_handed_over
from learnloop.learning.quality import QualityReport
from learnloop.learning.snapshot import (
    Given,
    NothingToLearn,
    Snapshot,
    build_snapshot,
    control_set,
    gate_request,
    start_from,
    task_rows,
    write_snapshot,
)
from learnloop.storage.home import pid_alive, runs_dir
from learnloop.storage.records import FeedbackExample, SnapshotRecord
from learnloop.storage.store import Store, StoreError

__all__ = [
    "Cancelled",
    "CycleFailed",
    "CycleResult",
    "DiskFull",
    "HandedOver",
    "NothingToLearn",
    "publish_handed_over",
    "run_cycle",
]


FEDERATED = "federated"  # the method of a run that adopts a federated round's adapter


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
    store: Store, model: ResolvedModel, config: LearnConfig, given: Given | None = None
) -> tuple[int, Path, Snapshot]:
    """Steps 1-2: build the snapshot, write its files, then record the run in one
    transaction. On any failure neither the run's row nor its folder is left. ``given``:
    the run starts from weights no version here holds (a federated round's); with its
    ``train`` false the run is method 'federated' and only gates them."""
    store.fail_stale_runs(pid_alive)
    running = store.running_run()
    if running is not None:
        raise NothingToLearn(f"learning run {running} is still running; wait for it to finish")
    examples = store.feedback_examples()
    if not config.force:
        nothing_new(store, examples)
    real_users = frozenset(key.name for key in store.api_keys())
    active, control = store.active_version(), control_set(store)
    start = start_from(store, model, config, active) if given is None else None
    snap = build_snapshot(examples, config, real_users, start.since if start else None)
    task = task_rows(config)  # a bad --eval-file fails here, before anything is recorded
    launch_config(config.accelerate_config)  # and a missing --accelerate-config
    if config.gate and not config.promote_without_heldout:
        judgeable(snap, task)
    gate = gate_request(store, model, config, active, control)
    run_id = store.reserve_run_id()
    run_dir = runs_dir() / f"run-{run_id}"
    try:
        with disk_writes(f"the snapshot of run {run_id}", run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            write_snapshot(run_dir, snap, model, config, gate, control, task, start, given)
        store.record_prepared_run(
            run_id,
            method=FEDERATED if given and not given.train else snap.data.method,
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
