"""Requests that name files or ask for too much: a 4xx naming the problem, nothing run.

A real server over the tiny model (tests/serving.py) and the official HTTP answers; the
learn settings' own bounds are in tests/test_learn_settings.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from learnloop.storage.home import data_root
from tests.helpers import refused
from tests.serving import Running, running_server


def learn(server: Running, body: Any) -> httpx.Response:
    with server.client() as http:
        return http.post("/v1/learn", json=body)


@pytest.fixture
def server(tiny_model_dir: Path, tmp_path: Path) -> Any:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    with running_server(tiny_model_dir, allow_files=(allowed,)) as running:
        yield running


@pytest.mark.parametrize("setting", ["eval_file", "accelerate_config"])
@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/zero", "../../outside.jsonl"])
def test_a_file_outside_the_allowed_folders_is_refused(
    server: Running, path: str, setting: str
) -> None:
    refused(learn(server, {setting: path}), 403, "permission_error", "--allow-files")
    assert server.state.store.runs() == []


def test_a_missing_file_in_the_data_root_is_a_400_not_a_500(server: Running) -> None:
    with server.client() as http:
        answer = http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]}
        ).json()
        fix = {"turn_id": answer["turn_id"], "rating": "down", "correction": "Hello."}
        http.post("/v1/feedback", json=fix)
    missing = data_root() / "tasks.jsonl"
    refused(learn(server, {"eval_file": str(missing)}), 400, "invalid_request_error", "tasks.jsonl")
    missing = data_root() / "accelerate.yaml"
    said = learn(server, {"accelerate_config": str(missing)})
    refused(said, 400, "invalid_request_error", "accelerate_config: no file")
    assert server.state.store.runs() == []


def test_a_file_in_an_allowed_folder_is_read(server: Running, tmp_path: Path) -> None:
    tasks = tmp_path / "allowed" / "tasks.jsonl"
    tasks.write_text(json.dumps({"text": "Shares rose.", "label": "positive"}) + "\n")
    # read and accepted: what stops the cycle is that no feedback waits
    refused(learn(server, {"eval_file": str(tasks)}), 422, "nothing_to_learn", "feedback")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"bogus": 1}, 400, ("unknown learn setting", "bogus")),
        ({"max_steps": "3"}, 422, ("max_steps",)),
        ({"gate": 1}, 422, ("gate",)),
        ({"sft_epochs": -1}, 400, ("sft_epochs",)),
    ],
)
def test_bad_learn_settings_are_named(
    server: Running, body: dict[str, Any], status: int, words: tuple[str, ...]
) -> None:
    kind = "invalid_request_error"
    refused(learn(server, body), status, kind, *words)
    assert server.state.store.runs() == []


@pytest.mark.parametrize("limit", ["-5", "0", "1e30", "100000"])
def test_list_limits_out_of_range_are_refused(server: Running, limit: str) -> None:
    with server.client() as http:
        for path in ("/v1/log", "/v1/threads"):
            refused(http.get(path, params={"limit": limit}), 422, "invalid_request_error", "limit")
