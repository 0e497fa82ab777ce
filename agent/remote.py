"""The CLI commands when a server runs for the data root: the same output, over HTTP.

``learnloop serve`` holds the database while it runs, so ``ask``, ``feedback``,
``learn``, ``versions``, ``log``, ``status``, ``activate`` and ``rollback`` send their
request to it (agent/client.py) and print what the local command prints, text or
``--json``, through the same renderers (agent/report.py). What differs:

- the server's model answers (``--model`` is not used) with the server's generation
  settings for any flag not given; ``--repetition-penalty`` cannot be sent, nor
  ``--system-prompt`` with ``--thread``;
- ``feedback``: the server's learning trigger applies (its trigger flags are ignored);
- ``learn --json`` prints the run's view (``GET /v1/learn/{run}``) with the version's
  method, dataset sizes, metrics and gate, but not the held-out count nor the quality
  report; Ctrl-C stops watching, not the cycle;
- ``activate`` / ``rollback`` are recorded as made by the server's user (``api:...``).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.client import ServerClient, ServerError
from agent.report import (
    answer_footer,
    cycle_summary,
    feedback_text,
    status_text,
    switched_text,
    to_json,
    turns_text,
    versions_text,
)

POLL_S = 0.25  # how often `learn` asks for the run's progress
NOTHING = "nothing to learn: "  # the server's prefix on a NothingToLearn reason


def emit(as_json: bool, value: Any, text: str) -> None:
    click.echo(to_json(value) if as_json else text)


def note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def ask(
    server: ServerClient,
    text: str,
    thread_id: str | None,
    as_json: bool,
    generation: dict[str, Any],
) -> None:
    given = _given(generation)
    if "repetition_penalty" in given:
        raise server.refuse("--repetition-penalty cannot be sent to it (its own setting applies)")
    messages = [{"role": "user", "content": text}]
    if given.get("system_prompt"):
        if thread_id is not None:
            raise server.refuse("--system-prompt cannot be sent to it for a --thread")
        messages.insert(0, {"role": "system", "content": given["system_prompt"]})
    body: dict[str, Any] = {"model": "learnloop", "messages": messages}
    if thread_id is not None:
        body["thread_id"] = thread_id
    if "max_new_tokens" in given:
        body["max_tokens"] = given["max_new_tokens"]
    for name in ("temperature", "top_p"):
        if name in given:
            body[name] = given[name]
    if given.get("seed", -1) >= 0:  # -1 (random) is the API's "no seed"
        body["seed"] = given["seed"]
    try:
        answer = server.ask(body, None if as_json else (lambda t: click.echo(t, nl=False)))
    except KeyboardInterrupt:
        click.echo("\nthe server finishes the answer and logs the turn anyway", err=True)
        raise
    if as_json:
        click.echo(to_json(answer))
    else:
        click.echo(answer_footer(answer), err=True)


def feedback(
    server: ServerClient,
    turn_id: int,
    rating: str,
    correction: str | None,
    comment: str | None,
    user_name: str,
    as_json: bool,
    trigger: dict[str, Any],
) -> None:
    if _given(trigger):
        note(f"the server at {server.url} starts learning by its own trigger settings")
    body = {
        "turn_id": turn_id,
        "rating": rating,
        "correction": correction,
        "comment": comment,
        "user": user_name,
    }
    data = server.feedback(body)
    emit(as_json, data, feedback_text(data))


def learn(server: ServerClient, as_json: bool, settings: dict[str, Any]) -> None:
    """Start a cycle in the server, show its progress, print how it ended."""
    from agent.progress import CycleProgress

    overrides = _given(settings)
    if overrides.get("eval_file"):  # the server resolves paths from its own folder
        overrides["eval_file"] = str(Path(overrides["eval_file"]).resolve())
    try:
        run = int(server.learn(overrides)["run"])
    except ServerError as exc:
        if exc.kind != "nothing_to_learn":
            raise
        reason = exc.message.removeprefix(NOTHING)
        if as_json:
            click.echo(to_json({"version": None, "reason": reason}))
        raise click.ClickException(reason) from exc
    last: dict[str, Any] | None = None
    try:
        with CycleProgress(enabled=sys.stderr.isatty() or not as_json) as progress:
            while True:
                view = server.learn_run(run)
                event = {k: view.get(k) for k in ("stage", "step", "total", "loss")}
                if event != last and event["stage"] != "prepare":
                    progress(event)
                    last = event
                if view["status"] != "running":
                    break
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        click.echo(
            f"stopped watching: learning run {run} goes on in the server "
            "(`learnloop status` shows it)",
            err=True,
        )
        sys.exit(130)
    if view["status"] != "succeeded" or not view.get("version"):
        raise click.ClickException(view.get("error") or f"learning run {run} {view['status']}")
    data = cycle_view(view, server.versions())
    emit(as_json, data, cycle_summary(data))


def cycle_view(view: dict[str, Any], versions: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished run as ``learn --json`` prints it through a server: the run's view and
    its version's record, under the names CycleResult.to_dict() uses."""
    v = next(x for x in versions if x["id"] == view["version"])
    seconds = None
    if view.get("started_at") and view.get("finished_at"):
        delta = datetime.fromisoformat(view["finished_at"]) - datetime.fromisoformat(
            view["started_at"]
        )
        seconds = round(delta.total_seconds(), 2)
    return {
        **view,
        "run_id": view["run"],
        "parent": v["parent"],
        "method": v["method"],
        "sft_examples": v["sft_examples"],
        "dpo_pairs": v["dpo_pairs"],
        "kto_rows": v["kto_rows"],
        "metrics": v["metrics"],
        "gate": v["gate"],
        "adapter_path": v["adapter_path"],
        "seconds": seconds,
    }


def versions(server: ServerClient, as_json: bool) -> None:
    data = server.versions()
    emit(as_json, data, versions_text(data))


def log(server: ServerClient, limit: int, as_json: bool) -> None:
    data = server.log(limit)
    emit(as_json, data, turns_text(data))


def status(server: ServerClient, as_json: bool) -> None:
    data = server.status()
    emit(as_json, data, status_text(data))


def _who(server: ServerClient, user_name: str | None) -> None:
    if user_name:
        note(f"--user is not sent: the server at {server.url} records the switch as its own")


def activate(
    server: ServerClient, version: str, why: str, user_name: str | None, as_json: bool
) -> None:
    _who(server, user_name)
    swap = server.activate(version, why)
    data = {"previous": swap["previous"], "active": swap["active"]}
    emit(as_json, data, switched_text(data))


def rollback(server: ServerClient, why: str, user_name: str | None, as_json: bool) -> None:
    _who(server, user_name)
    swap = server.rollback(why)
    data = {"previous": swap["previous"], "active": swap["active"]}
    emit(as_json, data, switched_text(data))
