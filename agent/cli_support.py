"""What every ``learnloop`` command module shares: config from flags, JSON or text
output, the store, quiet ML libraries."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from agent.options import build_config

T = TypeVar("T")


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
        from agent.report import to_json

        click.echo(to_json(value))
    else:
        human()


def config_from(cls: type[T], values: dict[str, Any]) -> T:
    """A config from CLI values; a value it refuses becomes a one-line usage error."""
    from agent.runtime import UsageError

    try:
        return build_config(cls, values)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def open_store() -> Any:
    """The local store (commands routed through a running server never call this)."""
    from storage.store import Store

    return Store()
