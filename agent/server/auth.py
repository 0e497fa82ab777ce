"""Who may do what, where a request may come from and how much it may carry: one ASGI
middleware before every route.

The security model:

- By default the server listens on loopback (127.0.0.1): whoever reaches it is already on
  this machine, so keys are not checked and a request counts as the operator (user
  ``local``); a valid key sent anyway still names its user and role.
- On any other address every request needs ``Authorization: Bearer KEY`` with a valid key
  from ``learnloop keys create NAME [--admin]``, else 401 with ``WWW-Authenticate`` and
  nothing runs. The server refuses to start there while no key exists.
- A key's name is the user its requests count for (the feedback's ``user_name``, the
  ``who`` of a run or a switch) and the owner of the threads they start. Its role decides
  what it may do (enforced by the routes, agent/server/routes.py): a "user" key sees and
  rates only its own threads; an "admin" key may do all the operator may.
- The server's own token, written to ``DATA_ROOT/server.json`` (readable by its owner
  only) for the CLI commands that go through the server, is valid too; it names no user
  and counts as the operator.
- Open without a key: ``/healthz`` (it says only ``{"status": "ok"}``), the web page's
  files (``/`` and ``/static/...``) and the API's description (``/openapi.json``,
  ``/docs``, ``/redoc``).

Requests from other web sites, on any address (a page the user visits can send requests
to 127.0.0.1, and read the answers if its own name resolves there):

- ``Host`` must name this server (:class:`Hosts`), else 421: a page of another site that
  made its name resolve to this machine (DNS rebinding) gets nothing;
- ``Origin``, when sent, must be this server's own, else 403;
- a request from a browser (it sends ``Origin`` or ``Sec-Fetch-Site``, which no page can
  forge) must carry the web page's token (:data:`PAGE_TOKEN_HEADER`), made when the
  server starts and written into the page it serves, which another site cannot read;
- a call that may change something (any method but GET, HEAD and OPTIONS) must say
  ``Content-Type: application/json``, even without a body, else 415: a page can send
  other sites only form and plain-text bodies without asking them first (CORS).

A request body may be at most :data:`MAX_BODY_BYTES`: a larger ``Content-Length`` is a
413 before anything is read, a chunked body one as soon as it passes the limit; either
way no route runs and nothing changes. Every refusal here is ``{"error": {"message",
"type"}}``.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from learnloop.agent.server.errors import error
from learnloop.storage.errors import UsageError
from learnloop.storage.keys import Keys
from learnloop.storage.records import ApiKey

MAX_BODY_BYTES = 1 << 20
REALM = 'Bearer realm="learnloop"'
PAGE_TOKEN_HEADER = "X-Learnloop-Page-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}


class BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once a body passes the limit."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def keys_required(host: str, keys: Keys) -> bool:
    """Whether a server listening on ``host`` checks keys. Off loopback with no valid key
    it must not start: :class:`UsageError` says how to make one."""
    if is_loopback(host):
        return False
    if not keys.has_api_keys():
        raise UsageError(
            f"refusing to listen on {host} without API keys: run `learnloop keys create NAME` "
            "first (clients then send `Authorization: Bearer KEY`), or serve on 127.0.0.1"
        )
    return True


# -- where a request may come from ------------------------------------------------------


def host_name(host: str) -> str:
    """``host`` as a Host header or a URL writes it: lower case, IPv6 in brackets."""
    bare = host.strip().strip("[]").lower()
    return f"[{bare}]" if ":" in bare else bare


def split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a Host header (``name``, ``name:8000``, ``[::1]:8000``), the name as
    :func:`host_name` writes it; None when the value is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value.partition("]")
        name += bracket
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if not name or any(c in name for c in "/@?#\\ "):
        return None
    if port is None:
        return name, None
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    return name, int(port)


@dataclass(frozen=True)
class Hosts:
    """The names a request's ``Host`` may carry: the address the server listens on
    (``listen``), 127.0.0.1, localhost, [::1] and the local address the connection came in
    on (an address, not a name: only this server's own page has it as its origin), each
    with the port the connection came in on; and the names the operator adds
    (``extra``, ``serve --allow-host NAME``), on any port (a proxy in front has its own).

    Any other name is one that a web site made resolve to this machine (DNS rebinding):
    its pages would be the same origin as ours and could read every answer."""

    listen: str = "127.0.0.1"
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = []
        for name in self.extra:
            parsed = split_host(name)
            if parsed is None or parsed[1] is not None:
                raise UsageError(f"--allow-host takes a host name without a port, not {name!r}")
            names.append(parsed[0])
        object.__setattr__(self, "extra", tuple(names))

    def allows(self, host: str, server: Any) -> bool:
        """Whether a ``Host`` header value names this server; ``server`` is the ASGI
        scope's (local address, port) of the connection, when the server knows it."""
        parsed = split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.extra:
            return True
        local = {host_name(self.listen), *LOOPBACK_NAMES}
        if not server:
            return name in local
        address, server_port = server
        local.add(host_name(str(address)))
        return name in local and (server_port is None or (port or 80) == server_port)

    def names(self) -> str:
        """The names it answers to, for a message (a wildcard address names nothing)."""
        listen = host_name(self.listen)
        named = () if listen in ("0.0.0.0", "[::]") else (listen,)
        return ", ".join(dict.fromkeys((*named, *LOOPBACK_NAMES, *self.extra)))


def same_origin(origin: str, host: str, hosts: Hosts) -> bool:
    """Whether ``origin`` (a request's ``Origin``) is this server's page: http or https
    with the request's own (allowed) ``Host``, or a name the operator added."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or parts.path or "@" in parts.netloc:
        return False
    ours, theirs = split_host(host), split_host(parts.netloc)
    if ours is None or theirs is None:
        return False
    if theirs[0] in hosts.extra:
        return True
    default = DEFAULT_PORTS[parts.scheme]
    return ours[0] == theirs[0] and (ours[1] or default) == (theirs[1] or default)


def from_browser(headers: Headers) -> bool:
    """A browser sends ``Origin`` or ``Sec-Fetch-Site`` (names no page script may set)."""
    return "origin" in headers or "sec-fetch-site" in headers


def is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


# -- the middleware ---------------------------------------------------------------------


def bearer(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header, else None."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def content_length(headers: Headers) -> int | None:
    """The declared body size: 0 when none is declared, None when it is not a number."""
    value = headers.get("content-length")
    if value is None:
        return 0
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _matches(given: str | None, expected: str | None) -> bool:
    if given is None or expected is None:
        return False
    # bytes: a header may hold any Latin-1 character, which compare_digest's str refuses
    return secrets.compare_digest(given.encode("latin-1", "replace"), expected.encode())


class Guard:
    """Checks where a request comes from, then the key (when required), then that a
    browser's request comes from the page and that a change is sent as JSON, and limits
    the body; then passes the request on with ``scope["state"]`` holding ``user`` and
    ``role`` when it sent a valid key. The first check that fails answers; nothing runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Keys,
        require_keys: bool,
        local_token: str | None = None,
        page_token: str | None = None,
        hosts: Hosts | None = None,
        open_paths: frozenset[str] = frozenset(),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.keys = keys
        self.require_keys = require_keys
        self.local_token = local_token
        self.page_token = page_token
        self.hosts = hosts or Hosts()
        self.open_paths = open_paths
        self.max_body = max_body

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith("/static/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        record, refused = None, self._foreign(scope, headers)
        if refused is None:
            record, refused = self._identify(scope, headers)
        refused = refused or self._not_from_page(scope, headers) or self._not_json(scope, headers)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if record is not None:
            scope.setdefault("state", {}).update(user=record.name, role=record.role)
        length = content_length(headers)
        if length is None:
            refused = error(
                400, "Content-Length must be a number of bytes", "invalid_request_error"
            )
            await refused(scope, receive, send)
        elif length > self.max_body:
            await self._too_large()(scope, receive, send)
        else:
            await self._limited(scope, receive, send)

    def is_server_token(self, key: str) -> bool:
        return _matches(key, self.local_token)

    def _identify(self, scope: Scope, headers: Headers) -> tuple[ApiKey | None, Any]:
        """(the valid key's record, None), or (None, the 401) where a key is required and
        none valid came; the server's own token and no key at all name no one."""
        key = bearer(headers.get("authorization"))
        if key is not None and self.is_server_token(key):
            return None, None
        record = self.keys.api_key_of(key) if key is not None else None
        if self.require_keys and record is None and not self.is_open(scope["path"]):
            return None, self._unauthorized(key, headers)
        return record, None

    def _foreign(self, scope: Scope, headers: Headers) -> Any:
        """421 for a Host that is not this server's, 403 for another site's Origin."""
        host = headers.get("host")
        if host is not None and not self.hosts.allows(host, scope.get("server")):
            return error(
                421,
                f"this server answers only to {self.hosts.names()} (with its port), not to "
                f"{host!r}; `learnloop serve --allow-host NAME` adds a name",
                "misdirected_request",
            )
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, host or "", self.hosts):
            return error(
                403,
                f"a request from another web site ({origin}) is refused: only this "
                "server's own page may call it from a browser",
                "permission_error",
            )
        return None

    def _not_from_page(self, scope: Scope, headers: Headers) -> Any:
        """403 for a browser's API call without the web page's token."""
        if self.is_open(scope["path"]) or not from_browser(headers):
            return None
        if _matches(headers.get(PAGE_TOKEN_HEADER), self.page_token):
            return None
        return error(
            403,
            "a call from a browser must come from this server's web page (it sends "
            f"{PAGE_TOKEN_HEADER}); reload the page, or call the API from a program",
            "permission_error",
        )

    def _not_json(self, scope: Scope, headers: Headers) -> Any:
        """415 for a call that may change something and does not say its body is JSON."""
        if scope["method"] in SAFE_METHODS or is_json(headers.get("content-type")):
            return None
        return error(
            415,
            "send `Content-Type: application/json` with every POST, also one without a "
            f"body (this one said {headers.get('content-type') or 'nothing'})",
            "unsupported_media_type",
        )

    def _unauthorized(self, key: str | None, headers: Headers) -> Any:
        if key is not None:
            message = "the API key is not valid (unknown or revoked)"
            challenge = f'{REALM}, error="invalid_token"'
        elif headers.get("authorization"):
            message = "send the API key as `Authorization: Bearer KEY`"
            challenge = f'{REALM}, error="invalid_request"'
        else:
            message = (
                "this server needs an API key: send `Authorization: Bearer KEY` "
                "(`learnloop keys create NAME` makes one)"
            )
            challenge = REALM
        return error(401, message, "authentication_error", {"WWW-Authenticate": challenge})

    def _too_large(self) -> Any:
        return error(
            413, f"the request body is larger than {self.max_body} bytes", "request_too_large"
        )

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, counting the body's bytes as it reads them: past the limit the
        read fails, whatever the app answers to that is dropped, and a 413 goes out."""
        received = 0
        too_large = started = False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # the app's answer to a body it could not read
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._too_large()(scope, receive, send)


def install(
    app: FastAPI,
    keys: Keys,
    *,
    require_keys: bool,
    local_token: str | None = None,
    page_token: str | None = None,
    hosts: Hosts | None = None,
) -> None:
    """Put the guard in front of every route; the OpenAPI document says what it refuses
    (with keys required also a bearer scheme on every operation that needs it, and its
    401). ``local_token``: the server's own token; ``page_token``: the web page's (None:
    no page, so every browser's API call is refused); ``hosts``: the names it answers to
    (see the module's notes)."""
    described = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    open_paths = frozenset(p for p in ("/", "/healthz", *described) if p)
    app.add_middleware(
        Guard,
        keys=keys,
        require_keys=require_keys,
        local_token=local_token,
        page_token=page_token,
        hosts=hosts,
        open_paths=open_paths,
    )
    app.openapi = _with_refusals(app, app.openapi)  # type: ignore[method-assign]
    if require_keys:
        app.openapi = _with_keys(app, app.openapi, open_paths)  # type: ignore[method-assign]


def _with_refusals(
    app: FastAPI, build: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """Every POST documents its 415 (no JSON content type)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() not in SAFE_METHODS:
                    operation.setdefault("responses", {})["415"] = {
                        "description": "not sent with `Content-Type: application/json`"
                    }
        app.openapi_schema = schema
        return schema

    return openapi


def _with_keys(
    app: FastAPI, build: Callable[[], dict[str, Any]], open_paths: frozenset[str]
) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["apiKey"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "a key from `learnloop keys create NAME`",
        }
        for path, operations in schema.get("paths", {}).items():
            if path in open_paths:
                continue
            for operation in operations.values():
                operation["security"] = [{"apiKey": []}]
                operation.setdefault("responses", {})["401"] = {"description": "no valid API key"}
        app.openapi_schema = schema
        return schema

    return openapi
