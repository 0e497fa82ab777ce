"""The ``learnloop`` command line.

Each command parses its flags, gets the one service it talks to (``connect``: a running
server for the data root, else this process on the local store, see agent/service.py),
calls one use case and renders the result (agent/report.py), as text or ``--json``.
Errors the user can act on (:class:`LearnloopError`: bad input, unknown ids, a locked or
newer database, a missing model) become one line on stderr and exit status 1, here and
nowhere else; nothing stored is changed by a command that fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from learnloop.agent.cli_bench import bench
from learnloop.agent.cli_data import control, export, history
from learnloop.agent.cli_federate import federate
from learnloop.agent.cli_forget import forget
from learnloop.agent.cli_keys import keys
from learnloop.agent.cli_support import (
    MODEL_HELP,
    config_from,
    connect,
    emit,
    model_option,
    quiet_libraries,
    read_trajectory,
    show_step,
    toolbox_from,
    tools_options,
)
from learnloop.agent.cli_versions import versions_rm
from learnloop.agent.config import GenerationConfig, ServingConfig
from learnloop.agent.options import dataclass_options, pop_config_values
from learnloop.learning.config import LearnConfig
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import LearnloopError, UsageError
from learnloop.storage.records import LOCAL_USER


class LearnloopGroup(click.Group):
    """Turns the errors a user can act on into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LearnloopError as exc:
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
    help=MODEL_HELP,
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


USER_OPTION = click.option(
    "--user",
    "user_name",
    default=LOCAL_USER,
    show_default=True,
    help="whose turns and feedback these are (`learnloop forget --user` deletes them); a "
    "server that requires keys records the key's user instead",
)


@cli.command()
@model_option
@click.option("--thread", "thread_id", default=None, help="resume this thread (see `log`)")
@USER_OPTION
@dataclass_options(GenerationConfig)
@tools_options
@dataclass_options(TriggerConfig)
@click.pass_context
def chat(ctx: click.Context, thread_id: str | None, user_name: str, **values: Any) -> None:
    """Chat in the terminal; /help inside lists the commands (/up /down /fix /learn ...).

    Learning starts by itself in the background once --learn-after new feedback items
    wait and --learn-every-minutes passed since the last cycle (--auto-learn false: off).
    With a server running for the data root, the chat goes through it.

    Answers are short by default (see `learnloop ask --help`: --max-new-tokens 128, the
    first paragraph unless asked for more, --whole-answer for all of it); when a thread
    grows longer than the model's context, its oldest turns are left out, said on stderr.
    """
    from learnloop.agent.repl import Repl

    quiet_libraries()
    trigger = pop_config_values(TriggerConfig, values)
    with connect(ctx, values, trigger) as service:
        if thread_id is not None:
            service.thread(thread_id)  # an unknown thread fails before the model loads
        Repl(service, thread_id, user_name).run()


@cli.command()
@model_option
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
@click.option(
    "--allow-files",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="FOLDER",
    help="a folder whose files requests may name (POST /v1/learn's eval_file), besides "
    "the data root; repeat for more",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="a host name clients reach the server by (a LAN name, a proxy's), besides --host, "
    "127.0.0.1, localhost and [::1]; other names are refused (421); repeat for more",
)
@click.option(
    "--max-prompt-tokens",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="the most tokens of a chat request's prompt the model sees (its messages or "
    "thread history, rendered; the model's context bounds it too): the oldest earlier "
    "messages are left out to fit (X-Learnloop-Trimmed says how many), and a message "
    "that does not fit alone is refused with a 400",
)
@dataclass_options(GenerationConfig)
@tools_options
@dataclass_options(TriggerConfig)
@dataclass_options(ServingConfig)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    bench_results: Path | None,
    allow_files: tuple[Path, ...],
    allow_hosts: tuple[str, ...],
    max_prompt_tokens: int,
    **values: Any,
) -> None:
    """Serve the web chat, the learning dashboard and an OpenAI-compatible API.

    The server owns the database while it runs: every other command for the same data
    root (`chat` included) goes through it. Open http://HOST:PORT/ in a browser; point
    OpenAI clients at http://HOST:PORT/v1 with model "learnloop".
    """
    from learnloop.agent.server.run import serve as run_server

    quiet_libraries()
    trigger = config_from(TriggerConfig, pop_config_values(TriggerConfig, values))
    serving = config_from(ServingConfig, pop_config_values(ServingConfig, values))
    toolbox, limits = toolbox_from(values)
    generation = config_from(GenerationConfig, values)
    run_server(
        ctx.obj["model"],
        host,
        port,
        generation,
        trigger,
        bench_results,
        allow_files,
        allow_hosts=allow_hosts,
        max_prompt_tokens=max_prompt_tokens,
        toolbox=toolbox,
        limits=limits,
        serving=serving,
    )


