"""Security found by probing: where a request may come from, who sees what, what the open
endpoints say, how much one request may cost, and a server on an IPv6 address.

A real server over the tiny model (tests/serving.py; ``learnloop serve`` in a child
process where the command line is what is tested), real HTTP with httpx, and, for the
attacks a web page makes, a real browser (Debian's Chromium), since what a browser sends
and lets through is the point.

Invariants tested here:

- a request whose ``Host`` is not the server's (DNS rebinding) is a 421 and gets nothing,
  not even the page; ``serve --allow-host NAME`` adds a name;
- a request with another site's ``Origin`` is a 403; a POST without
  ``Content-Type: application/json`` is a 415, also without a body; a browser's API call
  (it sends ``Origin`` or ``Sec-Fetch-Site``) needs the page token written into ``/``;
  none of them changes anything, and another site's page in a real browser changes
  nothing either;
- a user key sees and rates only its own threads and turns (another's, and the
  operator's, are a 404) and gets 403 for switching versions, learning, adding control
  prompts, exporting, the history and the keys; it reads versions, models, runs, status
  (without the data root) and the dashboard; an admin key sees and may do all; keys
  made before roles are user keys, threads made before owners are the operator's;
- ``/healthz`` says ``{"status": "ok"}`` and nothing else;
- a prompt over ``--max-prompt-tokens`` or the model's context (counted as the model would
  see it) has its oldest earlier messages left out; one that does not fit even so is a 400
  naming its count and the bound, and logs nothing;
- ``serve --host ::1`` writes a URL the CLI can use, and the CLI goes through it.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from learnloop.agent.server.auth import Hosts, same_origin, split_host
from learnloop.agent.server.chat import prompt_messages
from learnloop.agent.server.run import server_url
from learnloop.storage import migrations
from learnloop.storage.home import data_root, server_file
from learnloop.storage.keys import hash_key, new_key
from learnloop.storage.store import Store
from tests.helpers import make_log, refused, run_cli, run_json
from tests.serving import Running, running_server, serve_process

CHAT = {"messages": [{"role": "user", "content": "Hello"}]}
JSON = {"Content-Type": "application/json"}
TOKEN = re.compile(r'<meta name="learnloop-page-token" content="([^"]+)">')


def counts(server: Running) -> tuple[Any, ...]:
    """Everything a request could change: turns, threads, feedback, runs, switches,
    control prompts, keys."""
    store = server.state.store
    s = store.status()
    return (
        s.turns,
        s.threads,
        s.feedback,
        len(store.runs()),
        len(store.activations()),
        len(store.control_prompts()),
        len(store.api_keys()),
    )


def port_of(server: Running) -> int:
    return int(server.url.rsplit(":", 1)[1])


def page_token(http: httpx.Client) -> str:
    match = TOKEN.search(http.get("/").text)
    assert match, "the page carries no token"
    return match.group(1)


@pytest.fixture
def server(tiny_model_dir: Path) -> Iterator[Running]:
    with running_server(tiny_model_dir) as running:
        yield running


@pytest.fixture
def taught(server: Running) -> Running:
    """A server with a rated turn: a learning cycle could start, a version be switched."""
    with server.client() as http:
        turn = http.post("/v1/chat/completions", json=CHAT).json()["turn_id"]
        fix = {"turn_id": turn, "rating": "down", "correction": "Hello to you."}
        assert http.post("/v1/feedback", json=fix).status_code == 201
    return server


# -- where a request may come from --------------------------------------------------------


class TestHostAndOrigin:
    def test_a_foreign_host_is_421_and_gets_nothing(self, taught: Running) -> None:
        """DNS rebinding: a site makes its own name resolve to 127.0.0.1, so its page is
        the same origin as that name and could read every answer."""
        before = counts(taught)
        thread = taught.state.store.threads(1)[0].id
        rebound = {"Host": f"rebind.example:{port_of(taught)}"}
        with taught.client() as http:
            token = page_token(http)
            answers = [
                http.get(path, headers=rebound)
                for path in ("/", "/static/api.js", "/healthz", "/v1/threads", "/v1/status")
            ]
            answers.append(http.post("/v1/rollback", json={}, headers=rebound))
            answers.append(http.post("/v1/learn", json={}, headers=rebound))
        for answer in answers:
            refused(answer, 421, "misdirected_request", "rebind.example", "--allow-host")
            assert thread not in answer.text and token not in answer.text
        assert counts(taught) == before

    def test_the_servers_own_names_are_answered_on_its_port(self, server: Running) -> None:
        port = port_of(server)
        with server.client() as http:
            for host in (
                f"127.0.0.1:{port}",
                f"localhost:{port}",
                f"[::1]:{port}",
                f"LocalHost:{port}",
            ):
                assert http.get("/healthz", headers={"Host": host}).status_code == 200, host
            for host in (f"127.0.0.1:{port + 1}", "localhost"):  # no port: port 80
                assert http.get("/healthz", headers={"Host": host}).status_code == 421, host

    @pytest.mark.parametrize(
        ("method", "path", "headers"),
        [
            # a bodyless cross-site POST: what a page sends with fetch(url, {method: "POST"})
            (
                "POST",
                "/v1/rollback",
                {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
            ),
            ("POST", "/v1/versions/base/activate", {"Origin": "null"}),
            ("POST", "/v1/learn", {"Origin": "http://localhost:1", **JSON}),  # another local port
            ("GET", "/v1/threads", {"Origin": "https://evil.example"}),
            ("GET", "/v1/export", {"Origin": "http://127.0.0.1.evil.example"}),
        ],
    )
    def test_another_sites_origin_is_403_and_changes_nothing(
        self, taught: Running, method: str, path: str, headers: dict[str, str]
    ) -> None:
        before = counts(taught)
        with taught.client() as http:
            answer = http.request(method, path, headers=headers)
        refused(answer, 403, "permission_error", "another web site")
        assert "Hello to you." not in answer.text
        assert counts(taught) == before

    @pytest.mark.parametrize(
        ("content_type", "body"),
        [
            (None, b""),
            ("text/plain", b"{}"),  # what a page may send another site without asking
            ("application/x-www-form-urlencoded", b"why=x"),
            ("multipart/form-data; boundary=x", b"--x--"),
            ("application/jsonx", b"{}"),
        ],
    )
    def test_a_change_not_sent_as_json_is_415_even_without_a_body(
        self, taught: Running, content_type: str | None, body: bytes
    ) -> None:
        before = counts(taught)
        headers = {"Content-Type": content_type} if content_type else {}
        with taught.client() as http:
            for path in ("/v1/learn", "/v1/versions/base/activate", "/v1/feedback"):
                answer = http.post(path, content=body, headers=headers)
                refused(answer, 415, "unsupported_media_type", "Content-Type: application/json")
        assert counts(taught) == before

    def test_a_json_content_type_is_enough_without_a_body(self, server: Running) -> None:
        with server.client() as http:
            plain = http.post("/v1/versions/base/activate", headers=JSON)
            charset = http.post(
                "/v1/versions/base/activate",
                headers={"Content-Type": "application/json; charset=utf-8"},
            )
        assert plain.status_code == 200 and charset.status_code == 200
        assert [a.who for a in server.state.store.activations()] == ["api:local"] * 2

    def test_the_openapi_document_names_the_415(self, server: Running) -> None:
        with server.client() as http:
            doc = http.get("/openapi.json").json()
        assert "415" in doc["paths"]["/v1/rollback"]["post"]["responses"]
        assert "415" not in doc["paths"]["/v1/threads"]["get"]["responses"]


class TestThePageToken:
    def test_a_browsers_call_needs_the_token_the_page_carries(self, taught: Running) -> None:
        origin = {"Origin": taught.url, "Sec-Fetch-Site": "same-origin"}
        with taught.client() as http:
            page = http.get("/", headers={"Sec-Fetch-Site": "none"})
            token = page_token(http)
            script = http.get("/static/api.js", headers=origin)
            without = http.get("/v1/threads", headers=origin)
            wrong = http.get("/v1/threads", headers={**origin, "X-Learnloop-Page-Token": "x"})
            only_fetch_site = http.get("/v1/threads", headers={"Sec-Fetch-Site": "same-origin"})
            with_token = {**origin, "X-Learnloop-Page-Token": token}
            listed = http.get("/v1/threads", headers=with_token)
            turn = listed.json()[0]
            thread = http.get(f"/v1/threads/{turn['id']}", headers=with_token).json()
            rated = http.post(
                "/v1/feedback",
                json={"turn_id": thread["turns"][0]["turn_id"], "rating": "up"},
                headers=with_token,
            )
        assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
        assert script.status_code == 200  # the page's own files need no token
        for answer in (without, wrong, only_fetch_site):
            refused(answer, 403, "permission_error", "X-Learnloop-Page-Token")
        assert listed.status_code == 200 and rated.status_code == 201

    def test_each_start_of_the_server_makes_a_new_token(self, tiny_model_dir: Path) -> None:
        tokens = []
        for _ in range(2):
            with running_server(tiny_model_dir) as running, running.client() as http:
                tokens.append(page_token(http))
        assert tokens[0] != tokens[1] and len(tokens[0]) >= 40


class TestAllowHost:
    def test_an_added_name_is_answered_on_any_port_and_is_its_own_origin(
        self, tiny_model_dir: Path
    ) -> None:
        hosts = Hosts("127.0.0.1", ("Learnloop.lan",))
        with running_server(tiny_model_dir, hosts=hosts) as server, server.client() as http:
            token = page_token(http)
            direct = http.get("/healthz", headers={"Host": "learnloop.lan"})
            proxied = http.get(
                "/v1/threads",
                headers={
                    "Host": "127.0.0.1",  # a proxy that does not pass the Host on
                    "Origin": "https://learnloop.lan",
                    "X-Learnloop-Page-Token": token,
                },
            )
            other = http.get("/healthz", headers={"Host": "evil.lan"})
        assert direct.status_code == 200
        assert proxied.status_code == 421  # the proxy's Host must be allowed too
        refused(other, 421, "misdirected_request", "learnloop.lan")

    @pytest.mark.parametrize("name", ["learnloop.lan:8000", "http://learnloop.lan", "a b"])
    def test_a_name_with_a_port_or_scheme_is_one_line_before_anything_runs(self, name: str) -> None:
        result = run_cli(None, "serve", "--allow-host", name, "--port", "1")
        assert result.exit_code == 1
        (line,) = result.stderr.strip().splitlines()
        assert "--allow-host takes a host name" in line
        assert not server_file().exists()


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost:8000", ("localhost", 8000)),
        ("LOCALHOST", ("localhost", None)),
        ("[::1]:8000", ("[::1]", 8000)),
        ("[::1]", ("[::1]", None)),
        ("127.0.0.1:0", None),
        ("127.0.0.1:99999", None),
        ("127.0.0.1:８０", None),  # digits, but not ASCII ones
        ("[::1", None),
        ("[::1]x", None),
        ("a@b:1", None),
        ("", None),
    ],
)
def test_host_values_are_read_strictly(value: str, parsed: Any) -> None:
    assert split_host(value) == parsed


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://localhost:8000", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("https://proxy.lan", "proxy.lan", True),
        ("https://proxy.lan", "proxy.lan:80", False),
        ("http://proxy.lan", "proxy.lan:80", True),
        ("http://user@127.0.0.1:8000", "127.0.0.1:8000", False),
        ("file://", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
    ],
)
def test_an_origin_is_the_servers_own_only_with_its_host(
    origin: str, host: str, same: bool
) -> None:
    assert same_origin(origin, host, Hosts()) is same


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
        before = counts(server)
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
            assert counts(server) == before  # none of that wrote anything

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
        before = counts(server)
        with server.client() as http:
            answer = http.request(method, path, json=body, headers={**auth["alice"], **JSON})
        refused(answer, 403, "permission_error", "keys create NAME --admin")
        assert counts(server) == before
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
        before = counts(server)
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
        assert counts(server) == before

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
            before = counts(tiny_bound)
            with tiny_bound.client() as http:
                alone = http.post("/v1/chat/completions", json=CHAT)
            assert counts(tiny_bound) == before
        refused(alone, 400, "invalid_request_error", "at most 3 fit", "--max-prompt-tokens")

    def test_the_bound_must_be_a_positive_number(self) -> None:
        result = run_cli(None, "serve", "--max-prompt-tokens", "0", "--port", "1")
        assert result.exit_code == 2 and "--max-prompt-tokens" in result.stderr


# -- a server on IPv6 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000"),
        ("[::1]", "http://[::1]:8000"),
        ("fe80::1", "http://[fe80::1]:8000"),
        ("localhost", "http://localhost:8000"),
        ("192.168.1.5", "http://192.168.1.5:8000"),
    ],
)
def test_the_server_url_writes_ipv6_in_brackets(host: str, url: str) -> None:
    assert server_url(host, 8000) == url


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_serve_on_ipv6_loopback_and_the_cli_goes_through_it(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    flags = ("--max-new-tokens", "4")
    with serve_process(tiny_model_dir, home, tmp_path / "server.log", *flags, host="::1") as url:
        assert url.startswith("http://[::1]:")
        assert json.loads(server_file().read_text())["url"] == url
        status = run_json(None, "status")  # the server holds the database: only it can answer
        answer = run_json(tiny_model_dir, "ask", "Hello over IPv6")
        assert status["turns"] == 0 and answer["version"] == "base"
        assert run_json(None, "status")["turns"] == 1


# -- another site's page, in a real browser -----------------------------------------------

ATTACK = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="form" target="sink" method="POST" enctype="text/plain" action="TARGET/v1/rollback">
  <input name='{"why": "' value='attack"}'>
</form>
<script>
  const target = "TARGET";
  async function attempt(name, path, init) {
    try {
      const response = await fetch(target + path, init);
      return [name, response.type, response.status];
    } catch (err) {
      return [name, "failed", String(err)];
    }
  }
  window.attacks = (async () => {
    document.getElementById("form").submit();
    const text = {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}};
    return [
      await attempt("learn", "/v1/learn", {...text, body: "{}"}),
      await attempt("activate", "/v1/versions/base/activate", {method: "POST", mode: "no-cors"}),
      await attempt("feedback", "/v1/feedback", {...text, body: '{"turn_id": 1, "rating": "up"}'}),
      await attempt("threads", "/v1/threads", {}),
    ];
  })();
</script></body></html>"""


