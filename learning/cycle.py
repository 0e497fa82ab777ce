"""One learning cycle: feedback -> snapshot -> trainer child process -> new active version.

Steps, each leaving the system consistent if the process is killed right after it:

1. build the datasets from all feedback so far (pure builders, learning/datasets.py);
2. record the run and its snapshot (which feedback rows went into which dataset, a
   content hash) and write the snapshot files into ``runs/run-N/``;
3. train in a child process (``python -m learning.trainer``), in its own session so a
   crash, OOM or Ctrl-C there never reaches the chat; the database is released meanwhile
   so other learnloop commands can use it;
4. move the finished adapter into ``adapters/<version>/`` with its config and metrics
   beside it, then register the version and make it active in one transaction.

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
from learning.datasets import Datasets, build_datasets, choose_method, why_empty
from learning.quality import QualityReport, clean
from storage.home import adapters_dir, runs_dir
from storage.records import Version
from storage.store import Store

Progress = Callable[[dict[str, Any]], None]


class NothingToLearn(RuntimeError):
    """No cycle ran: the message says why."""


class CycleFailed(RuntimeError):
    """The trainer failed; the run is recorded as failed and nothing changed."""


@dataclass(frozen=True)
class CycleResult:
    version: str
    parent: str
    run_id: int
    method: str
    sft_examples: int
    dpo_pairs: int
    kto_rows: int
    feedback_used: int
    quality: QualityReport
    metrics: dict[str, Any]
    adapter_path: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "parent": self.parent,
            "run_id": self.run_id,
            "method": self.method,
            "sft_examples": self.sft_examples,
            "dpo_pairs": self.dpo_pairs,
            "kto_rows": self.kto_rows,
            "feedback_used": self.feedback_used,
            "quality": asdict(self.quality),
            "metrics": self.metrics,
            "adapter_path": self.adapter_path,
            "seconds": round(self.seconds, 2),
        }


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


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def prepare_run(
    store: Store, model: ResolvedModel, config: LearnConfig
) -> tuple[int, Path, Datasets, QualityReport]:
    """Steps 1-2: build datasets, record run + snapshot, write the snapshot files."""
    store.fail_stale_runs(pid_alive)
    running = store.running_run()
    if running is not None:
        raise NothingToLearn(f"learning run {running} is still running; wait for it to finish")
    examples = store.feedback_examples()
    cleaned, quality = clean(examples, max_user_share=config.max_user_share)
    built = build_datasets(cleaned)
    if built.empty:
        raise NothingToLearn(why_empty(examples))
    try:
        data = choose_method(built, config.method, config.min_pairs)
    except ValueError as exc:
        raise NothingToLearn(f"nothing to train with --method {config.method}: {exc}") from exc
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    run_id = store.start_run(data.method, config.to_dict(), "", os.getpid())
    run_dir = root / f"run-{run_id}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    _write_jsonl(run_dir / "sft.jsonl", data.sft)
    _write_jsonl(run_dir / "dpo.jsonl", data.dpo)
    _write_jsonl(run_dir / "kto.jsonl", data.kto)
    _write_json(run_dir / "quality.json", asdict(quality))
    _write_json(
        run_dir / "request.json",
        {
            "base_model": model.path,
            "config": config.to_dict(),
            "sft": "sft.jsonl",
            "dpo": "dpo.jsonl",
            "kto": "kto.jsonl",
        },
    )
    upto = max(e.feedback_id for e in examples)
    store.record_snapshot(
        run_id,
        data.content_hash(),
        upto,
        {"sft": data.sft_feedback, "dpo": data.dpo_feedback, "kto": data.kto_feedback},
        {"sft": len(data.sft), "dpo": len(data.dpo), "kto": len(data.kto)},
        asdict(quality),
    )
    store.set_run_dir(run_id, str(run_dir))
    return run_id, run_dir, data, quality


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


def publish(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    run_id: int,
    run_dir: Path,
    data: Datasets,
    metrics: dict[str, Any],
    who: str,
) -> Version:
    """Step 4: move the adapter into its version folder, register it, make it active."""
    parent = store.active_version()
    version_id = store.next_version_id()
    target = adapters_dir() / version_id
    adapters_dir().mkdir(parents=True, exist_ok=True)
    if target.exists():  # left by a cycle killed before it registered: never active
        shutil.rmtree(target)
    os.replace(run_dir / "adapter", target)
    _write_json(
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
    _write_json(target / "metrics.json", metrics)
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
    )
    store.add_version(version, activate=True, who=who, why=f"learning run {run_id}")
    return version


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
    run_id, run_dir, data, quality = prepare_run(store, model, config)
    store.release()  # other processes may use the database while the child trains
    try:
        metrics = train_in_child(run_dir, progress)
    except KeyboardInterrupt:
        store.fail_run(run_id, "interrupted by the user (Ctrl-C)")
        raise
    except CycleFailed as exc:
        store.fail_run(run_id, str(exc))
        raise
    version = publish(store, model, config, run_id, run_dir, data, metrics, who)
    return CycleResult(
        version=version.id,
        parent=version.parent,
        run_id=run_id,
        method=version.method,
        sft_examples=len(data.sft),
        dpo_pairs=len(data.dpo),
        kto_rows=len(data.kto),
        feedback_used=len(set(data.sft_feedback) | set(data.dpo_feedback) | set(data.kto_feedback)),
        quality=quality,
        metrics=metrics,
        adapter_path=version.adapter_path,
        seconds=time.perf_counter() - started,
    )
