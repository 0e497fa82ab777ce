"""Talk to a running ``learnloop serve`` for the same data root.

The server holds the database while it runs (DuckDB lets one process write it) and says
where it listens in ``DATA_ROOT/server.json``: ``{"url", "pid"}`` and, when it requires
API keys, ``"token"`` (sent as ``Authorization: Bearer``). :func:`find_server` reads that
file: one whose process is gone is removed; one whose server cannot be reached within a
second, or does not answer ``GET /v1/status`` within a few (a busy server is slow, not
gone), or answers it for another data root, is ignored. (``/healthz`` is open to anyone
and says only that it is alive; ``/v1/status`` says where the data lives, to the
operator only: the file's token, or no key on loopback.) A server that refuses the file's
token is still taken as found, so that the command says why. A server's error answer
``{"error": {"message"}}`` becomes a :class:`ServerError`, which the CLI prints as one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from learnloop.learning.snapshot import NothingToLearn
from learnloop.storage.errors import LearnloopError, UsageError
from learnloop.storage.home import data_root, pid_alive, server_file

CONNECT_TIMEOUT_S = 1.0
HEALTH_TIMEOUT_S = 5.0
TIMEOUT_S = 60.0  # a request that is not an answer being generated
ANSWER_TIMEOUT_S = 600.0  # longest wait for the next streamed token (a long prompt)


class ServerError(LearnloopError):
    """An error answer from the server (its status and type), or no answer at all (503)."""

    def __init__(self, message: str, status: int = 503, kind: str = "unavailable_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def find_server() -> ServerClient | None:
    """The server running for this data root, or None (then commands work locally)."""
    path = server_file()
    try:
        info = json.loads(path.read_text())
        url, pid = str(info["url"]).rstrip("/"), int(info["pid"])
        token = info.get("token")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or half written: as if absent
    if not pid_alive(pid):
        path.unlink(missing_ok=True)  # left by a server that was killed
        return None
    server = ServerClient(url, pid, token if isinstance(token, str) else None)
    return server if server.healthy() else None


class ServerClient:
    """One method per endpoint the CLI uses; each returns the response's JSON."""

    def __init__(self, url: str, pid: int, token: str | None = None) -> None:
        self.url = url
        self.pid = pid
        self.token = token

    def _http(self, timeout: float = TIMEOUT_S) -> Any:
        import httpx

        # JSON on every call: the server refuses a POST without it, even one without a body
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        limits = httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        return httpx.Client(base_url=self.url, headers=headers, timeout=limits)

    def healthy(self) -> bool:
        """Whether a learnloop server for this data root answers at the file's url."""
        import httpx

        try:
            with self._http(HEALTH_TIMEOUT_S) as http:
                response = http.get("/v1/status")
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            return False
        if not isinstance(answer, dict):
            return False
        if response.status_code in (401, 403):  # a learnloop refusal: the command says it
            return bool(_message(answer))
        root = answer.get("data_root") if response.status_code == 200 else None
        return isinstance(root, str) and Path(root).resolve() == data_root().resolve()

    def refuse(self, hint: str) -> UsageError:
        """The error for a request that cannot go through the server."""
        return UsageError(
            f"a learnloop server (pid {self.pid}) at {self.url} holds the database of "
            f"this data root; {hint}"
        )

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        import httpx

        try:
            with self._http() as http:
                response = http.request(method, path, json=body, params=params or None)
        except httpx.HTTPError as exc:
            raise self._gone(exc) from exc
        _check(response)
        return response.json()

    def _gone(self, exc: Exception) -> ServerError:
        return ServerError(f"the learnloop server at {self.url} did not answer: {exc}")

    # -- endpoints ---------------------------------------------------------------------

    def ask(
        self,
        body: dict[str, Any],
        on_token: Callable[[str], Any] | None = None,
        on_start: Callable[[str], Any] | None = None,
        on_step: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]:
        """Stream an answer (``on_start`` gets the answering version before the first
        piece, ``on_token`` each piece, ``on_step`` each call and result of the server's
        tools as it runs); return the turn's ids, the answer, the version and the steps,
        as ``learnloop ask --json`` prints them."""
        import httpx

        answer: list[str] = []
        try:
            with (
                self._http(ANSWER_TIMEOUT_S) as http,
                http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                    _check(r)
                result = {
                    "turn_id": int(r.headers["X-Learnloop-Turn-Id"]),
                    "thread_id": r.headers["X-Learnloop-Thread-Id"],
                    "answer": "",
                    "version": r.headers["X-Learnloop-Version"],
                }
                trimmed = int(r.headers.get("X-Learnloop-Trimmed", "0"))
                if trimmed:  # as LocalService's answer_data says it
                    result["trimmed"] = trimmed
                if on_start is not None:
                    on_start(result["version"])
                for event in _events(r.iter_lines()):
                    if "error" in event:
                        raise ServerError(_message(event), 500, "server_error")
                    if event.get("stopped_by"):  # the final chunk: what ended the answer
                        result["stopped_by"] = event["stopped_by"]
                    if event.get("learnloop_steps"):
                        result["steps"] = event["learnloop_steps"]
                    if event.get("learnloop_step") and on_step is not None:
                        on_step(event["learnloop_step"])
                    piece = event["choices"][0]["delta"].get("content") if event["choices"] else ""
                    if piece:
                        answer.append(piece)
                        if on_token is not None:
                            on_token(piece)
        except httpx.HTTPError as exc:
            raise self._gone(exc) from exc
        except KeyError as exc:
            raise ServerError(f"the server at {self.url} sent an unexpected answer") from exc
        result["answer"] = "".join(answer)
        return result

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/feedback", body))

    def learn(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/learn", overrides))

    def learn_run(self, run: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/learn/{run}"))

    def versions(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/versions"))

    def log(self, limit: int) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/log", limit=limit))

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/status"))

    def cancel_run(self, run: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/learn/{run}/cancel", {}))

    def publish_run(self, run: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/learn/{run}/publish", {}))

    def runs(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/learn"))

    def history(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/history"))

    def compare(self, a: str | None, b: str | None) -> dict[str, Any]:
        given = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        return dict(self.request("GET", "/v1/versions/compare", **given))

    def threads(self, limit: int, q: str | None = None) -> list[dict[str, Any]]:
        search = {"q": q} if q is not None else {}
        return list(self.request("GET", "/v1/threads", limit=limit, **search))

    def thread(self, thread_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/v1/threads/{quote(thread_id, safe='')}"))

    def rename_thread(self, thread_id: str, title: str) -> dict[str, Any]:
        path = f"/v1/threads/{quote(thread_id, safe='')}"
        return dict(self.request("PATCH", path, {"title": title}))

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/v1/threads/{quote(thread_id, safe='')}"))

    def control_list(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/control"))

    def control_add(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/control", body))

    def export_data(self, run_id: int | None, current: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"current": "true"} if current else {}
        if run_id is not None:
            params["run"] = run_id
        return dict(self.request("GET", "/v1/export", **params))

    def keys_list(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/keys"))

    def keys_create(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        body = {"name": name, "role": "admin" if admin else "user"}
        return dict(self.request("POST", "/v1/keys", body))

    def keys_revoke(self, name: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/keys/{quote(name, safe='')}/revoke", {}))

    def activate(self, version: str, why: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/v1/versions/{version}/activate", {"why": why}))

    def remove_versions(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/versions/remove", body))

    def forget(self, user: str, learn: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/forget", {"user": user, "learn": learn}))

    def rollback(self, why: str) -> dict[str, Any]:
        return dict(self.request("POST", "/v1/rollback", {"why": why}))


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return ""


def _check(response: Any) -> None:
    """Raise the server's error answer as a ServerError."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    message = _message(body) or f"the server answered {response.status_code}"
    kind = str(body["error"].get("type", "")) if _message(body) else "error"
    if kind == NothingToLearn.kind:
        raise NothingToLearn(message.removeprefix(NothingToLearn.api_prefix))
    raise ServerError(message, response.status_code, kind)


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)
