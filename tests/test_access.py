"""Access, found by probing: who sees what, what the open endpoints say, and how much one
request may cost. A real server over the tiny model (tests/serving.py), real HTTP with httpx.

Invariants tested here:

- a user key sees and rates only its own threads and turns (another's, and the
  operator's, are a 404) and gets 403 for switching versions, learning, adding control
  prompts, exporting, the history and the keys; it reads versions, models, runs, status
  (without the data root) and the dashboard; an admin key sees and may do all; keys
  made before roles are user keys, threads made before owners are the operator's;
- ``/healthz`` says ``{"status": "ok"}`` and nothing else;
- a prompt over ``--max-prompt-tokens`` or the model's context (counted as the model would
  see it) has its oldest earlier messages left out; one that does not fit even so is a 400
  naming its count and the bound, and logs nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from learnloop.agent.server.chat_request import prompt_messages
from learnloop.storage import migrations
from learnloop.storage.home import data_root
from learnloop.storage.keys import hash_key, new_key
from learnloop.storage.store import Store
from tests.helpers import make_log, refused, run_cli, run_json
from tests.serving import Running, running_server

CHAT = {"messages": [{"role": "user", "content": "Hello"}]}
JSON = {"Content-Type": "application/json"}
TOKEN = re.compile(r'<meta name="learnloop-page-token" content="([^"]+)">')


# -- who sees what ------------------------------------------------------------------------


@pytest.fixture
def keyed(tiny_model_dir: Path) -> Iterator[tuple[Running, dict[str, dict[str, str]]]]:
    """A server that requires keys, with the user keys alice and bob and the admin key
    root; an operator's thread (as every thread made before owners existed); and one
    thread each of alice and bob."""
    auth = {}
    for name, flags in (("alice", ()), ("bob", ()), ("root", ("--admin",))):
        key = run_json(None, "keys", "create", name, *flags)["key"]
        auth[name] = {"Authorization": f"Bearer {key}"}
    with running_server(tiny_model_dir, require_keys=True) as server:
        server.state.store.add_turn(make_log("the operator's question", thread_id="op-thread"))
        with server.client() as http:
            for name in ("alice", "bob"):
                message = {"messages": [{"role": "user", "content": f"I am {name}"}]}
                answer = http.post("/v1/chat/completions", json=message, headers=auth[name])
                assert answer.status_code == 200, answer.text
        yield server, auth


def own(server: Running, name: str) -> tuple[str, int]:
    """(thread id, turn id) of the thread ``name`` started."""
    for turn in server.state.store.recent_turns(10):
        if turn.log.user_message == f"I am {name}":
            return turn.log.thread_id, turn.id
    raise AssertionError(f"no turn of {name}")


class TestWhoSeesWhat:
    def test_a_user_key_sees_and_rates_only_its_own_threads(
        self, keyed: tuple[Running, dict[str, dict[str, str]]]
    ) -> None:
        server, auth = keyed
        (alices, alice_turn), (bobs, bob_turn) = own(server, "alice"), own(server, "bob")
        operator_turn = server.state.store.thread_history("op-thread")[0].id
        before = server.counts()
        with server.client() as http:
            http.headers.update(auth["alice"])
            listed = [t["id"] for t in http.get("/v1/threads").json()]
            logged = [t["turn_id"] for t in http.get("/v1/log", params={"limit": 50}).json()]
            unknown = http.get("/v1/threads/no-such-thread").json()["error"]["message"]
            hidden = [http.get(f"/v1/threads/{t}") for t in (bobs, "op-thread")]
            rated = [
                http.post("/v1/feedback", json={"turn_id": t, "rating": "up"})
                for t in (bob_turn, operator_turn)
            ]
            continued = http.post("/v1/chat/completions", json={**CHAT, "thread_id": bobs})
            again = http.post("/v1/chat/completions", json={"messages": [], "regen_of": bob_turn})
            assert server.counts() == before  # none of that wrote anything

            mine = http.post("/v1/feedback", json={"turn_id": alice_turn, "rating": "up"})
            more = http.post("/v1/chat/completions", json={**CHAT, "thread_id": alices})
            thread = http.get(f"/v1/threads/{alices}").json()
        assert listed == [alices] and logged == [alice_turn]
        for answer, thread_id in zip(hidden, (bobs, "op-thread"), strict=True):
            # exactly as if it did not exist
            assert refused(answer, 404, "not_found_error") == unknown.replace(
                "no-such-thread", thread_id
            )
        for answer in (*rated, again):
            refused(answer, 404, "not_found_error", "no turn with id")
        refused(continued, 404, "not_found_error", f"no thread {bobs!r}")
        assert mine.status_code == 201 and more.status_code == 200
        assert more.json()["thread_id"] == alices and len(thread["turns"]) == 2
        assert [f.user_name for f in server.state.store.get_turn(alice_turn).feedback] == ["alice"]

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("POST", "/v1/versions/base/activate", {}),
            ("POST", "/v1/rollback", {}),
            ("POST", "/v1/learn", {}),
            ("POST", "/v1/control", {"prompt": "2+2?", "answer": "4"}),
            ("GET", "/v1/export", None),
            ("GET", "/v1/history", None),
            ("GET", "/v1/keys", None),
            ("POST", "/v1/keys", {"name": "mallory", "role": "admin"}),
            ("POST", "/v1/keys/bob/revoke", {}),
        ],
    )
    def test_a_user_key_may_not_switch_learn_export_or_manage_keys(
        self,
        keyed: tuple[Running, dict[str, dict[str, str]]],
        method: str,
        path: str,
        body: Any,
    ) -> None:
        server, auth = keyed
        before = server.counts()
        with server.client() as http:
            answer = http.request(method, path, json=body, headers={**auth["alice"], **JSON})
        refused(answer, 403, "permission_error", "keys create NAME --admin")
        assert server.counts() == before
        assert server.state.store.user_of_key(auth["bob"]["Authorization"][7:]) == "bob"

    def test_a_user_key_reads_the_shared_views(
        self, keyed: tuple[Running, dict[str, dict[str, str]]]
    ) -> None:
        server, auth = keyed
        with server.client() as http:
            http.headers.update(auth["alice"])
            reads = {
                path: http.get(path)
                for path in (
                    "/v1/versions",
                    "/v1/models",
                    "/v1/status",
                    "/v1/dashboard",
                    "/v1/learn",
                    "/v1/control",
                )
            }
        assert {p: r.status_code for p, r in reads.items()} == dict.fromkeys(reads, 200)
        status = reads["/v1/status"].json()
        assert status["data_root"] is None  # where the data lives is the operator's business
        assert status["turns"] == 3  # the counts are everyone's
        assert str(data_root()) not in reads["/v1/status"].text

    def test_an_admin_key_sees_and_may_do_everything(
        self, keyed: tuple[Running, dict[str, dict[str, str]]]
    ) -> None:
        server, auth = keyed
        bobs, bob_turn = own(server, "bob")
        with server.client() as http:
            http.headers.update(auth["root"])
            listed = {t["id"] for t in http.get("/v1/threads").json()}
            bobs_thread = http.get(f"/v1/threads/{bobs}")
            rated = http.post("/v1/feedback", json={"turn_id": bob_turn, "rating": "down"})
            switched = http.post("/v1/versions/base/activate", json={"why": "admin test"})
            history = http.get("/v1/history").json()
            keys = http.get("/v1/keys").json()
            status = http.get("/v1/status").json()
        assert listed == {own(server, "alice")[0], bobs, "op-thread"}
        assert bobs_thread.status_code == 200 and rated.status_code == 201
        assert switched.status_code == 200 and history[-1]["who"] == "api:root"
        assert [(k["name"], k["role"]) for k in keys] == [
            ("alice", "user"),
            ("bob", "user"),
            ("root", "admin"),
        ]
        assert status["data_root"] == str(data_root())


class TestKeyRoles:
    def test_keys_create_makes_user_keys_unless_told_admin(self) -> None:
        user = run_cli(None, "keys", "create", "ada")
        admin = run_json(None, "keys", "create", "grace", "--admin")
        assert user.exit_code == 0 and "user API key for ada" in user.stderr
        assert admin["role"] == "admin" and admin["key"].startswith("ll-")
        assert [(k["name"], k["role"]) for k in run_json(None, "keys", "list")] == [
            ("ada", "user"),
            ("grace", "admin"),
        ]
        listed = run_cli(None, "keys", "list").stdout.splitlines()
        assert [line.split()[:2] for line in listed] == [["ada", "user"], ["grace", "admin"]]

    def test_keys_made_before_roles_are_user_keys_and_old_threads_the_operators(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "old.duckdb"
        newer = [m for m in migrations.MIGRATIONS if m[0] >= 7]
        for entry in newer:
            migrations.MIGRATIONS.remove(entry)
        try:
            with Store(path) as old:  # as learnloop wrote them before m007
                key = new_key()
                old.db.execute(
                    "INSERT INTO api_keys (name, key_hash) VALUES ('carol', ?)", [hash_key(key)]
                )
                old.db.execute("INSERT INTO threads (id) VALUES ('old-thread')")
                old.db.execute(  # a turn as that schema had them (no steps, no tools)
                    """INSERT INTO turns (thread_id, user_message, messages, prompt, answer,
                           version, model, settings, total_ms, nodes)
                       VALUES ('old-thread', 'q', '[]', 'p', 'a', 'base', 'm', '{}', 1.0, '[]')"""
                )
        finally:
            migrations.MIGRATIONS.extend(newer)
            migrations.MIGRATIONS.sort()
        with Store(path) as store:
            record = store.api_key_of(key)
            assert record is not None and (record.name, record.role) == ("carol", "user")
            assert store.thread_owner("old-thread") is None
            assert store.owned_threads("carol") == []
            assert [t.id for t in store.threads()] == ["old-thread"]


# -- what the open endpoints say ----------------------------------------------------------


def test_healthz_says_nothing_but_health(
    keyed: tuple[Running, dict[str, dict[str, str]]],
) -> None:
    server, _ = keyed
    with server.client() as http:
        health = http.get("/healthz")
        status = http.get("/v1/status")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert status.status_code == 401  # where the data lives takes a key


# -- how much one request may cost --------------------------------------------------------


class TestThePromptBound:
    def test_the_default_bound_refuses_a_300_kb_request_at_once(self, server: Running) -> None:
        words = "The quick brown fox jumps over the lazy dog. " * 333  # ~15,000 characters
        body = {"messages": [{"role": "user", "content": words} for _ in range(20)]}
        before = server.counts()
        started = time.monotonic()
        with server.client() as http:
            answer = http.post("/v1/chat/completions", json=body)
            streamed = http.post("/v1/chat/completions", json={**body, "stream": True})
        # the earlier 19 messages could be left out, but the last alone is over the model's
        # context (the tiny model's 1024 tokens, 8 of them for the answer)
        message = refused(answer, 400, "invalid_request_error", "at most 1016", "1024 tokens")
        count = re.search(r"the prompt is (\d+) tokens even without earlier messages", message)
        assert count is not None and int(count.group(1)) > 3000
        tokens = int(count.group(1))
        refused(streamed, 400, "invalid_request_error", f"the prompt is {tokens} tokens")
        assert time.monotonic() - started < 60  # refused before generating
        assert server.counts() == before

    def test_the_bound_counts_what_the_model_would_see(self, tiny_model_dir: Path) -> None:
        """The count is the prompt the answer would have: the conversation sent, a
        thread's stored history, a regeneration's original messages."""
        with running_server(tiny_model_dir) as server, server.client() as http:
            first = http.post("/v1/chat/completions", json=CHAT).json()
            thread = first["thread_id"]
            expected = prompt_messages(server.state, None, "And then?", thread)
            second = http.post(
                "/v1/chat/completions",
                json={"thread_id": thread, "messages": [{"role": "user", "content": "And then?"}]},
            ).json()
            logged = server.state.store.get_turn(second["turn_id"]).log
        assert expected == logged.messages  # the history is rebuilt as the graph builds it
        short, long = first["usage"]["prompt_tokens"], second["usage"]["prompt_tokens"]
        assert short < long == logged.prompt_tokens

        # under a lower bound the oldest messages are left out, and the response says so
        with running_server(tiny_model_dir, max_prompt_tokens=long - 1) as bounded:
            with bounded.client() as http:
                fresh = http.post("/v1/chat/completions", json=CHAT)
                regen = http.post(
                    "/v1/chat/completions", json={"messages": [], "regen_of": second["turn_id"]}
                )
                more = http.post(
                    "/v1/chat/completions",
                    json={"thread_id": thread, "messages": [{"role": "user", "content": "Hm?"}]},
                )
            store = bounded.state.store
            regen_log = store.get_turn(regen.json()["turn_id"]).log
            more_log = store.get_turn(more.json()["turn_id"]).log
        assert fresh.status_code == 200 and fresh.json()["usage"]["prompt_tokens"] == short
        assert fresh.headers["X-Learnloop-Trimmed"] == "0"
        assert regen.headers["X-Learnloop-Trimmed"] == "2" and regen.json()["trimmed"] == 2
        assert regen_log.messages == logged.messages[2:]
        assert regen.json()["usage"]["prompt_tokens"] <= long - 1
        assert int(more.headers["X-Learnloop-Trimmed"]) >= 2
        assert more_log.messages[-1] == {"role": "user", "content": "Hm?"}
        assert more_log.prompt_tokens <= long - 1

        with running_server(tiny_model_dir, max_prompt_tokens=3) as tiny_bound:
            before = tiny_bound.counts()
            with tiny_bound.client() as http:
                alone = http.post("/v1/chat/completions", json=CHAT)
            assert tiny_bound.counts() == before
        refused(alone, 400, "invalid_request_error", "at most 3 fit", "--max-prompt-tokens")

    def test_the_bound_must_be_a_positive_number(self) -> None:
        result = run_cli(None, "serve", "--max-prompt-tokens", "0", "--port", "1")
        assert result.exit_code == 2 and "--max-prompt-tokens" in result.stderr
