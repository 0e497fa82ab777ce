"""The CLI with a running server for its data root: commands go through it over HTTP.

A real server runs in the test process (tests/serving.py); the test writes the
``server.json`` a ``learnloop serve`` writes. Opening the store locally is made to fail,
so every passing command here went through the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import learnloop.agent.cli_support
from learnloop.agent.client import find_server
from learnloop.storage.home import server_file
from learnloop.storage.store import Store
from tests.helpers import run_cli, run_json
from tests.serving import Running, free_port, running_server

LOCAL_STORE = learnloop.agent.cli_support.open_store
FAST_LEARN = ("--max-steps", "3", "--sft-learning-rate", "1e-2", "--gate", "false")


def write_server_file(url: str, pid: int, **extra: Any) -> Path:
    path = server_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": pid, **extra}))
    return path


def no_local_store() -> None:
    raise AssertionError("the command opened the database instead of asking the server")


@pytest.fixture
def server(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    with running_server(tiny_model_dir) as running:
        path = write_server_file(running.url, os.getpid())
        monkeypatch.setattr(learnloop.agent.cli_support, "open_store", no_local_store)
        yield running
        path.unlink(missing_ok=True)


def one_error_line(result: Any) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return str(lines[0])


class TestThroughTheServer:
    def test_ask_streams_the_servers_answer_and_logs_the_turn_there(
        self, server: Running, tiny_model_dir: Path
    ) -> None:
        answer = run_json(tiny_model_dir, "ask", "What is the capital of France?")
        logged = server.state.store.get_turn(answer["turn_id"]).log
        assert set(answer) == {"turn_id", "thread_id", "answer", "version"}
        assert (logged.answer, logged.version) == (answer["answer"], "base")
        assert logged.thread_id == answer["thread_id"]

        text = run_cli(
            tiny_model_dir, "ask", "And of Italy?", "--thread", answer["thread_id"], "--seed", "3"
        )
        assert text.exit_code == 0, text.output
        turn = server.state.store.recent_turns(1)[0]
        assert text.stdout == turn.log.answer + "\n"  # the streamed tokens, a line of their own
        assert turn.log.thread_id == answer["thread_id"]
        assert turn.log.settings["seed"] == 3
        footer = f"[turn {turn.id} · thread {answer['thread_id']} · version base]"
        assert footer in text.stderr

    def test_feedback_is_recorded_by_the_server_under_the_cli_user(
        self, server: Running, tiny_model_dir: Path
    ) -> None:
        turn = run_json(tiny_model_dir, "ask", "Capital of France?")["turn_id"]
        given = run_json(
            tiny_model_dir, "feedback", str(turn), "down", "--correction", "Paris.", "--user", "ada"
        )
        assert given == {
            "feedback_id": given["feedback_id"],
            "turn_id": turn,
            "rating": "down",
            "learning_started": None,
        }
        (row,) = server.state.store.get_turn(turn).feedback
        assert (row.rating, row.correction, row.user_name) == ("down", "Paris.", "ada")
        text = run_cli(tiny_model_dir, "feedback", str(turn), "up")
        assert text.stdout.startswith(f"feedback {given['feedback_id'] + 1} recorded for turn")

    def test_versions_log_and_status_print_the_servers_json(
        self, server: Running, tiny_model_dir: Path
    ) -> None:
        run_json(tiny_model_dir, "ask", "Hello")
        with server.client() as http:
            expected = {
                "versions": http.get("/v1/versions").json(),
                "log": http.get("/v1/log", params={"limit": 5}).json(),
                "status": http.get("/v1/status").json(),
            }
        assert run_json(tiny_model_dir, "versions") == expected["versions"]
        assert run_json(tiny_model_dir, "log", "-n", "5") == expected["log"]
        assert run_json(tiny_model_dir, "status") == expected["status"]
        assert "turns: 1" in run_cli(tiny_model_dir, "status").stdout

    def test_learning_through_the_server_activates_v1_and_it_answers_next(
        self, server: Running, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        turn = run_json(tiny_model_dir, "ask", "Capital of France?")["turn_id"]
        run_json(tiny_model_dir, "feedback", str(turn), "down", "--correction", "Paris.")
        result = run_json(tiny_model_dir, "learn", *FAST_LEARN)
        assert (result["version"], result["promoted"], result["run"]) == ("v1", True, 1)
        assert result["status"] == "succeeded" and result["stage"] == "done"
        assert result["sft_examples"] >= 1 and result["losses"]
        assert any("gate off" in reason for reason in result["reasons"])
        assert server.state.active == "v1"
        assert run_json(tiny_model_dir, "ask", "Capital of France?")["version"] == "v1"

        back = run_json(tiny_model_dir, "rollback", "--why", "testing")
        assert back == {"previous": "v1", "active": "base"}
        assert run_cli(tiny_model_dir, "activate", "v1").stdout == (
            "active version: v1 (was base)\n"
        )
        assert server.state.active == "v1"
        through = {
            name: run_cli(tiny_model_dir, *args).stdout
            for name, args in {"versions": ("versions",), "log": ("log",)}.items()
        }
        through_json = run_json(tiny_model_dir, "versions"), run_json(tiny_model_dir, "log")

        # the same commands without the server: the same text and JSON
        server_file().unlink()
        monkeypatch.setattr(learnloop.agent.cli_support, "open_store", LOCAL_STORE)
        local = {name: run_cli(tiny_model_dir, name).stdout for name in through}
        assert local == through
        assert (run_json(tiny_model_dir, "versions"), run_json(tiny_model_dir, "log")) == (
            through_json
        )

    def test_learning_with_nothing_to_learn_says_why_as_locally(
        self, server: Running, tiny_model_dir: Path
    ) -> None:
        result = run_cli(tiny_model_dir, "learn", "--json")
        line = one_error_line(result)
        assert json.loads(result.stdout) == {"version": None, "reason": line[len("Error: ") :]}
        assert "no feedback" in line and "nothing to learn: " not in line

    def test_a_server_error_is_one_line_and_exit_1(
        self, server: Running, tiny_model_dir: Path
    ) -> None:
        line = one_error_line(run_cli(tiny_model_dir, "feedback", "999", "up"))
        assert "999" in line
        assert "nothing" in one_error_line(run_cli(tiny_model_dir, "rollback"))

    def test_chat_goes_through_it(self, server: Running, tiny_model_dir: Path) -> None:
        lines = ["Hello", "/up", "/fix Hi there", "/regen", "/status", "/quit"]
        out = run_cli(tiny_model_dir, "chat", "--max-new-tokens", "4", input="\n".join(lines))
        assert out.exit_code == 0, out.output
        assert f"through {server.url}" in out.output
        assert "[turn 1 · base]" in out.output and "[turn 2 · base]" in out.output
        assert "noted: turn 1 👍" in out.output and "a better answer for turn 1" in out.output
        assert "2 turns, 2 feedback (1 up, 1 down, 1 corrections)" in out.output
        turns = server.state.store.recent_turns(5)
        assert [t.log.regen_of for t in turns] == [None, 1]

    def test_the_data_commands_go_through_it_with_the_local_output(
        self, server: Running, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        turn = run_json(tiny_model_dir, "ask", "Hello there")["turn_id"]
        run_cli(tiny_model_dir, "feedback", str(turn), "down", "--correction", "General Kenobi")
        added = run_cli(tiny_model_dir, "control", "add", "2+2?", "4")
        assert added.exit_code == 0 and "added to the control set" in added.stdout
        created = run_json(tiny_model_dir, "keys", "create", "alice")
        assert created["key"].startswith("ll-")
        assert server.state.store.user_of_key(created["key"]) == "alice"  # at once
        exported = run_json(tiny_model_dir, "export", "--current", "--out", str(tmp_path / "a"))
        assert exported["source"] == "current feedback" and (tmp_path / "a" / "sft.jsonl").exists()
        reads = [("history",), ("control", "list"), ("keys", "list")]
        through = [run_cli(tiny_model_dir, *args).stdout for args in reads]
        through_json = [run_json(tiny_model_dir, *args) for args in reads]

        server_file().unlink()
        monkeypatch.setattr(learnloop.agent.cli_support, "open_store", LOCAL_STORE)
        assert [run_cli(tiny_model_dir, *args).stdout for args in reads] == through
        assert [run_json(tiny_model_dir, *args) for args in reads] == through_json
        local = run_json(tiny_model_dir, "export", "--current", "--out", str(tmp_path / "b"))
        assert {k: v for k, v in local.items() if k != "out"} == {
            k: v for k, v in exported.items() if k != "out"
        }

    def test_a_user_key_may_not_manage_keys(self, tiny_model_dir: Path) -> None:
        import httpx

        with Store() as store:
            _, key = store.create_api_key("bob")
        with running_server(tiny_model_dir, require_keys=True) as running:
            answer = httpx.post(
                f"{running.url}/v1/keys",
                json={"name": "mallory"},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert answer.status_code == 403
            assert answer.json()["error"]["type"] == "permission_error"
            assert [k.name for k in running.state.store.api_keys()] == ["bob"]


class TestNoServer:
    def test_a_server_file_of_a_dead_process_is_removed_and_the_command_works_locally(
        self, tiny_model_dir: Path
    ) -> None:
        gone = subprocess.Popen([sys.executable, "-c", ""])
        gone.wait()
        path = write_server_file(f"http://127.0.0.1:{free_port()}", gone.pid)
        assert run_json(tiny_model_dir, "versions")[0]["id"] == "base"
        assert not path.exists()

    def test_a_server_that_does_not_answer_is_ignored(self, tiny_model_dir: Path) -> None:
        write_server_file(f"http://127.0.0.1:{free_port()}", os.getpid())
        assert find_server() is None
        assert run_json(tiny_model_dir, "status")["turns"] == 0

    def test_a_server_for_another_data_root_is_ignored(
        self, server: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        # the server says its data root in /v1/status (to the operator only)
        monkeypatch.setattr("learnloop.agent.server.service.data_root", lambda: tmp_path / "other")
        write_server_file(server.url, os.getpid())
        assert find_server() is None


def test_the_servers_token_is_sent_as_a_bearer_key(tiny_model_dir: Path) -> None:
    with Store() as store:
        _, key = store.create_api_key("ci")
    with running_server(tiny_model_dir, require_keys=True) as running:
        write_server_file(running.url, os.getpid(), token=key)
        assert run_json(tiny_model_dir, "status")["turns"] == 0
        write_server_file(running.url, os.getpid())
        assert "needs an API key" in one_error_line(run_cli(tiny_model_dir, "status"))


def test_a_finished_run_reads_as_the_local_summary_without_the_heldout_count() -> None:
    from learnloop.agent.report import cycle_summary, cycle_view

    view = {
        "run": 2,
        "status": "succeeded",
        "version": "v2",
        "promoted": False,
        "reasons": ["control set drops"],
        "summary": "not promoted: but worse at general questions (5 of 12 right)",
        "started_at": "2026-01-01T10:00:00",
        "finished_at": "2026-01-01T10:01:30.5",
    }
    record = {"id": "v2", "parent": "v1", "method": "sft", "sft_examples": 5, "dpo_pairs": 0}
    record |= {"kto_rows": 0, "metrics": {}, "gate": {}, "adapter_path": "/a/v2"}
    data = cycle_view(view, [{"id": "v1"}, record])
    assert (data["run_id"], data["seconds"], data["parent"]) == (2, 90.5, "v1")
    assert cycle_summary(data) == (
        "version v2 not promoted: but worse at general questions (5 of 12 right)\n"
        "  (sft: 5 SFT examples, 0 DPO pairs, 0 KTO rows; 90 s; v1 stays active)\n"
        "  gate: control set drops"
    )
