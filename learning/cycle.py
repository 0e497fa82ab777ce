"""One learning cycle: feedback -> snapshot -> trainer child -> gate -> new version.

Steps, each leaving the system consistent if the process is killed right after it:

1. clean the feedback, split it by thread into train and held-out parts, build the
   datasets the method trains on (pure, learning/snapshot.py);
2. record the run and its snapshot (which feedback rows went into which dataset, a
   content hash, the quality report) and write the snapshot files into ``runs/run-N/``;
3. train and measure in a child process (``python -m learning.trainer``), in its own
   session so a crash, OOM or Ctrl-C there never reaches the chat; the database is
   released meanwhile so other learnloop commands can use it;
4. let the gate decide (learning/gate.py), move the adapter into ``adapters/<version>/``
   with its config, metrics and gate results beside it, then register the version as
   promoted (and make it active) or rejected, in one transaction.

A kill before step 4 commits leaves the active version unchanged; the run stays
'running' until the next cycle finds its process gone and records it as failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.models import ResolvedModel
from learning.config import LearnConfig
from learning.gate import Decision, decide
from learning.quality import QualityReport
from learning.snapshot import (
    NothingToLearn,
    Snapshot,
    build_snapshot,
    control_set,
    gate_request,
    task_rows,
    write_json,
    write_snapshot,
)
from storage.home import adapters_dir, runs_dir
from storage.records import Version
from storage.store import Store

__all__ = ["CycleFailed", "CycleResult", "NothingToLearn", "run_cycle"]

Progress = Callable[[dict[str, Any]], None]


class CycleFailed(RuntimeError):
    """The trainer failed; the run is recorded as failed and nothing changed."""


@dataclass(frozen=True)
class CycleResult:
    version: str
    parent: str
    run_id: int
    method: str
    promoted: bool
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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 2)
        return out


def pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_run(
    store: Store, model: ResolvedModel, config: LearnConfig
) -> tuple[int, Path, Snapshot]:
    """Steps 1-2: build the snapshot, record run + snapshot, write the snapshot files."""
    store.fail_stale_runs(pid_alive)
    running = store.running_run()
    if running is not None:
        raise NothingToLearn(f"learning run {running} is still running; wait for it to finish")
    snap = build_snapshot(store.feedback_examples(), config)
    task = task_rows(config)  # a bad --eval-file fails here, before anything is recorded
    data = snap.data
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    run_id = store.start_run(data.method, config.to_dict(), "", os.getpid())
    run_dir = root / f"run-{run_id}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    write_snapshot(
        run_dir, snap, model, config, gate_request(store, model, config), control_set(store), task
    )
    store.record_snapshot(
        run_id,
        data.content_hash(),
        snap.upto,
        {
            "sft": data.sft_feedback,
            "dpo": data.dpo_feedback,
            "kto": data.kto_feedback,
            "heldout": snap.heldout_ids,
        },
        {"sft": len(data.sft), "dpo": len(data.dpo), "kto": len(data.kto)},
        asdict(snap.quality),
    )
    store.set_run_dir(run_id, str(run_dir))
    return run_id, run_dir, snap


def train_in_child(run_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Step 3: run the trainer child, relay its progress lines, return its metrics."""
    log = (run_dir / "trainer.stderr").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "learning.trainer", str(run_dir)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    seen = 0
    try:
        while child.poll() is None:
            time.sleep(0.2)
            seen = _relay(run_dir / "progress.jsonl", seen, progress)
        _relay(run_dir / "progress.jsonl", seen, progress)
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        log.close()
    if child.returncode != 0:
        lines = (run_dir / "trainer.stderr").read_text().strip().splitlines()
        last = next((line for line in reversed(lines) if line.strip()), "no output")
        raise CycleFailed(f"training failed (exit {child.returncode}): {last}")
    metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    return metrics


def progress_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete line of a run's progress.jsonl (stage, step, total, loss, t)."""
    path = run_dir / "progress.jsonl"
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line still being written
    return events


def latest_progress(run_dir: Path) -> dict[str, Any] | None:
    """The last complete line of a run's progress.jsonl."""
    events = progress_events(run_dir)
    return events[-1] if events else None


def _relay(path: Path, seen: int, progress: Progress | None) -> int:
    if not path.exists():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        if progress and line.strip():
            try:
                progress(json.loads(line))
            except json.JSONDecodeError:
                return seen  # a line still being written: read it next time
        seen += 1
    return seen


def _gate_record(measured: dict[str, Any] | None, decision: Decision) -> dict[str, Any]:
    """The gate's numbers without the control answers (those get their own table)."""
    summary: dict[str, Any] = {**decision.to_dict()}
    if measured is not None:
        summary["active_version"] = measured["active_version"]
        for side in ("candidate", "active"):
            summary[side] = {k: v for k, v in measured[side].items() if k != "control_answers"}
        summary["base_control"] = measured.get("base_control")
    return summary


def publish(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    run_id: int,
    run_dir: Path,
    snap: Snapshot,
    metrics: dict[str, Any],
    who: str,
) -> tuple[Version, Decision]:
    """Step 4: gate, move the adapter into its version folder, register it."""
    measured_path = run_dir / "gate.json"
    measured = json.loads(measured_path.read_text()) if measured_path.exists() else None
    decision = decide(measured, config)
    parent = store.active_version()
    version_id = store.next_version_id()
    target = adapters_dir() / version_id
    adapters_dir().mkdir(parents=True, exist_ok=True)
    if target.exists():  # left by a cycle killed before it registered: never active
        shutil.rmtree(target)
    os.replace(run_dir / "adapter", target)
    data, gate = snap.data, _gate_record(measured, decision)
    write_json(
        target / "learnloop-config.json",
        {
            "version": version_id,
            "parent": parent,
            "base_model": model.name,
            "base_model_path": model.path,
            "run_id": run_id,
            "method": data.method,
            "learn_config": config.to_dict(),
        },
    )
    write_json(target / "metrics.json", metrics)
    write_json(target / "gate.json", gate)
    version = Version(
        id=version_id,
        parent=parent,
        run_id=run_id,
        method=data.method,
        base_model=model.name,
        adapter_path=str(target),
        sft_count=len(data.sft),
        dpo_count=len(data.dpo),
        kto_count=len(data.kto),
        metrics=metrics,
        created_at=datetime.now(),
        status="promoted" if decision.promote else "rejected",
        gate=gate,
    )
    store.add_version(version, activate=decision.promote, who=who, why=f"learning run {run_id}")
    if measured is not None:
        store.record_control_answers(version_id, measured["candidate"]["control_answers"])
        if not store.control_answers(measured["active_version"]):
            store.record_control_answers(
                measured["active_version"], measured["active"]["control_answers"]
            )
    return version, decision


def run_cycle(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    *,
    progress: Progress | None = None,
    who: str = "learnloop learn",
) -> CycleResult:
    """Run one whole learning cycle; raise NothingToLearn or CycleFailed if none results."""
    started = time.perf_counter()
    run_id, run_dir, snap = prepare_run(store, model, config)
    return complete_cycle(
        store, model, config, (run_id, run_dir, snap), progress=progress, who=who, since=started
    )


def complete_cycle(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    prepared: tuple[int, Path, Snapshot],
    *,
    progress: Progress | None = None,
    who: str = "learnloop learn",
    since: float | None = None,
) -> CycleResult:
    """Steps 3-5 of a run :func:`prepare_run` recorded: train, judge, publish. The server
    answers with the run id after step 2 and completes the cycle in a thread."""
    started = since if since is not None else time.perf_counter()
    run_id, run_dir, snap = prepared
    store.release()  # other processes may use the database while the child trains
    try:
        metrics = train_in_child(run_dir, progress)
    except KeyboardInterrupt:
        store.fail_run(run_id, "interrupted by the user (Ctrl-C)")
        raise
    except CycleFailed as exc:
        store.fail_run(run_id, str(exc))
        raise
    version, decision = publish(store, model, config, run_id, run_dir, snap, metrics, who)
    data = snap.data
    return CycleResult(
        version=version.id,
        parent=version.parent,
        run_id=run_id,
        method=version.method,
        promoted=decision.promote,
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
    )
