"""The learning use cases: a cycle here (or handed to a server that took the database
meanwhile), its runs, their progress and cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from learnloop.agent.interface import Progress
from learnloop.agent.report import run_data
from learnloop.agent.service_chat import ChatCases
from learnloop.learning.config import LearnConfig
from learnloop.storage.errors import Conflict, UsageError
from learnloop.storage.records import Run

CANCEL_WAIT_SECONDS = 15.0  # how long a cancel waits for the cycle to record it


def no_server() -> bool:
    """Whether no server runs for this data root (so this process may open the store)."""
    from learnloop.agent.client import find_server

    return find_server() is None


def hand_over(run_id: int) -> dict[str, Any]:
    """A server started while run ``run_id`` trained here and holds the database now: it
    publishes the trained run; the result reads as ``learn`` through a server."""
    import click

    from learnloop.agent.client import find_server
    from learnloop.agent.report import cycle_view

    server = find_server()
    if server is None:  # gone again: the next cycle records the run as failed
        raise UsageError(
            f"learning run {run_id} trained, but the server that took the database "
            "meanwhile is gone; run `learnloop learn` again"
        )
    click.echo(
        f"a server started at {server.url} while run {run_id} trained; it publishes it",
        err=True,
    )
    view = server.publish_run(run_id)
    return cycle_view(view, server.versions())


class LearningCases(ChatCases):
    """Learning cycles: run one, list and follow runs, cancel one."""

    def learn_settings(self, settings: dict[str, Any]) -> LearnConfig:
        """This service's learn settings with ``settings`` (given values only) on top."""
        from learnloop.agent.options import replace_config

        return replace_config(self.learn_config, settings, "learn setting")

    def learn(
        self, settings: dict[str, Any], *, progress: Progress | None = None, who: str
    ) -> dict[str, Any]:
        from learnloop.learning.cycle import HandedOver, run_cycle
        from learnloop.learning.models import resolve_model

        config = self.learn_settings(settings)
        try:
            result = run_cycle(
                self.store,
                resolve_model(self.model_spec),
                config,
                progress=progress,
                who=who,
                publish_here=no_server,
            )
        except HandedOver as exc:
            return hand_over(exc.run_id)
        return result.to_dict()

    def runs(self) -> list[dict[str, Any]]:
        from learnloop.storage.home import pid_alive

        self.store.fail_stale_runs(pid_alive)
        return [self.run_view(r) for r in self.store.runs()]

    def run(self, run_id: int) -> dict[str, Any]:
        return self.run_view(self.store.get_run(run_id))

    def cancel(self, run_id: int | None = None) -> dict[str, Any]:
        from learnloop.learning.child import request_cancel
        from learnloop.storage.home import pid_alive

        self.store.fail_stale_runs(pid_alive)
        run = self.store.get_run(run_id) if run_id is not None else self.running()
        if run.status != "running":
            raise Conflict(f"learning run {run.id} is {run.status}: there is nothing to cancel")
        request_cancel(Path(run.run_dir))
        self.await_cancel(run)
        return self.run(run.id)

    def await_cancel(self, run: Run) -> None:
        """Wait a while for the cycle running ``run`` to record the cancel."""
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while run.status == "running" and time.monotonic() < deadline:
            self.store.release()  # the cycle may be in another process: let it record
            time.sleep(0.25)
            run = self.store.get_run(run.id)

    def running(self) -> Run:
        running = self.store.running_run()
        if running is None:
            raise Conflict("no learning run is running: there is nothing to cancel")
        return self.store.get_run(running)

    def run_view(self, run: Run, version: str | None = None) -> dict[str, Any]:
        from learnloop.learning.child import progress_events

        events = progress_events(Path(run.run_dir)) if run.run_dir else []
        version = run.version_id or version
        gate = self.store.get_version(version).gate if version else None
        # what the cleaning dropped (the per-user cap) is shown where the run is, with
        # the share the cap allowed one user (a setting of the run)
        quality = self.store.snapshot_quality(run.id)
        if quality is not None:
            quality = {**quality, "max_user_share": run.config.get("max_user_share")}
        return {**run_data(run, events, gate, version), "quality": quality}
