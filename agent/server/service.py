"""The use cases as the server runs them: :class:`LocalService` on the server's state.

What differs from the CLI's local service, and why:

- a switch of version loads the adapter beside the answering one and then repoints
  (agent/server/state.py): nobody waits for a swap;
- a cycle runs in a thread of the server (the server holds the database), so
  :meth:`start_learning` returns the run at once and :meth:`run` shows its progress;
- feedback starts a cycle by the server's own trigger, in that thread;
- who sees what: a request names whose threads it sees (``sees``: None for everyone's,
  the operator's and an admin key's view; a user key's name for its own). Another
  user's thread or turn reads as one that does not exist (404), so a user key learns
  nothing of them, not even that they exist.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

from learnloop.agent.checks import check_limit, check_query
from learnloop.agent.report import status_data, thread_summary, turn_dict
from learnloop.agent.server.state import Busy, ServerState
from learnloop.agent.service import LocalService
from learnloop.agent.service_learning import CANCEL_WAIT_SECONDS
from learnloop.learning.config import LearnConfig
from learnloop.learning.triggers import Due, check
from learnloop.storage.errors import Forbidden, NotFound
from learnloop.storage.forgetting import Forgotten
from learnloop.storage.home import data_root
from learnloop.storage.records import Run
from learnloop.storage.store import Store


def confine(path: Path, allowed: tuple[Path, ...]) -> Path:
    """``path`` if it lies in one of the ``allowed`` folders (links resolved), else
    Forbidden: a request may make the server read only what its operator allowed."""
    resolved = path.expanduser().resolve()
    if not any(resolved.is_relative_to(folder.resolve()) for folder in allowed):
        folders = ", ".join(str(f) for f in allowed)
        raise Forbidden(
            f"the server reads files only from {folders}; put {path} there, or start "
            "`learnloop serve --allow-files FOLDER`"
        )
    return resolved


def visible_turn(store: Store, turn_id: int, sees: str | None) -> int:
    """``turn_id`` if a caller who ``sees`` (None: everyone's) may see it, else NotFound."""
    if sees is not None and store.turn_owner(turn_id) != sees:
        raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
    return turn_id


def visible_thread(store: Store, thread_id: str, sees: str | None) -> str:
    """``thread_id`` if a caller who ``sees`` (None: everyone's) may see it, else NotFound."""
    owner = store.thread_owner(thread_id)  # NotFound for no such thread
    if sees is not None and owner != sees:
        raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
    return thread_id


class ServerService(LocalService):
    """``allow_files``: folders besides the data root that requests may name files in."""

    def __init__(self, state: ServerState, allow_files: tuple[Path, ...] = ()) -> None:
        # the agent's tools also complete a corrected trajectory's calls (agent/corrections.py)
        super().__init__(
            state.store, agent=state.agent, trigger=state.trigger, toolbox=state.agent.toolbox
        )
        self.state = state
        self.allowed = (data_root(), *allow_files)

    def model_name(self) -> str:
        return self.state.model.name

    def learning_due(self) -> Due | None:
        due = check(self.store, self.state.trigger, self.state.learn)
        return due if due.due else None

    def start_due(self, due: Due, user: str) -> str | None:
        try:
            self.state.start_learning(self.state.learn, f"trigger:{user}")
        except Busy:
            return None
        return due.reason

    def learn_settings(self, settings: dict[str, Any]) -> LearnConfig:
        """The server's learn settings (they may change while it runs) with a request's on
        top; a file it names must lie in a folder the operator allowed."""
        from learnloop.agent.options import replace_config

        config = replace_config(self.state.learn, settings, "learn setting")
        files: dict[str, Any] = {
            name: str(confine(Path(getattr(config, name)), self.allowed))
            for name in ("eval_file", "accelerate_config")
            if getattr(config, name)
        }
        return dataclasses.replace(config, **files)

    def start_learning(self, settings: dict[str, Any], who: str) -> dict[str, Any]:
        job = self.state.start_learning(self.learn_settings(settings), who)
        return {"run": job.run, "status": "running"}

    def publish_run(self, run_id: int, who: str) -> dict[str, Any]:
        """A local ``learn`` trained run ``run_id`` while this server started: publish it."""
        self.state.publish_handed_over(run_id, who)
        return self.run(run_id)

    def run(self, run_id: int) -> dict[str, Any]:
        return self.served_run(self.store.get_run(run_id))

    def await_cancel(self, run: Run) -> None:
        """Wait for this server's cycle thread to record the cancel (the store stays
        open: the thread records it through the same one)."""
        job = self.state.jobs.get(run.id)
        if job is not None and job.thread is not None:
            job.thread.join(CANCEL_WAIT_SECONDS)

    def runs(self) -> list[dict[str, Any]]:
        return [self.served_run(r) for r in self.store.runs()]

    def served_run(self, run: Run) -> dict[str, Any]:
        job = self.state.jobs.get(run.id)
        view = self.run_view(run, job.version if job else None)
        if job is not None and job.then is not None:  # the fresh run of a --start both cycle
            view["then"] = self.run_view(self.store.get_run(job.then))
        # the run is over for a client only once its version serves (or it failed)
        if job is not None and job.thread is not None and job.thread.is_alive():
            view["status"] = "running"
        return view

    def remove_versions(
        self, versions: list[str], *, rejected: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """As locally, with no switch of version in between: one could make a version
        active after it was found removable and before its files go."""
        with self.state.switching:
            return super().remove_versions(versions, rejected=rejected, dry_run=dry_run)

    def forget_rows(self, user: str, who: str) -> Forgotten:
        """As locally, with no switch of version in between; a retired active version is
        swapped out before the next answer."""
        with self.state.switching:
            forgotten = super().forget_rows(user, who)
            if forgotten.active != forgotten.previous_active:
                self.state.follow_store()
        return forgotten

    def replace(
        self, forget_id: int, settings: dict[str, Any], who: str, progress: Any = None
    ) -> dict[str, Any]:
        """The replacement cycle in the server's learning thread: its run at once (the
        caller follows it as any run, ``GET /v1/learn/{run}``); its version is recorded
        with the forget when it is published."""
        from learnloop.learning.snapshot import NothingToLearn

        try:
            job = self.state.start_learning(self.learn_settings(settings), who)
        except NothingToLearn as exc:
            return {"replacement": None, "replacement_verdict": str(exc), "replacement_run": None}

        def record() -> None:
            if job.thread is not None:
                job.thread.join()
            if job.version is not None:
                self.store.record_replacement(forget_id, job.version)

        threading.Thread(target=record, daemon=True).start()
        return {"replacement": None, "replacement_verdict": None, "replacement_run": job.run}

    def activate(self, version: str, *, why: str, who: str | None = None) -> dict[str, Any]:
        return dataclasses.asdict(self.state.activate(version, who=who or "api", why=why))

    def active(self) -> str:
        return self.state.active

    def status(self, *, show_root: bool = True) -> dict[str, Any]:
        """``show_root``: with the data root's path (for the operator and admin keys)."""
        s = self.store.status()
        running = s.running_run
        progress = self.run(running) if running else None
        data = status_data(s, self.model_name(), str(data_root()), progress)
        return data if show_root else {**data, "data_root": None}

    # -- what a caller sees (``sees``: None for everyone's threads, else its owner) --------

    def threads_seen(
        self, limit: int, sees: str | None, q: str | None = None
    ) -> list[dict[str, Any]]:
        if sees is None:
            return self.threads(limit, q)
        owned = self.store.owned_threads(sees, check_limit(limit), check_query(q))
        return [thread_summary(t) for t in owned]

    def thread_seen(self, thread_id: str, sees: str | None) -> dict[str, Any]:
        return self.thread(visible_thread(self.store, thread_id, sees))

    def rename_thread_seen(self, thread_id: str, title: str, sees: str | None) -> dict[str, Any]:
        return self.rename_thread(visible_thread(self.store, thread_id, sees), title)

    def delete_thread_seen(self, thread_id: str, sees: str | None) -> dict[str, Any]:
        return self.delete_thread(visible_thread(self.store, thread_id, sees))

    def log_seen(self, limit: int, sees: str | None) -> list[dict[str, Any]]:
        if sees is None:
            return self.log(limit)
        turns = self.store.owned_recent_turns(sees, check_limit(limit))
        return [turn_dict(t) for t in turns]

    def feedback_seen(
        self, turn_id: int, rating: str, sees: str | None, **given: Any
    ) -> dict[str, Any]:
        return self.feedback(visible_turn(self.store, turn_id, sees), rating, **given)
