"""Where a request may come from, found by probing: the ``Host``, the ``Origin``, the page
token, ``--allow-host``, a server on IPv6, and another site's page in a real browser.

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
- ``serve --host ::1`` writes a URL the CLI can use, and the CLI goes through it.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from learnloop.agent.server.auth import Hosts, same_origin, split_host
from learnloop.agent.server.run import server_url
from learnloop.storage.home import server_file
from tests.helpers import refused, run_cli, run_json
from tests.serving import Running, running_server, serve_process

CHAT = {"messages": [{"role": "user", "content": "Hello"}]}
JSON = {"Content-Type": "application/json"}
TOKEN = re.compile(r'<meta name="learnloop-page-token" content="([^"]+)">')


def port_of(server: Running) -> int:
    return int(server.url.rsplit(":", 1)[1])


def page_token(http: httpx.Client) -> str:
    match = TOKEN.search(http.get("/").text)
    assert match, "the page carries no token"
    return match.group(1)


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
        before = taught.counts()
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
        assert taught.counts() == before

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
        before = taught.counts()
        with taught.client() as http:
            answer = http.request(method, path, headers=headers)
        refused(answer, 403, "permission_error", "another web site")
        assert "Hello to you." not in answer.text
        assert taught.counts() == before

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
        before = taught.counts()
        headers = {"Content-Type": content_type} if content_type else {}
        with taught.client() as http:
            for path in ("/v1/learn", "/v1/versions/base/activate", "/v1/feedback"):
                answer = http.post(path, content=body, headers=headers)
                refused(answer, 415, "unsupported_media_type", "Content-Type: application/json")
        assert taught.counts() == before

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

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, serve

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