@cli.command()
@model_option
@click.argument("text")
@click.option("--thread", "thread_id", default=None, help="continue this thread")
@USER_OPTION
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(GenerationConfig)
@tools_options
@click.pass_context
def ask(
    ctx: click.Context,
    text: str,
    thread_id: str | None,
    user_name: str,
    as_json: bool,
    **values: Any,
) -> None:
    """Ask one question; the answer streams, the turn id is printed for feedback.

    Answers are short by default, to be quick on a CPU: at most --max-new-tokens (128),
    and they end at their first paragraph unless the question asks for more (a list,
    steps, detail, code, "write ...", "more"); --whole-answer turns that stop off. A
    thread longer than the model's context has its oldest turns left out (said on stderr).
    """
    from learnloop.agent.report import answer_footer
    from learnloop.agent.runtime import check_message

    check_message(text)  # before loading the model: bad input fails fast
    quiet_libraries()
    with connect(ctx, values) as service:
        on_token = None if as_json else (lambda t: click.echo(t, nl=False))
        on_step = None if as_json else show_step
        result = service.ask(
            text, thread_id=thread_id, on_token=on_token, on_step=on_step, who=user_name
        )

    def text_end() -> None:
        click.echo()  # the streamed answer ends its line
        click.echo(answer_footer(result), err=True)

    emit(as_json, result, text_end)


@cli.command()
@model_option
@click.argument("turn_id", type=int)
@click.argument("rating", nargs=-1, required=True, type=click.Choice(["up", "down"]))
@click.option("--correction", default=None, help="a better answer for this turn")
@click.option(
    "--trajectory",
    type=click.File("r"),
    default=None,
    metavar="FILE",
    help="a corrected trajectory instead of --correction: a JSON list of assistant steps "
    '(with "tool_calls"), tool results and the final answer; a call without a result is '
    "run with --tools (- reads stdin)",
)
@click.option("--comment", default=None, help="a free-text note kept with the feedback")
@click.option(
    "--user",
    "user_name",
    default=None,
    help="who gives the feedback [default: local, the operator, as in the REPL and web page]",
)
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.option("--tools", multiple=True, metavar="SPEC", help="tools to run a call's result with")
@dataclass_options(TriggerConfig)
@click.pass_context
def feedback(
    ctx: click.Context,
    turn_id: int,
    rating: tuple[str, ...],
    correction: str | None,
    trajectory: Any,
    comment: str | None,
    user_name: str | None,
    as_json: bool,
    **values: Any,
) -> None:
    """Rate turn TURN_ID: `up` or `down`, optionally with a corrected answer.

    When enough new feedback waits (--learn-after, --learn-every-minutes), a learning
    cycle starts in the background; `learnloop status` shows its progress.
    """
    from learnloop.agent.checks import check_rating
    from learnloop.agent.report import feedback_text

    if len(rating) != 1:
        raise UsageError("give exactly one rating: up or down")
    check_rating(rating[0], correction)  # before the trigger flags are looked at
    fixed = read_trajectory(trajectory) if trajectory is not None else None
    tools = {"tools": values.pop("tools", ())}
    with connect(ctx, tools, trigger=values) as service:
        data = service.feedback(
            turn_id,
            rating[0],
            correction=correction,
            correction_messages=fixed,
            comment=comment,
            who=user_name or LOCAL_USER,
        )
    emit(as_json, data, lambda: click.echo(feedback_text(data)))


