"""The use cases through a running ``learnloop serve``: :class:`RemoteService`.

``learnloop serve`` holds the database while it runs, so the CLI (and the REPL) send
their calls to it over HTTP (agent/client.py) and get back what :class:`LocalService`
returns, so the surfaces print the same text and ``--json``. What differs:

- the server's model answers (``--model`` is not used) with the server's generation
  settings for any flag not given; ``--repetition-penalty`` cannot be sent, nor
  ``--system-prompt`` with ``--thread``;
- feedback: the server's learning trigger applies (trigger flags are ignored);
- ``learn`` returns the run's view (``GET /v1/learn/{run}``) with the version's method,
  dataset sizes, metrics and gate, but not the held-out count nor the quality report;
  Ctrl-C stops watching, not the cycle;
- switches of version are recorded as made by the server's user (``api:...``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from learnloop.agent.checks import (
    check_control,
    check_limit,
    check_query,
    check_rating,
    check_title,
)
from learnloop.agent.client import ServerClient
from learnloop.agent.interface import OnStep, OnSwitch, OnToken, Progress
from learnloop.agent.report import cycle_view
from learnloop.storage.errors import Conflict

POLL_S = 0.25  # how often `learn` asks for the run's progress


def note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class RemoteService:
    """The :class:`~learnloop.agent.interface.Service` calls as requests to ``server``.

    ``generation`` and ``trigger`` are the flags a command was given (None: not given):
    the given generation settings go with each question, the trigger's are the server's
    to decide, so giving them only earns a note."""

    def __init__(
        self,
        server: ServerClient,
        generation: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.where = server.url
        self.generation = _given(generation or {})
        self.trigger = _given(trigger or {})
        self.version: str | None = None  # the version of the last answer

    def _body(self, text: str, thread_id: str | None, regen_of: int | None) -> dict[str, Any]:
        given = self.generation
        if "repetition_penalty" in given:
            raise self.server.refuse(
                "--repetition-penalty cannot be sent to it (its own setting applies)"
            )
        messages = [{"role": "user", "content": text}]
        if given.get("system_prompt"):
            if thread_id is not None:
                raise self.server.refuse("--system-prompt cannot be sent to it for a --thread")
            messages.insert(0, {"role": "system", "content": given["system_prompt"]})
        body: dict[str, Any] = {"model": "learnloop", "messages": messages}
        if regen_of is not None:
            body["regen_of"] = regen_of
        if thread_id is not None and regen_of is None:
            body["thread_id"] = thread_id
        if "max_new_tokens" in given:
            body["max_tokens"] = given["max_new_tokens"]
        for name in ("temperature", "top_p"):
            if name in given:
                body[name] = given[name]
        if given.get("seed", -1) >= 0:  # -1 (random) is the API's "no seed"
            body["seed"] = given["seed"]
        if "whole_answer" in given:
            body["whole_answer"] = given["whole_answer"]
        return body

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
        """As LocalService.ask; the server's own tools run there, and ``on_step`` hears
        of each call and result as it runs."""
        body = self._body(text or "(regenerate)", thread_id, regen_of)
        if who is not None:
            body["user"] = who  # OpenAI's field; a server with keys records the key's user

        def started(version: str) -> None:
            if self.version is not None and version != self.version and on_switch:
                on_switch(version, None)
            self.version = version

        try:
            answer = self.server.ask(body, on_token, on_start=started, on_step=on_step)
        except KeyboardInterrupt:
            click.echo("\nthe server finishes the answer and logs the turn anyway", err=True)
            raise
        if answer.get("trimmed"):
            note(
                f"the conversation is longer than the server's model takes: its "
                f"{answer['trimmed']} oldest message(s) were left out of this answer's prompt"
            )
        return answer

    def feedback(
        self,
        turn_id: int,
        rating: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        who: str | None = None,
        correction_messages: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        correction = check_rating(rating, correction)
        if self.trigger:
            note(f"the server at {self.where} starts learning by its own trigger settings")
        body = {
            "turn_id": turn_id,
            "rating": rating,
            "correction": correction,
            "comment": comment,
            "user": who,
        }
        if correction_messages is not None:  # checked, and its calls run, by the server
            body["correction_messages"] = correction_messages
        return self.server.feedback(body)

    def learn(
        self, settings: dict[str, Any], *, progress: Progress | None = None, who: str
    ) -> dict[str, Any]:
        """Start a cycle in the server, relay its progress, return how it ended."""
        overrides = _given(settings)
        if overrides.get("eval_file"):  # the server resolves paths from its own folder
            overrides["eval_file"] = str(Path(overrides["eval_file"]).resolve())
        run = int(self.server.learn(overrides)["run"])
        try:
            view = self._watch(run, progress)
        except KeyboardInterrupt:
            click.echo(
                f"stopped watching: learning run {run} goes on in the server "
                "(`learnloop status` shows it)",
                err=True,
            )
            sys.exit(130)
        if view["status"] == "cancelled":
            from learnloop.learning.cycle import Cancelled

            raise Cancelled(f"learning run {run} cancelled; the active version is unchanged")
        if view["status"] != "succeeded" or not view.get("version"):
            from learnloop.learning.cycle import CycleFailed

            raise CycleFailed(view.get("error") or f"learning run {run} {view['status']}")
        return cycle_view(view, self.server.versions())

    def _watch(self, run: int, progress: Progress | None) -> dict[str, Any]:
        last: dict[str, Any] | None = None
        while True:
            view = self.server.learn_run(run)
            event = {k: view.get(k) for k in ("stage", "step", "total", "loss")}
            if progress is not None and event != last and event["stage"] != "prepare":
                progress(event)
                last = event
            if view["status"] != "running":
                return view
            time.sleep(POLL_S)

    def runs(self) -> list[dict[str, Any]]:
        return self.server.runs()

    def run(self, run_id: int) -> dict[str, Any]:
        return self.server.learn_run(run_id)

    def cancel(self, run_id: int | None = None) -> dict[str, Any]:
        if run_id is None:
            run_id = self.server.status().get("running_run")
            if run_id is None:
                raise Conflict("no learning run is running: there is nothing to cancel")
        return self.server.cancel_run(int(run_id))

    def versions(self) -> list[dict[str, Any]]:
        return self.server.versions()

    def status(self) -> dict[str, Any]:
        status = self.server.status()
        if self.version is None:
            self.version = status["active_version"]
        return status

    def _who(self, who: str | None) -> None:
        if who:
            note(f"--user is not sent: the server at {self.where} records the switch as its own")

    def activate(self, version: str, *, why: str, who: str | None = None) -> dict[str, Any]:
        self._who(who)
        swap = self.server.activate(version, why)
        return {"previous": swap["previous"], "active": swap["active"]}

    def remove_versions(
        self, versions: list[str], *, rejected: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        body = {"versions": versions, "rejected": rejected, "dry_run": dry_run}
        return self.server.remove_versions(body)

    def forget(
        self,
        user: str,
        *,
        settings: dict[str, Any] | None = None,
        who: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """As LocalService.forget; the server trains the replacement in its learning
        thread, followed here as ``learn`` follows a run (the server records the forget
        as its own: ``who`` is not sent)."""
        started = time.monotonic()
        data = self.server.forget(user, _given(settings or {}))
        run = data.get("replacement_run")
        if run is not None:
            view = self._watch(int(run), progress)
            data["replacement"] = view.get("version")
            data["replacement_verdict"] = view.get("summary") or view.get("error")
            data["active"] = next(v["id"] for v in self.versions() if v["active"])
            data["seconds"] = round(time.monotonic() - started, 2)
        return data

    def rollback(self, *, why: str, who: str | None = None) -> dict[str, Any]:
        self._who(who)
        swap = self.server.rollback(why)
        return {"previous": swap["previous"], "active": swap["active"]}

    def history(self) -> list[dict[str, Any]]:
        return self.server.history()

    def compare(self, a: str | None = None, b: str | None = None) -> dict[str, Any]:
        return self.server.compare(a, b)

    def log(self, limit: int) -> list[dict[str, Any]]:
        return self.server.log(check_limit(limit))

    def threads(self, limit: int, q: str | None = None) -> list[dict[str, Any]]:
        return self.server.threads(check_limit(limit), check_query(q))

    def thread(self, thread_id: str) -> dict[str, Any]:
        return self.server.thread(thread_id)

    def rename_thread(self, thread_id: str, title: str) -> dict[str, Any]:
        return self.server.rename_thread(thread_id, check_title(title))

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        return self.server.delete_thread(thread_id)

    def control_list(self) -> list[dict[str, Any]]:
        return self.server.control_list()

    def control_add(self, prompt: str, answer: str, expect: str | None) -> dict[str, Any]:
        item = check_control(prompt, answer, expect)
        return self.server.control_add(
            {"prompt": item.prompt, "answer": item.answer, "expect": item.expect}
        )

    def export_data(self, run_id: int | None, current: bool) -> dict[str, Any]:
        return self.server.export_data(run_id, current)

    def keys_list(self) -> list[dict[str, Any]]:
        return self.server.keys_list()

    def keys_create(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        return self.server.keys_create(name, admin=admin)

    def keys_revoke(self, name: str) -> dict[str, Any]:
        return self.server.keys_revoke(name)

    def prepare(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass
