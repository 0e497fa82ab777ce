"""When learning starts by itself, and starting a cycle in the background.

A cycle is *due* when at least ``--learn-after`` feedback items arrived since the last
cycle that succeeded and at least ``--learn-every-minutes`` passed since the last cycle
started (any outcome: a failing cycle is not retried in a loop). ``--auto-learn false``
turns this off; ``learnloop learn`` and ``/learn`` still start one on demand.

A background cycle is its own process (``python -m learnloop.learning.background``), started in
its own session so that neither Ctrl-C in the chat nor the chat ending stops it. It
takes the database only to record its snapshot and to publish its version, the same
way ``learnloop learn`` from another terminal does. At most one cycle runs at a time:
the store records the running one, and a second start is refused with its run id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from learnloop.learning.config import LearnConfig
from learnloop.storage.home import runs_dir
from learnloop.storage.store import Store

BACKGROUND_LOG = "background.log"


@dataclass(frozen=True)
class TriggerConfig:
    auto_learn: bool = field(
        default=True,
        metadata={"help": "start a learning cycle in the background when enough feedback waits"},
    )
    learn_after: int = field(
        default=20, metadata={"help": "new feedback items since the last cycle that start one"}
    )
    learn_every_minutes: float = field(
        default=10.0, metadata={"help": "fewest minutes between the starts of automatic cycles"}
    )

    def __post_init__(self) -> None:
        if self.learn_after < 1:
            raise ValueError("--learn-after must be at least 1")
        if self.learn_every_minutes < 0:
            raise ValueError("--learn-every-minutes must be 0 or more")


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str


def is_due(
    config: TriggerConfig,
    new_feedback: int,
    last_start: datetime | None,
    running: int | None,
    now: datetime,
) -> Due:
    """Pure: should a cycle start now?"""
    if not config.auto_learn:
        return Due(False, "automatic learning is off (--auto-learn false)")
    if running is not None:
        return Due(False, f"learning run {running} is running")
    if new_feedback < config.learn_after:
        return Due(False, f"{new_feedback} of {config.learn_after} new feedback items")
    if last_start is not None:
        wait = last_start + timedelta(minutes=config.learn_every_minutes) - now
        if wait > timedelta(0):
            return Due(
                False,
                f"the last cycle started less than {config.learn_every_minutes:g} "
                f"minutes ago ({wait.total_seconds() / 60:.1f} to go)",
            )
    return Due(True, f"{new_feedback} new feedback items")


def check(store: Store, config: TriggerConfig, learn: LearnConfig) -> Due:
    """Whether a cycle is due, from what the store holds now. Feedback that cannot train
    anything yet (say, only thumbs-down) starts no process, and says why."""
    from learnloop.learning.snapshot import NothingToLearn, build_snapshot
    from learnloop.storage.home import pid_alive

    store.fail_stale_runs(pid_alive)
    status = store.status()
    due = is_due(
        config,
        status.unlearned_feedback,
        store.last_run_start(),
        status.running_run,
        datetime.now(),
    )
    if due.due:
        try:
            build_snapshot(store.feedback_examples(), learn)
        except NothingToLearn as exc:
            return Due(False, f"nothing to learn yet: {exc}")
    return due


def start_background(
    model_spec: str | None, config: LearnConfig, who: str
) -> subprocess.Popen[bytes]:
    """Start one learning cycle in a background process; its output goes to
    ``runs/background.log``. The caller must not hold the database meanwhile for long."""
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    job = json.dumps({"model": model_spec, "config": config.to_dict(), "who": who})
    with (root / BACKGROUND_LOG).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "learnloop.learning.background", job],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def maybe_start(
    store: Store, trigger: TriggerConfig, model_spec: str | None, config: LearnConfig, who: str
) -> tuple[Due, subprocess.Popen[bytes] | None]:
    """Check the trigger and, when due, release the database and start a cycle."""
    due = check(store, trigger, config)
    if not due.due:
        return due, None
    store.release()
    return due, start_background(model_spec, config, who)


def background_log() -> Path:
    return runs_dir() / BACKGROUND_LOG
