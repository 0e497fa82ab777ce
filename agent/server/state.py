"""What the server holds while it runs, and the only place that changes the active version.

Invariants:

- every request is pinned, on arrival, to one version (:meth:`ServerState.pin`); the
  backend makes that version's adapter current just before the request's answer, so an
  answer that started on a version finishes on it, and a swap never fails a request;
- a swap (a promotion, ``activate``, ``rollback``) first loads the new adapter, then
  records the switch, then moves the pointer new requests read: requests arriving during
  the load still get the old version, and nobody ever waits for a half-loaded adapter;
- at most one learning cycle runs; its database steps run here (the server holds the
  file) and its training in the trainer child, as for ``learnloop learn``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnloop.agent.backend import Pin
from learnloop.agent.runtime import Agent
from learnloop.learning.adapters import AdapterDamaged, fall_back, trusted_checksum
from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import (
    Cancelled,
    CycleFailed,
    CycleResult,
    complete_cycle,
    fresh_after,
    prepare_run,
    publish_handed_over,
)
from learnloop.learning.models import ResolvedModel
from learnloop.learning.snapshot import NothingToLearn
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import Conflict
from learnloop.storage.store import BASE_VERSION, NotFound, Store

ACTIVE_ALIAS = "learnloop"  # the model name that means "whichever version is active"


class Busy(Conflict):
    """A learning cycle is already running; ``run`` names it."""

    def __init__(self, run: int) -> None:
        super().__init__(f"learning run {run} is running; GET /v1/learn/{run} shows its progress")
        self.run = run


@dataclass
class LearnJob:
    run: int
    thread: threading.Thread | None = None
    version: str | None = None
    promoted: bool | None = None
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    then: int | None = None  # a --start both cycle's second run


@dataclass
class Swap:
    previous: str
    active: str
    seconds: float  # the whole switch: load, record the activation, repoint
    load_seconds: float  # loading the adapter and making it current


class ServerState:
    def __init__(
        self,
        store: Store,
        agent: Agent,
        model: ResolvedModel,
        *,
        trigger: TriggerConfig | None = None,
        learn: LearnConfig | None = None,
        bench_results: Path | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.model = model
        self.trigger = trigger or TriggerConfig()
        self.learn = learn or LearnConfig()
        self.bench_results = bench_results
        self.active = store.active_version()
        self._swapping = threading.RLock()  # a forget moves the pointer while holding it
        self._learning = threading.Lock()
        self.jobs: dict[int, LearnJob] = {}

    # -- versions ----------------------------------------------------------------------

    def pin(self, model_name: str | None) -> Pin:
        """The version a request for ``model_name`` gets: ``learnloop`` (or nothing) is the
        active one; ``base`` or the base model's name is the base; else a version id.
        The pin carries the adapter's checksum, which the backend checks when it loads
        the folder; a damaged adapter raises AdapterDamaged (a 503 naming it)."""
        name = model_name or ACTIVE_ALIAS
        version = self.active if name == ACTIVE_ALIAS else name
        if version in (BASE_VERSION, self.agent.backend.model_name):
            return Pin(BASE_VERSION)
        try:
            found = self.store.get_version(version)
        except NotFound:
            raise NotFound(
                f"no model {name!r}: use {ACTIVE_ALIAS!r}, 'base' or a version from /v1/models"
            ) from None
        return Pin(found.id, found.adapter_path, trusted_checksum(self.store, found))

    @property
    def switching(self) -> threading.RLock:
        """Held while the active version changes; what must not race a switch (removing
        a version's files) holds it too."""
        return self._swapping

    def activate(self, version: str, *, who: str, why: str) -> Swap:
        """Load ``version`` and make it the one new requests get; record who and why."""
        return self._swap(version, lambda v: self.store.activate(v, who=who, why=why))

    def follow_store(self) -> None:
        """The store's active version changed (a cycle's gate promoted one, a forget retired
        it): load it, move the pointer."""
        self._swap(self.store.active_version(), None)

    def _swap(self, version: str, record: Callable[[str], None] | None) -> Swap:
        """Load, record the switch (unless the store has it already), then repoint."""
        with self._swapping:
            started = time.perf_counter()
            previous = self.active
            pin = self.pin(version)
            load = self.agent.backend.prepare(pin)
            if record is not None:
                record(pin.version)
            self.active = pin.version
            return Swap(previous, pin.version, time.perf_counter() - started, load)

    # -- learning ----------------------------------------------------------------------

    def start_learning(self, config: LearnConfig, who: str) -> LearnJob:
        """Record the run and its snapshot now; train, judge and publish in a thread.
        Raises :class:`Busy` or ``NothingToLearn`` (with the reason) instead."""
        with self._learning:
            running = self.store.running_run()
            if running is not None:
                raise Busy(running)
            prepared = prepare_run(self.store, self.model, config)
            job = LearnJob(run=prepared[0])
            job.thread = threading.Thread(
                target=self._complete, args=(job, config, prepared, who), daemon=True
            )
            self.jobs[job.run] = job
            job.thread.start()
            return job

    def _complete(self, job: LearnJob, config: LearnConfig, prepared: Any, who: str) -> None:
        """Train, judge, publish; a promoted version serves at once. A ``--start both``
        cycle then trains its fresh run the same way (``job.then``)."""
        result = self._finish(job, job.run, config, prepared, who)
        if result is None:
            return
        job.version, job.promoted, job.reasons = result.version, result.promoted, result.reasons
        second = fresh_after(config, result)
        if second is None:
            return
        with self._learning:
            try:
                prepared = prepare_run(self.store, self.model, second)
            except NothingToLearn:  # another cycle got in first
                return
            job.then = prepared[0]
        self._finish(job, job.then, second, prepared, who)

    def _finish(
        self, job: LearnJob, run: int, config: LearnConfig, prepared: Any, who: str
    ) -> CycleResult | None:
        try:
            with self.agent.backend.sharing_cores():
                result = complete_cycle(self.store, self.model, config, prepared, who=who)
        except (CycleFailed, Cancelled) as exc:  # the run row says so already
            job.error = str(exc)
            return None
        except Exception as exc:  # recorded on the job; the run row says failed too
            job.error = f"{type(exc).__name__}: {exc}"
            self.store.fail_run(run, job.error)
            return None
        if result.promoted:
            self._serve_promoted()
        return result

    def _serve_promoted(self) -> None:
        try:
            self.follow_store()
        except AdapterDamaged as damaged:  # broken between publishing and loading
            backend = self.agent.backend
            chosen = fall_back(
                self.store, backend.model_name, damaged, fingerprint=backend.fingerprint
            )
            self.agent.warn(f"{damaged}; answering with {chosen.id if chosen else 'base'}")
            self.follow_store()

    def publish_handed_over(self, run_id: int, who: str) -> None:
        """Publish a run a local ``learn`` trained while this server started (it could
        not open the database afterwards); a promoted version then serves here."""
        with self._learning:
            _, decision = publish_handed_over(self.store, self.model, run_id, who)
        if decision.promote:
            self._serve_promoted()
