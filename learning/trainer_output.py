"""What the trainer child writes as it runs: ``progress.jsonl`` lines (and the TRL
callback that writes one per optimizer step), JSON files replaced whole by a rename, and
its console sent to ``trainer.log``.

Invariant: a reader of these files never sees half of one: a progress line is written and
flushed whole (a reader skips a last line still being written), a JSON file is replaced
by a rename.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def training_seconds(metrics: dict[str, Any]) -> float:
    """The seconds a trainer's ``metrics.json`` spent in its training stages (SFT, DPO,
    KTO), loading and the gate not included."""
    return float(sum((metrics.get(s) or {}).get("seconds", 0.0) for s in ("sft", "dpo", "kto")))


class Progress:
    """Appends one flushed JSON line per event to ``progress.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, stage: str, step: int = 0, total: int = 0, loss: float | None = None) -> None:
        line = {"stage": stage, "step": step, "total": total, "loss": loss, "t": time.time()}
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()


def progress_callback(progress: Progress, stage: str) -> Any:
    """A ``TrainerCallback`` writing one progress line per optimizer step."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.loss: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            progress.write(stage, 0, state.max_steps, None)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # A step that logs is reported by on_log, with its fresh loss.
            if not control.should_log:
                progress.write(stage, state.global_step, state.max_steps, self.loss)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])
                progress.write(stage, state.global_step, state.max_steps, self.loss)

    return ProgressCallback()


def write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finite(value: object) -> float | None:
    """JSON has no NaN: a diverged loss is reported as null."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


@contextlib.contextmanager
def console_to_log(log_path: Path) -> Iterator[IO[str]]:
    """Send fd 1 and 2 (Python, C++ and library chatter alike) to the log file.

    Yields a handle on the original stderr, kept for the one-line error report.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    real_err = os.fdopen(os.dup(saved_err), "w", encoding="utf-8")
    try:
        with log_path.open("a", encoding="utf-8") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield real_err
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved_out, 1)
                os.dup2(saved_err, 2)
    finally:
        os.close(saved_out)
        os.close(saved_err)
        real_err.close()
