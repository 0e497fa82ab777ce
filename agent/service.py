"""learnloop's use cases, each written once: :class:`LocalService`.

It implements :class:`~learnloop.agent.interface.Service`, which every surface talks to:
the CLI (``agent/cli.py``), the REPL (``agent/repl.py``) and the server's routes
(``agent/server/``). Surfaces only parse input and render output; what a use case does
lives here. It holds the store, the model (loaded on first need) and the cycle, in this
process. The CLI uses it when no server runs for the data root, the REPL always when it
runs locally, the server for its routes (agent/server/state.py adds what differs there:
swaps beside running answers, cycles in a thread). Its twin,
:class:`~learnloop.agent.remote.RemoteService`, sends the same calls to a running server.

Every method returns JSON-ready data: exactly the API's response bodies, which are the
CLI's ``--json`` output, so either side can render the other's (``agent/report.py``).
Errors are :class:`~learnloop.storage.errors.LearnloopError` subclasses on both sides.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learnloop.agent.checks import (
    check_control,
    check_limit,
    check_query,
    check_rating,
    check_title,
)
from learnloop.agent.config import GenerationConfig, LoopLimits
from learnloop.agent.corrections import check_trajectory, final_text
from learnloop.agent.interface import OnStep, OnSwitch, OnToken, Progress
from learnloop.agent.report import (
    answer_data,
    history_data,
    run_data,
    status_data,
    thread_summary,
    thread_view,
    turn_dict,
    versions_data,
)
from learnloop.learning.config import LearnConfig
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import Conflict, UsageError
from learnloop.storage.records import LOCAL_USER, Message, Run
from learnloop.storage.store import BASE_VERSION, Store

if TYPE_CHECKING:  # the model's modules load only when a question is asked
    from learnloop.agent.runtime import Agent
    from learnloop.learning.triggers import Due
    from learnloop.storage.forgetting import Forgotten

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


class LocalService:
    """The use cases on this process's store, model and cycle.

    The model loads on the first ``ask`` (commands that only read the store never pay for
    it); the active version is loaded before every answer, so a version made active
    meanwhile (by a cycle, another terminal) answers next."""

    where = "local"

    def __init__(
        self,
        store: Store,
        model_spec: str | None = None,
        *,
        generation: GenerationConfig | None = None,
        trigger: TriggerConfig | None = None,
        learn: LearnConfig | None = None,
        agent: Agent | None = None,
        toolbox: Toolbox = NO_TOOLS,
        limits: LoopLimits | None = None,
    ) -> None:
        self.store = store
        self.model_spec = model_spec
        self.toolbox = toolbox  # the operator's tools, run inside the graph
        self.limits = limits or LoopLimits()
        self.generation = generation or GenerationConfig()
        self.trigger = trigger or TriggerConfig()
        self.learn_config = learn or LearnConfig()
        self._agent = agent
        self.background: Any = None  # the cycle process our last feedback started

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            from learnloop.agent.runtime import load_agent

            self._agent = load_agent(
                self.store, self.model_spec, self.generation, self.toolbox, self.limits
            )
        return self._agent

    def model_name(self) -> str:
        if self._agent is not None:
            return self._agent.backend.model_name
        from learnloop.learning.models import model_spec_from_env

        return model_spec_from_env(self.model_spec)

    # -- chat ------------------------------------------------------------------------------

    def ask(
        self,
        text: str,
        *,
        thread_id: str | None = None,
        regen_of: int | None = None,
        on_token: OnToken | None = None,
        on_switch: OnSwitch | None = None,
        on_step: OnStep | None = None,
        who: str | None = None,
    ) -> dict[str, Any]:
        agent = self.agent
        switch = agent.sync_version()
        if switch is not None and on_switch is not None:
            on_switch(switch.version, switch.seconds)
        answer = agent.ask(
            text,
            thread_id=thread_id,
            regen_of=regen_of,
            on_token=on_token,
            on_step=on_step,
            user=who,
        )
        return answer_data(answer)

    def feedback(
        self,
        turn_id: int,
        rating: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        who: str | None = None,
        correction_messages: list[Message] | None = None,
    ) -> dict[str, Any]:
        correction = check_rating(rating, correction)
        if correction_messages is not None:
            if correction is not None:
                raise UsageError("give a correction as text or as messages, not both")
            check_rating(rating, "(a trajectory)")
            self.store.get_turn(turn_id)  # an unknown turn is a 404 before any tool runs
            correction_messages = check_trajectory(
                correction_messages, self.toolbox, self.limits.tool_timeout
            )
            correction = final_text(correction_messages)
        user = who or LOCAL_USER
        # the row commits with the trigger's reads: if those find the file damaged, no row
        # is left for a retry to give twice
        with self.store.transaction():
            fid = self.store.add_feedback(
                turn_id,
                rating,
                correction=correction,
                comment=comment,
                user_name=user,
                correction_messages=correction_messages,
            )
            due = self.learning_due()
        learning = self.start_due(due, user) if due is not None else None
        return dict(feedback_id=fid, turn_id=turn_id, rating=rating, learning_started=learning)

    def learning_due(self) -> Due | None:
        """The trigger's verdict after new feedback, when a cycle is due."""
        from learnloop.learning.triggers import check

        if self.background is not None and self.background.poll() is None:
            return None  # ours is still running (it may not have recorded its run yet)
        due = check(self.store, self.trigger, self.learn_config)
        return due if due.due else None

    def start_due(self, due: Due, user: str) -> str | None:
        """Start the cycle ``due`` in the background, recorded as started by this
        process's user; return why it started."""
        from learnloop.learning.triggers import start_background

        self.store.release()
        who = f"trigger:{getpass.getuser()}"
        self.background = start_background(self.model_spec, self.learn_config, who)
        return due.reason

    # -- learning --------------------------------------------------------------------------

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

    # -- versions --------------------------------------------------------------------------

    def active(self) -> str:
        """The version that answers new questions (the server's pointer may run a swap
        ahead of the store)."""
        return self.store.active_version()

    def versions(self) -> list[dict[str, Any]]:
        return versions_data(self.store.versions(), self.active(), self.store.version_users())

    def activate(self, version: str, *, why: str, who: str | None = None) -> dict[str, Any]:
        previous = self.store.active_version()
        if version != BASE_VERSION:
            from learnloop.learning.adapters import check, require_files

            record = require_files(self.store.get_version(version))
            # a damaged adapter is refused here, not found out by the next answer
            check(record.id, Path(record.adapter_path), record.checksum)
        self.store.activate(version, who=who or getpass.getuser(), why=why)
        return {"previous": previous, "active": version}

    def remove_versions(
        self, versions: list[str], *, rejected: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        from learnloop.learning.adapters import folder_bytes, removal_targets, remove

        targets, gone, kept = removal_targets(
            self.store, versions, rejected=rejected, active=self.active()
        )
        removed = [
            {"id": v.id, "status": v.status, "bytes": folder_bytes(Path(v.adapter_path))}
            for v in targets
        ]
        if targets and not dry_run:
            remove(self.store, targets)
        return {
            "dry_run": dry_run,
            "removed": removed,
            "already_removed": gone,
            "kept": kept,
            "bytes_freed": sum(r["bytes"] for r in removed),
        }

    def forget(
        self,
        user: str,
        *,
        settings: dict[str, Any] | None = None,
        who: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        from learnloop.learning.forget import finish_forgets
        from learnloop.storage.errors import NotFound

        started = time.perf_counter()
        settings = {**(settings or {}), "force": True}
        self.learn_settings(settings)  # bad settings fail before anything is deleted
        if not self.store.user_exists(user):
            raise NotFound(f"no turns or feedback of {user!r}: there is nothing to forget")
        who = who or getpass.getuser()
        self.stop_learning()  # a cycle under way may be training on their rows
        forgotten = self.forget_rows(user, who)
        finish_forgets(self.store)
        replaced = {"replacement": None, "replacement_verdict": None, "replacement_run": None}
        if forgotten.files.versions:
            replaced = self.replace(forgotten.forget_id, settings, f"forget:{who}", progress)
        return {
            "user": user,
            "turns_deleted": forgotten.turns_deleted,
            "feedback_deleted": forgotten.feedback_deleted,
            "versions_retired": forgotten.files.versions,
            **replaced,
            "active": self.active(),
            "seconds": round(time.perf_counter() - started, 2),
        }

    def stop_learning(self) -> None:
        """Cancel the cycle running now, if one is (and wait for it to record that)."""
        from learnloop.storage.home import pid_alive

        self.store.fail_stale_runs(pid_alive)
        if self.store.running_run() is not None:
            with contextlib.suppress(Conflict):  # it ended meanwhile
                self.cancel()

    def forget_rows(self, user: str, who: str) -> Forgotten:
        """The store's part of a forget (a server also moves its pointer)."""
        return self.store.forget_rows(user, who=who)

    def replace(
        self, forget_id: int, settings: dict[str, Any], who: str, progress: Progress | None
    ) -> dict[str, Any]:
        """A cycle with ``settings`` on the feedback left after forget ``forget_id``,
        gated as any (none when nothing is left to learn from, or the cycle failed: the
        forget itself is done either way): ``{"replacement", "replacement_verdict",
        "replacement_run"}``."""
        from learnloop.learning.child import CycleFailed
        from learnloop.learning.snapshot import NothingToLearn

        try:
            result = self.learn(settings, progress=progress, who=who)
        except (NothingToLearn, CycleFailed) as exc:
            return {"replacement": None, "replacement_verdict": str(exc), "replacement_run": None}
        self.store.record_replacement(forget_id, result["version"])
        return {
            "replacement": result["version"],
            "replacement_verdict": result["summary"],
            "replacement_run": result["run_id"],
        }

    def rollback(self, *, why: str, who: str | None = None) -> dict[str, Any]:
        return self.activate(self.rollback_target(), why=why, who=who)

    def rollback_target(self) -> str:
        current = self.active()
        if current == BASE_VERSION:
            raise UsageError("the base model is active: there is nothing to roll back to")
        return self.store.get_version(current).parent

    def history(self) -> list[dict[str, Any]]:
        return history_data(self.store.activations(), self.store.forgets())

    def compare(self, a: str | None = None, b: str | None = None) -> dict[str, Any]:
        from learnloop.agent.compare import compare_data
        from learnloop.learning.snapshot import control_set

        b = b or self.active()
        a = a or self.parent_of(b)
        expected = {c["prompt"]: c["expect"] for c in control_set(self.store)}
        return compare_data(a, self.control_answers_of(a), b, self.control_answers_of(b), expected)

    def parent_of(self, version: str) -> str:
        from learnloop.storage.errors import NotFound

        if version == BASE_VERSION:
            raise NotFound(
                "the base model has no parent to compare it with: name two versions "
                "(`learnloop versions` lists them)"
            )
        return self.store.get_version(version).parent  # NotFound for an unknown one

    def control_answers_of(self, version: str) -> list[dict[str, Any]]:
        """The version's stored control answers; NotFound, one message, for an unknown
        version or one whose answers were never measured."""
        from learnloop.storage.errors import NotFound

        if version != BASE_VERSION:
            self.store.get_version(version)
        answers = self.store.control_answers(version)
        if not answers:
            raise NotFound(
                f"no control answers are stored for {version}: they are stored when the "
                "gate measures a version, in a learning cycle with the gate on"
            )
        return answers

    # -- turns, threads, status ------------------------------------------------------------

    def log(self, limit: int) -> list[dict[str, Any]]:
        return [turn_dict(t) for t in self.store.recent_turns(check_limit(limit))]

    def threads(self, limit: int, q: str | None = None) -> list[dict[str, Any]]:
        found = self.store.threads(check_limit(limit), check_query(q))
        return [thread_summary(t) for t in found]

    def thread(self, thread_id: str) -> dict[str, Any]:
        from learnloop.storage.errors import NotFound

        if not self.store.thread_exists(thread_id):
            raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
        history = self.store.thread_history(thread_id)
        return thread_view(thread_id, history, self.store.thread_turns(thread_id))

    def rename_thread(self, thread_id: str, title: str) -> dict[str, Any]:
        title = check_title(title)
        self.store.rename_thread(thread_id, title)
        return {"id": thread_id, "title": title}

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        turns, feedback = self.store.delete_thread(thread_id)
        return {"id": thread_id, "turns": turns, "feedback": feedback}

    def status(self) -> dict[str, Any]:
        from learnloop.learning.child import latest_progress
        from learnloop.storage.home import data_root, pid_alive

        self.store.fail_stale_runs(pid_alive)
        s = self.store.status()
        running = s.running_run
        progress = latest_progress(Path(self.store.run_dir_of(running))) if running else None
        return status_data(s, self.model_name(), str(data_root()), progress)

    # -- the control set -------------------------------------------------------------------

    def control_list(self) -> list[dict[str, Any]]:
        from learnloop.learning.snapshot import control_set

        return control_set(self.store)

    def control_add(self, prompt: str, answer: str, expect: str | None) -> dict[str, Any]:
        item = check_control(prompt, answer, expect)
        self.store.add_control_prompt(item)
        return asdict(item)

    # -- export, keys ----------------------------------------------------------------------

    def export_data(self, run_id: int | None, current: bool) -> dict[str, Any]:
        from learnloop.learning.export import current_export, from_run, pick_run

        run = None if current else pick_run(self.store.runs(), run_id)
        if run is not None:
            return asdict(from_run(run))
        return asdict(current_export(self.store.feedback_examples()))

    def keys_list(self) -> list[dict[str, Any]]:
        return [
            {"name": k.name, "role": k.role, "created_at": k.created_at, "revoked_at": k.revoked_at}
            for k in self.store.api_keys()
        ]

    def keys_create(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        record, key = self.store.create_api_key(name, role="admin" if admin else "user")
        return {
            "name": record.name,
            "role": record.role,
            "key": key,
            "created_at": record.created_at,
        }

    def keys_revoke(self, name: str) -> dict[str, Any]:
        record = self.store.revoke_api_key(name)
        return {"name": record.name, "revoked_at": record.revoked_at}

    # -- the process -----------------------------------------------------------------------

    def prepare(self) -> None:
        self.agent  # noqa: B018 (loads the model and the active version)

    def idle(self) -> None:
        self.store.release()

    def close(self) -> None:
        self.store.close()


def open_local(
    model_spec: str | None = None,
    *,
    generation: GenerationConfig | None = None,
    trigger: TriggerConfig | None = None,
    learn: LearnConfig | None = None,
    tools: tuple[str, ...] | list[str] = (),
    limits: LoopLimits | None = None,
) -> LocalService:
    """learnloop from Python: the use cases on the data root's store ($LEARNLOOP_HOME) and
    ``model_spec`` (default SmolLM2-135M-Instruct), the way the CLI runs them without a
    server, with the tools of ``tools`` (``--tools`` specs: learning/toolbox.py). Close it
    (or use ``contextlib.closing``) to let go of the database."""
    from learnloop.learning.toolbox import load_tools

    return LocalService(
        Store(),
        model_spec,
        generation=generation,
        trigger=trigger,
        learn=learn,
        toolbox=load_tools(tools) if tools else NO_TOOLS,
        limits=limits,
    )