@cli.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@dataclass_options(LearnConfig)
@click.pass_context
def learn(ctx: click.Context, as_json: bool, **values: Any) -> None:
    """Run one learning cycle now: train on the feedback given, judge the new version
    against the active one, and activate it when it is better (the verdict says why).
    With no feedback since the last cycle it does nothing (--force trains anyway)."""
    from learnloop.agent.progress import CycleProgress
    from learnloop.agent.report import cycle_summary
    from learnloop.learning.cycle import NothingToLearn

    settings = pop_config_values(LearnConfig, values)
    config_from(LearnConfig, settings)  # bad settings fail before anything runs
    with connect(ctx) as service:
        try:
            with CycleProgress(enabled=sys.stderr.isatty() or not as_json) as progress:
                result = service.learn(settings, progress=progress, who="learnloop learn")
        except NothingToLearn as exc:
            if as_json:
                click.echo(json.dumps({"version": None, "reason": str(exc)}))
            raise
    emit(as_json, result, lambda: click.echo(cycle_summary(result)))


@cli.command()
@click.argument("run_id", metavar="[RUN]", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="print the run as a JSON object")
@click.pass_context
def cancel(ctx: click.Context, run_id: int | None, as_json: bool) -> None:
    """Stop the learning run that is running (or RUN), wherever it runs: a `learn` in
    another terminal, a background cycle, or a server's. It is recorded as cancelled; the
    active version does not change."""
    with connect(ctx) as service:
        data = service.cancel(run_id)
    emit(as_json, data, lambda: click.echo(f"learning run {data['run']}: {data['status']}"))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of a table")
@click.pass_context
def versions(ctx: click.Context, as_json: bool) -> None:
    """List model versions: parent, time, method, data counts, metrics, which is active.

    `versions compare A B` shows two versions' answers to the control prompts;
    `versions rm VERSION...` (or --rejected) deletes versions' adapter files."""
    from learnloop.agent.report import versions_text

    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as service:
        data = service.versions()
    emit(as_json, data, lambda: click.echo(versions_text(data)))


@versions.command("compare")
@click.argument("a", required=False)
@click.argument("b", required=False)
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def versions_compare(ctx: click.Context, a: str | None, b: str | None, as_json: bool) -> None:
    """Versions A and B's answers to the control prompts, those that differ side by side.

    One version: it beside its parent; none: the active version beside its parent."""
    from learnloop.agent.compare import compare_text

    older, newer = (a, b) if b is not None else (None, a)
    with connect(ctx) as service:
        data = service.compare(older, newer)
    emit(as_json, data, lambda: click.echo(compare_text(data)))


@cli.command()
@click.argument("version_id", metavar="VERSION")
@click.option("--why", default="activated by hand", show_default=True, help="recorded reason")
@click.option("--user", "user_name", default=None, help="who switches [default: $USER]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def activate(
    ctx: click.Context, version_id: str, why: str, user_name: str | None, as_json: bool
) -> None:
    """Make VERSION (or `base`) the one that answers; running chats switch before their
    next answer."""
    with connect(ctx) as service:
        data = service.activate(version_id, why=why, who=user_name)
    _switched(as_json, data)


@cli.command()
@click.option("--why", default="rolled back by hand", show_default=True, help="recorded reason")
@click.option("--user", "user_name", default=None, help="who switches [default: $USER]")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def rollback(ctx: click.Context, why: str, user_name: str | None, as_json: bool) -> None:
    """Activate the parent of the active version (the one it was trained to replace)."""
    with connect(ctx) as service:
        data = service.rollback(why=why, who=user_name)
    _switched(as_json, data)


def _switched(as_json: bool, data: dict[str, Any]) -> None:
    from learnloop.agent.report import switched_text

    emit(as_json, data, lambda: click.echo(switched_text(data)))


@cli.command()
@click.option("-n", "limit", default=10, show_default=True, help="how many recent turns")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
@click.pass_context
def log(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show recent turns with their feedback."""
    from learnloop.agent.report import turns_text

    with connect(ctx) as service:
        data = service.log(limit)
    emit(as_json, data, lambda: click.echo(turns_text(data)))


@cli.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Model, data root, active version, counts of turns and feedback."""
    from learnloop.agent.report import status_text

    with connect(ctx) as service:
        data = service.status()
    emit(as_json, data, lambda: click.echo(status_text(data)))


for command in (control, history, export, bench, keys, forget, federate):
    cli.add_command(command)
versions.add_command(versions_rm)


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