def test_another_sites_page_changes_nothing_and_a_rebound_name_gets_nothing(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    """What the two attacks look like from a browser: a page of another site sends the
    requests a page may send anywhere (bodyless and plain-text POSTs, a form), and a
    name that resolves to 127.0.0.1 (here by the browser's own resolver rules) loads
    the server as its own origin. The server refuses each; nothing changes."""
    from playwright.sync_api import sync_playwright

    from tests.test_web import CHROMIUM, CHROMIUM_ARGS, serve

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    with serve(tiny_model_dir, home, tmp_path) as server, server.client() as http:
        turn = http.post("/v1/chat/completions", json=CHAT).json()["turn_id"]
        http.post("/v1/feedback", json={"turn_id": turn, "rating": "down", "correction": "Hi."})
        before = (http.get("/v1/learn").json(), http.get("/v1/history").json())
        port = server.url.rsplit(":", 1)[1]
        rules = "--host-resolver-rules=MAP rebind.test 127.0.0.1"
        # Chromium's own guard (local network access) would stop the page's requests before
        # they leave; other browsers, and older ones, have none: turn it off to test ours
        lna = "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests"
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, rules, lna]
            )
            page = browser.new_context().new_page()
            seen: list[tuple[str, int]] = []
            page.on("response", lambda r: seen.append((r.url, r.status)))
            page.route(
                "http://attacker.test/",
                lambda route: route.fulfill(
                    content_type="text/html", body=ATTACK.replace("TARGET", server.url)
                ),
            )
            page.goto("http://attacker.test/")
            attacks = page.evaluate("window.attacks")
            page.wait_for_timeout(1000)  # the form's answer, in its frame

            rebound = page.goto(f"http://rebind.test:{port}/")
            assert rebound is not None
            rebound_status, rebound_text = rebound.status, page.content()
            browser.close()
        after = (http.get("/v1/learn").json(), http.get("/v1/history").json())
        token = TOKEN.search(http.get("/").text)
        feedback = http.get("/v1/log").json()[0]["feedback"]
    assert after == before and len(feedback) == 1  # no run, no switch, no feedback
    assert [a[0] for a in attacks] == ["learn", "activate", "feedback", "threads"]
    assert attacks[-1][1] == "failed"  # nor could it read the threads
    # each request reached the server and was refused by it (403: another site's Origin)
    answered = {
        url.removeprefix(server.url): status for url, status in seen if url.startswith(server.url)
    }
    attacked = {"/v1/learn", "/v1/versions/base/activate", "/v1/feedback", "/v1/rollback"}
    assert attacked <= set(answered) and set(answered.values()) == {403}, seen
    assert rebound_status == 421 and "misdirected_request" in rebound_text
    assert token is not None and token.group(1) not in rebound_text
