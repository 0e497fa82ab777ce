"""Step 3 of a cycle: the trainer child (``python -m learnloop.learning.trainer``, or
``accelerate launch`` of several: learning/processes.py) run in its own session, its
progress relayed, a cancel passed on, a failure explained.

Invariants: the child is never left running when the cycle ends, however it ends (a
cancel, an error, Ctrl-C all kill it, with every process of its session); a failure
becomes one line, :class:`DiskFull` whenever the disk was what ran out, whether the child
or the cycle's own writes noticed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from learnloop.learning.processes import trainer_command
from learnloop.storage.errors import LearnloopError

Progress = Callable[[dict[str, Any]], None]

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What a child that ran out of space prints (OSError's text, C libraries' own wording).
NO_SPACE_TEXT = ("no space left on device", "[errno 28]", "enospc", "disk quota exceeded")
LOW_SPACE_BYTES = 1 << 20  # less free than this after a failed child: the disk was full
_TAIL_BYTES = 64 * 1024
CANCEL_FILE = "cancel"


class CycleFailed(LearnloopError):
    """The cycle failed; the run is recorded as failed and nothing changed."""


class Cancelled(LearnloopError):
    """Someone cancelled the run (:func:`request_cancel`): it is recorded as cancelled and
    the active version is unchanged."""

    status = 409
    kind = "cancelled"


class DiskFull(CycleFailed):
    """The disk under the data root ran out of space during the cycle."""

    status = 503
    kind = "unavailable_error"


@contextmanager
def disk_writes(what: str, where: Path) -> Iterator[None]:
    """The cycle's own file writes: a full disk becomes DiskFull, any other OSError a
    CycleFailed naming what was being written."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise DiskFull(
                f"no space left on device while writing {what} in {where}; "
                "free some space and learn again"
            ) from exc
        raise CycleFailed(f"cannot write {what} in {where}: {exc.strerror or exc}") from exc


def train_in_child(run_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Step 3: run the trainer child, relay its progress lines, return its metrics."""
    command, env = trainer_command(run_dir, _learn_settings(run_dir))
    with disk_writes("the trainer's log", run_dir):
        log = (run_dir / "trainer.stderr").open("w")
    child = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    seen = 0
    try:
        while child.poll() is None:
            time.sleep(0.2)
            seen = _relay(run_dir / "progress.jsonl", seen, progress)
            if (run_dir / CANCEL_FILE).exists():
                raise Cancelled("cancelled")
        _relay(run_dir / "progress.jsonl", seen, progress)
    except BaseException:
        # The child leads its own session: its group holds a launcher's processes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    finally:
        log.close()
    if child.returncode != 0:
        raise training_failed(run_dir, child.returncode)
    metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text())
    return metrics


def _learn_settings(run_dir: Path) -> dict[str, Any]:
    """The learn settings of the request the cycle wrote (the trainer checks the rest)."""
    try:
        settings = json.loads((run_dir / "request.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return settings if isinstance(settings, dict) else {}


def request_cancel(run_dir: Path) -> None:
    """Ask the process running this run's cycle, whichever it is, to stop its trainer;
    it records the run as cancelled (``train_in_child`` polls for the file)."""
    (run_dir / CANCEL_FILE).touch()


def training_failed(run_dir: Path, code: int) -> CycleFailed:
    """Why the child failed, in one line. A full disk is named as such: the child's own
    line may say so, or, when the disk was too full to write even that line, the free
    space left under the run folder does."""
    said = _tail(run_dir / "trainer.stderr")
    lines = [line for line in said.splitlines() if line.strip()]
    logged = _tail(run_dir / "trainer.log")
    free = _free_bytes(run_dir)
    text = (said + logged).lower()
    if any(t in text for t in NO_SPACE_TEXT) or (free is not None and free < LOW_SPACE_BYTES):
        room = f", {free // 1024} KiB free" if free is not None else ""
        return DiskFull(
            f"training failed: no space left on device ({run_dir}{room}); "
            "free some space and learn again"
        )
    # A launcher of several processes prints its own report after their lines.
    ours = [line for line in lines if line.startswith("learnloop trainer:")]
    last = ours[-1] if ours else lines[-1] if lines else "no output"
    return CycleFailed(f"training failed (exit {code}): {last}")


def _tail(path: Path) -> str:
    """The end of a log file (the child may have written a lot, or garbage)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            return f.read(_TAIL_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


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
