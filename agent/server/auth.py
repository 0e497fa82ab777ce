"""Who may do what, and how much a request may carry: one ASGI middleware before every route.

The security model:

- By default the server listens on loopback (127.0.0.1): whoever reaches it is already on
  this machine, so requests are not checked and count as the user ``local`` (a valid key
  sent anyway still names its user).
- On any other address every request needs ``Authorization: Bearer KEY`` with a valid key
  from ``learnloop keys create NAME``, else 401 with ``WWW-Authenticate`` and nothing
  runs. The server refuses to start there while no key exists.
- A key's name is the user its requests count for: the feedback's ``user_name`` (which
  the per-user cap on training data counts), the ``who`` of a learning run or a switch.
  Every valid key may use the whole API; there are no roles.
- Open without a key: ``/healthz``, the web page's files (``/`` and ``/static/...``: the
  page asks for a key on its first 401 and sends it from the browser's localStorage) and
  the API's description (``/openapi.json``, ``/docs``, ``/redoc``).
- The server's own token, written to ``DATA_ROOT/server.json`` (readable by its owner
  only) for the CLI commands that go through the server, is valid too; it names no user
  (a CLI command says who it is, as on loopback).
- Keys live hashed in the database, which the server holds while it runs: create or
  revoke keys while it is stopped; they count from its next start.
- A request body may be at most :data:`MAX_BODY_BYTES`: a larger ``Content-Length`` is a
  413 before anything is read, a chunked body one as soon as it passes the limit; either
  way no route runs and nothing changes.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.runtime import UsageError
from storage.keys import Keys

MAX_BODY_BYTES = 1 << 20
REALM = 'Bearer realm="learnloop"'


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


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(
        {"error": {"message": message, "type": kind}}, status_code=status, headers=headers
    )


class Guard:
    """Checks the key (when required) and limits the body, then passes the request on
    with ``scope["state"]["user"]`` set to the key's name when it sent a valid one."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: Keys,
        require_keys: bool,
        local_token: str | None = None,
        open_paths: frozenset[str] = frozenset(),
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.keys = keys
        self.require_keys = require_keys
        self.local_token = local_token
        self.open_paths = open_paths
        self.max_body = max_body

    def is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith("/static/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = bearer(headers.get("authorization"))
        server = key is not None and self.is_server_token(key)
        user = self.keys.user_of_key(key) if key is not None and not server else None
        allowed = not self.require_keys or server or user is not None
        if not allowed and not self.is_open(scope["path"]):
            await self._unauthorized(key, headers)(scope, receive, send)
            return
        if user is not None:
            scope.setdefault("state", {})["user"] = user
        length = content_length(headers)
        if length is None:
            refused = _error(
                400, "Content-Length must be a number of bytes", "invalid_request_error"
            )
            await refused(scope, receive, send)
        elif length > self.max_body:
            await self._too_large()(scope, receive, send)
        else:
            await self._limited(scope, receive, send)

    def is_server_token(self, key: str) -> bool:
        if self.local_token is None:
            return False
        # bytes: a header may hold any Latin-1 character, which compare_digest's str refuses
        return secrets.compare_digest(key.encode(), self.local_token.encode())

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
        return _error(401, message, "authentication_error", {"WWW-Authenticate": challenge})

    def _too_large(self) -> Any:
        return _error(
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
    app: FastAPI, keys: Keys, *, require_keys: bool, local_token: str | None = None
) -> None:
    """Put the guard in front of every route; with keys required, the OpenAPI document
    says so (a bearer scheme on every operation that needs it, and its 401).
    ``local_token``: the server's own token (see the module's notes)."""
    described = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    open_paths = frozenset(p for p in ("/", "/healthz", *described) if p)
    app.add_middleware(
        Guard,
        keys=keys,
        require_keys=require_keys,
        local_token=local_token,
        open_paths=open_paths,
    )
    if require_keys:
        app.openapi = _with_keys(app, app.openapi, open_paths)  # type: ignore[method-assign]


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
