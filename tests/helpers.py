"""Small helpers shared by the CLI tests (not fixtures: plain functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from learnloop.agent.cli import cli
from learnloop.storage.records import TurnLog


def run_cli(model: Path | None, *args: str, input: str | None = None) -> Result:
    """Invoke ``learnloop [--model MODEL] ARGS`` in-process, the way a shell would."""
    prefix = ["--model", str(model)] if model else []
    return CliRunner().invoke(cli, [*prefix, *args], input=input, catch_exceptions=False)


def refused(response: Any, status: int, kind: str, *words: str) -> str:
    """Assert that an API answer (an httpx response) is the error ``status`` of type
    ``kind`` whose message names every one of ``words``; return the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind, error
    assert all(w in error["message"] for w in words), error["message"]
    return str(error["message"])


def run_json(model: Path | None, *args: str) -> Any:
    result = run_cli(model, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def make_log(
    user_message: str = "hello",
    answer: str = "hi there",
    *,
    thread_id: str = "t1",
    regen_of: int | None = None,
    **overrides: Any,
) -> TurnLog:
    fields: dict[str, Any] = {
        "thread_id": thread_id,
        "user_message": user_message,
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": user_message},
        ],
        "prompt": f"<|system|>You are helpful.<|user|>{user_message}<|assistant|>",
        "answer": answer,
        "version": "base",
        "model": "SmolLM2-135M-Instruct",
        "settings": {"temperature": 0.7, "max_new_tokens": 64, "stop": ["</s>"]},
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "first_token_ms": 41.5,
        "total_ms": 230.25,
        "nodes": ["load_history", "model", "log_turn"],
        "regen_of": regen_of,
        "interrupted": False,
    }
    fields.update(overrides)
    return TurnLog(**fields)
