"""Who may do what: API keys, the server's start-up rule and the request body limit.

Invariants tested here:

- ``learnloop keys create NAME`` prints the key once; the database holds its sha256 and
  never the key; ``keys list`` shows names and dates, never keys; ``keys revoke`` makes a
  key unusable; a name has one valid key at a time; bad names and unknown names are
  one-line errors;
- off loopback with no key the server refuses to start, before loading a model;
- with keys required, a request without a key or with a wrong or revoked one is a 401
  in the error shape with ``WWW-Authenticate``, and changes nothing; the right key works
  and its feedback counts for the key's user; ``/healthz`` and the web page stay open;
- on loopback keys are not checked (the user is ``local``); a valid key still names its user;
- the server's own token (in its private ``server.json``, for the CLI) is valid and names
  no user;
- a body over the limit (not at it) is a 413 in the error shape, whether its
  Content-Length says so or it arrives chunked, and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from openai import AuthenticationError, OpenAI

from learnloop.agent.server.auth import MAX_BODY_BYTES, install, is_loopback, keys_required
from learnloop.storage.errors import UsageError
from learnloop.storage.home import server_file, write_private
from learnloop.storage.keys import new_key
from learnloop.storage.store import Store
from tests.helpers import run_cli, run_json
from tests.serving import Running, running_server

CHAT = {"messages": [{"role": "user", "content": "Hello"}]}


def create_key(name: str) -> str:
    result = run_cli(None, "keys", "create", name)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def nothing_changed(server: Running) -> None:
    status = server.state.store.status()
    assert (status.turns, status.feedback, status.threads) == (0, 0, 0)
    assert server.state.store.runs() == []


class TestTheKeysCommands:
    def test_create_prints_the_key_once_and_stores_only_its_hash(self, home: Path) -> None:
        result = run_cli(None, "keys", "create", "alice")
        assert result.exit_code == 0, result.output
        key = result.stdout.strip()
        assert key.startswith("ll-") and len(key) > 40
        assert "shown only now" in result.stderr
        with Store() as store:
            rows = store.db.execute("SELECT * FROM api_keys").fetchall()
            assert store.user_of_key(key) == "alice"
        assert len(rows) == 1
        assert hashlib.sha256(key.encode()).hexdigest() in rows[0]
        assert not any(key in str(value) for value in rows[0])
        listed = run_cli(None, "keys", "list")
        assert "alice" in listed.stdout and key not in listed.stdout

    def test_list_and_revoke_with_json(self) -> None:
        created = run_json(None, "keys", "create", "bob")
        assert created["name"] == "bob" and created["key"].startswith("ll-")
        create_key("carol")
        assert [(k["name"], k["revoked_at"]) for k in run_json(None, "keys", "list")] == [
            ("bob", None),
            ("carol", None),
        ]
        revoked = run_json(None, "keys", "revoke", "bob")
        assert revoked["name"] == "bob" and revoked["revoked_at"]
        listed = run_json(None, "keys", "list")
        assert [k["name"] for k in listed if k["revoked_at"]] == ["bob"]
        assert not any("key" in k for k in listed)
        with Store() as store:
            assert store.user_of_key(created["key"]) is None
            assert [k.name for k in store.api_keys(revoked=False)] == ["carol"]

    def test_a_name_gets_a_new_key_only_after_revoking_the_old_one(self) -> None:
        first = create_key("dave")
        again = run_cli(None, "keys", "create", "dave")
        assert again.exit_code == 1
        assert "already has a key" in again.stderr and "keys revoke dave" in again.stderr
        run_cli(None, "keys", "revoke", "dave")
        second = create_key("dave")
        with Store() as store:
            assert store.user_of_key(first) is None
            assert store.user_of_key(second) == "dave"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("create", "two words"), "bad key name"),
            (("create", "_x"), "bad key name"),
            (("create", "x" * 65), "bad key name"),
            (("revoke", "nobody"), "no valid key named 'nobody'"),
        ],
    )
    def test_bad_names_are_one_line_errors(self, args: tuple[str, ...], message: str) -> None:
        result = run_cli(None, "keys", *args)
        assert result.exit_code == 1
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        with Store() as store:
            assert store.api_keys() == []

    def test_keys_work_while_a_server_file_names_a_server_that_does_not_answer(
        self, home: Path
    ) -> None:
        """A running server takes key changes itself (tests/test_remote.py); one that does not
        answer is not in the way."""
        home.mkdir(parents=True, exist_ok=True)
        server_file().write_text(json.dumps({"url": "http://127.0.0.1:1", "pid": os.getpid()}))
        assert run_json(None, "keys", "create", "carol")["name"] == "carol"
        assert [k["name"] for k in run_json(None, "keys", "list")] == ["carol"]


class TestWhereTheServerMayListen:
    def test_loopback_needs_no_keys(self) -> None:
        with Store() as store:
            for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
                assert is_loopback(host)
                assert keys_required(host, store) is False

    def test_any_other_address_needs_a_key_first(self) -> None:
        with Store() as store:
            for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
                assert not is_loopback(host)
                with pytest.raises(UsageError, match="learnloop keys create NAME"):
                    keys_required(host, store)
            store.create_api_key("alice")
            assert keys_required("0.0.0.0", store) is True

    def test_serve_refuses_at_once_with_one_line(self) -> None:
        result = run_cli(None, "serve", "--host", "0.0.0.0", "--port", "1")
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "run `learnloop keys create NAME` first" in lines[0]
        assert not server_file().exists()


@pytest.fixture
def keyed(tiny_model_dir: Path) -> Iterator[tuple[Running, str]]:
    key = create_key("alice")
    with running_server(tiny_model_dir, require_keys=True) as running:
        yield running, key


class TestAServerThatRequiresKeys:
    @pytest.mark.parametrize(
        ("headers", "challenge", "message"),
        [
            ({}, 'Bearer realm="learnloop"', "needs an API key"),
            ({"Authorization": "Bearer ll-wrong"}, 'error="invalid_token"', "not valid"),
            ({"Authorization": "Basic YWxpY2U6eA=="}, 'error="invalid_request"', "Bearer KEY"),
        ],
    )
    def test_a_request_without_the_right_key_is_401_and_changes_nothing(
        self,
        keyed: tuple[Running, str],
        headers: dict[str, str],
        challenge: str,
        message: str,
    ) -> None:
        server, _ = keyed
        with server.client() as http:
            answers = [
                http.post("/v1/chat/completions", json=CHAT, headers=headers),
                http.post("/v1/feedback", json={"turn_id": 1, "rating": "up"}, headers=headers),
                http.post("/v1/learn", json={}, headers=headers),
                http.post("/v1/rollback", headers=headers),
                http.get("/v1/status", headers=headers),
                http.get("/v1/no-such-route", headers=headers),
            ]
        for response in answers:
            assert response.status_code == 401, response.text
            assert response.json()["error"]["type"] == "authentication_error"
            assert message in response.json()["error"]["message"]
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="learnloop"')
            assert challenge in response.headers["WWW-Authenticate"]
        nothing_changed(server)

    def test_the_right_key_works_and_feedback_counts_for_its_user(
        self, keyed: tuple[Running, str]
    ) -> None:
        server, key = keyed
        client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="learnloop", messages=[{"role": "user", "content": "Hi"}]
        )
        turn_id = int(raw.headers["X-Learnloop-Turn-Id"])
        with server.client() as http:
            given = http.post(
                "/v1/feedback",
                json={"turn_id": turn_id, "rating": "down", "correction": "Hello."},
                headers={"Authorization": f"Bearer {key}"},
            )
            back = http.post(
                "/v1/rollback", json={"why": "x"}, headers={"Authorization": f"bearer  {key}"}
            )
        assert given.status_code == 201, given.text
        # the key got through (not a 401); a user key may not switch versions
        assert back.status_code == 403, back.text
        assert back.json()["error"]["type"] == "permission_error"
        [example] = server.state.store.feedback_examples()
        assert (example.turn_id, example.user_name) == (turn_id, "alice")
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=server.url + "/v1", api_key="ll-nope", max_retries=0).models.list()

    def test_a_revoked_key_is_refused_from_then_on(self, keyed: tuple[Running, str]) -> None:
        server, key = keyed
        auth = {"Authorization": f"Bearer {key}"}
        with server.client() as http:
            before = http.get("/v1/versions", headers=auth)
            server.state.store.revoke_api_key("alice")
            after = http.get("/v1/versions", headers=auth)
        assert before.status_code == 200
        assert after.status_code == 401 and "not valid" in after.json()["error"]["message"]

    def test_health_the_page_and_the_api_description_stay_open(
        self, keyed: tuple[Running, str]
    ) -> None:
        server, _ = keyed
        with server.client() as http:
            health = http.get("/healthz")
            page = http.get("/")
            doc = http.get("/openapi.json").json()
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert page.status_code in (200, 404)  # 404 only where the web page is not built
        assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
        chat = doc["paths"]["/v1/chat/completions"]["post"]
        assert chat["security"] == [{"apiKey": []}] and "401" in chat["responses"]
        assert "security" not in doc["paths"]["/healthz"]["get"]


class TestOnLoopback:
    def test_keys_are_not_checked_but_a_valid_one_names_its_user(
        self, tiny_model_dir: Path
    ) -> None:
        key = create_key("erin")
        erin = {"Authorization": f"Bearer {key}"}
        with running_server(tiny_model_dir) as server, server.client() as http:
            turns = [
                http.post("/v1/chat/completions", json=CHAT, headers=headers).json()["turn_id"]
                for headers in ({"Authorization": "Bearer ll-wrong"}, erin)
            ]
            http.post("/v1/feedback", json={"turn_id": turns[0], "rating": "up"})
            http.post("/v1/feedback", json={"turn_id": turns[1], "rating": "up"}, headers=erin)
            users = [e.user_name for e in server.state.store.feedback_examples()]
        assert users == ["local", "erin"]


def guarded(*, require_keys: bool, local_token: str | None = None) -> TestClient:
    """The guard in front of a route that echoes who asked and how much it read."""
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"user": getattr(request.state, "user", None), "bytes": len(body)}

    install(app, Store(), require_keys=require_keys, local_token=local_token)
    return TestClient(app, headers={"Content-Type": "application/json"})


class TestTheServersOwnToken:
    def test_it_lets_the_cli_in_without_naming_a_user(self) -> None:
        token = new_key()
        http = guarded(require_keys=True, local_token=token)
        ok = http.post("/echo", headers={"Authorization": f"Bearer {token}"})
        refused = http.post("/echo", headers={"Authorization": f"Bearer {token}x"})
        assert ok.status_code == 200 and ok.json()["user"] is None
        assert refused.status_code == 401

    def test_a_key_of_any_latin_1_bytes_is_a_401_not_a_crash(self) -> None:
        http = guarded(require_keys=True, local_token=new_key())
        answer = http.post("/echo", headers={"Authorization": b"Bearer ll-\xe9\xff"})
        assert answer.status_code == 401 and "not valid" in answer.json()["error"]["message"]

    def test_a_key_still_names_its_user_beside_it(self) -> None:
        with Store() as store:
            _, key = store.create_api_key("frank")
        http = guarded(require_keys=True, local_token=new_key())
        answer = http.post("/echo", headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["user"] == "frank"

    def test_the_server_file_that_holds_it_is_private(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        server_file().write_text("{}")
        server_file().chmod(0o644)
        write_private(server_file(), json.dumps({"token": "ll-x"}))
        assert server_file().stat().st_mode & 0o777 == 0o600
        assert json.loads(server_file().read_text()) == {"token": "ll-x"}


class TestTheBodyLimit:
    @pytest.fixture
    def server(self, tiny_model_dir: Path) -> Iterator[Running]:
        with running_server(tiny_model_dir) as running:
            yield running

    def test_a_large_content_length_is_413(self, server: Running) -> None:
        big = {"messages": [{"role": "user", "content": "x" * 10}], "pad": "y" * MAX_BODY_BYTES}
        with server.client() as http:
            response = http.post("/v1/chat/completions", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == {
            "message": f"the request body is larger than {MAX_BODY_BYTES} bytes",
            "type": "request_too_large",
        }
        nothing_changed(server)

    def test_a_chunked_body_is_cut_off_at_the_limit(self, server: Running) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"messages": [{"role": "user", "content": "hi"}], "pad": "'
            for _ in range(20):
                yield b"z" * 65536
            yield b'"}'

        with server.client() as http:
            response = http.post(
                "/v1/chat/completions",
                content=chunks(),
                headers={"Content-Type": "application/json"},
            )
            ok = http.post("/v1/feedback", json={"turn_id": 1, "rating": "up"})
        assert response.status_code == 413, response.text
        assert response.json()["error"]["type"] == "request_too_large"
        assert ok.status_code == 404  # the server goes on answering
        nothing_changed(server)

    def test_the_limit_is_exact(self) -> None:
        http = guarded(require_keys=False)
        at = http.post("/echo", content=b"x" * MAX_BODY_BYTES)
        over = http.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
        chunked = http.post("/echo", content=iter([b"x" * MAX_BODY_BYTES, b"y"]))
        bad = http.post("/echo", content=b"{}", headers={"Content-Length": "two"})
        assert at.status_code == 200 and at.json()["bytes"] == MAX_BODY_BYTES
        assert over.status_code == 413 and chunked.status_code == 413
        assert "Content-Length" in bad.json()["error"]["message"]

    def test_a_body_under_the_limit_reaches_the_route(self, server: Running) -> None:
        body = json.dumps({"turn_id": 1, "rating": "up", "comment": "c" * (MAX_BODY_BYTES - 100)})
        with server.client() as http:
            response = http.post(
                "/v1/feedback", content=body, headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 422  # the route's own limit on a comment
        assert "comment" in response.json()["error"]["message"]
