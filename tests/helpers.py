"""Small helpers shared by the CLI tests (not fixtures: plain functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from agent.cli import cli


def run_cli(model: Path | None, *args: str, input: str | None = None) -> Result:
    """Invoke ``learnloop [--model MODEL] ARGS`` in-process, the way a shell would."""
    prefix = ["--model", str(model)] if model else []
    return CliRunner().invoke(cli, [*prefix, *args], input=input, catch_exceptions=False)


def run_json(model: Path | None, *args: str) -> Any:
    result = run_cli(model, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
