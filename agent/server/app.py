"""The FastAPI application: routes, error shapes and the web page.

Every error is ``{"error": {"message", "type"}}`` with a 4xx status and changes nothing:
the handlers below turn the project's own exceptions (unknown ids, bad input, a running
cycle, nothing to learn) into the status a client can act on. The JSON bodies of
``/v1/versions``, ``/v1/status`` and ``/v1/log`` are the CLI's ``--json`` output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from agent.config import GenerationConfig
from agent.report import status_data, turn_dict, versions_data
from agent.runtime import MAX_MESSAGE_CHARS, UsageError
from agent.server.auth import install
from agent.server.chat import ChatRequest, Prepared, stream_answer
from agent.server.state import ACTIVE_ALIAS, Busy, ServerState, losses
from learning.config import LearnConfig
from learning.cycle import progress_events
from learning.snapshot import NothingToLearn
from storage.home import data_root
from storage.store import BASE_VERSION, NotFound

WEB = Path(__file__).resolve().parent.parent / "web"


# with "stream": true the answer comes as server-sent events
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


class FeedbackRequest(BaseModel):
    turn_id: int = Field(ge=1, le=2**62)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    comment: str | None = Field(default=None, max_length=2000)
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="who gives it (the CLI's --user); ignored when an API key names the user",
    )


class SwitchRequest(BaseModel):
    why: str | None = Field(default=None, max_length=500)


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def user_of(request: Request) -> str:
    """Who makes the request: the API key's user when keys are required, else local."""
    return str(getattr(request.state, "user", None) or "local")


def create_app(
    state: ServerState,
    generation: GenerationConfig | None = None,
    *,
    require_keys: bool = False,
    local_token: str | None = None,
    on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The app over ``state``; ``require_keys``: every request needs a valid API key or
    ``local_token``, the server's own (see ``auth.py``; a server off loopback).
    ``on_stop`` runs when the server shuts down (also on SIGTERM, which uvicorn re-raises
    after shutting down, so a ``finally`` around it would not run)."""
    default = generation or GenerationConfig()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_stop is not None:
            on_stop()

    app = FastAPI(
        title="learnloop",
        summary="A chat agent that fine-tunes its own small model from your feedback.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.learnloop = state
    _errors(app)
    install(app, state.store, require_keys=require_keys, local_token=local_token)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": state.agent.backend.model_name,
            "active_version": state.active,
            "data_root": str(data_root()),
        }

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        base = {"object": "model", "created": 0, "owned_by": "learnloop"}
        data = [
            {**base, "id": ACTIVE_ALIAS, "version": state.active},
            {**base, "id": BASE_VERSION, "version": BASE_VERSION, "root": state.model.name},
        ]
        for v in state.store.versions():
            created = int(v.created_at.timestamp())
            data.append(
                {**base, "id": v.id, "created": created, "version": v.id, "parent": v.parent}
                | {"status": v.status}
            )
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None, responses=STREAMED)
    async def chat(body: ChatRequest) -> Any:
        prepared = await asyncio.to_thread(Prepared, state, body, default)
        if body.stream:
            include = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                stream_answer(prepared, include),
                media_type="text/event-stream",
                headers={**prepared.headers(), "Cache-Control": "no-cache"},
            )
        answer = await asyncio.to_thread(prepared.ask)
        return JSONResponse(prepared.completion(answer), headers=prepared.headers())

    @app.post("/v1/feedback", status_code=201)
    def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        if body.correction is not None and not body.correction.strip():
            raise UsageError("the correction is empty; give the better answer as its text")
        keyed = getattr(request.state, "user", None)
        user = user_of(request) if keyed or not body.user else body.user
        fid = state.store.add_feedback(
            body.turn_id,
            body.rating,
            correction=body.correction.strip() if body.correction else None,
            comment=body.comment,
            user_name=user,
        )
        started = state.maybe_learn(f"trigger:{user}")
        return {
            "feedback_id": fid,
            "turn_id": body.turn_id,
            "rating": body.rating,
            "learning_started": started,
        }

    @app.post("/v1/learn", status_code=202)
    def learn(request: Request, body: dict[str, Any] | None = None) -> dict[str, Any]:
        config = learn_config(state.learn, body or {})
        job = state.start_learning(config, f"api:{user_of(request)}")
        return {"run": job.run, "status": "running"}

    @app.get("/v1/learn/{run}")
    def learn_progress(run: int) -> dict[str, Any]:
        return state.run_view(run)

    @app.get("/v1/versions")
    def versions() -> list[dict[str, Any]]:
        return versions_data(state.store.versions(), state.active)

    @app.post("/v1/versions/{version}/activate")
    def activate(version: str, request: Request, body: SwitchRequest | None = None) -> Any:
        why = (body.why if body else None) or "activated through the API"
        swap = state.activate(version, who=f"api:{user_of(request)}", why=why)
        return dataclasses.asdict(swap)

    @app.post("/v1/rollback")
    def rollback(request: Request, body: SwitchRequest | None = None) -> Any:
        why = (body.why if body else None) or "rolled back through the API"
        swap = state.rollback(who=f"api:{user_of(request)}", why=why)
        return dataclasses.asdict(swap)

    @app.get("/v1/threads")
    def threads(limit: int = 50) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "created_at": t.created_at,
                "last_at": t.last_at,
                "title": " ".join(t.first_message.split())[:80],
                "turns": t.turns,
            }
            for t in state.store.threads(max(1, min(limit, 500)))
        ]

    @app.get("/v1/threads/{thread_id}")
    def thread(thread_id: str) -> dict[str, Any]:
        state.agent.check_thread(thread_id)
        turns = [turn_dict(t) for t in state.store.thread_history(thread_id)]
        return {"id": thread_id, "turns": turns}

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        s = state.store.status()
        running = s.running_run
        progress = state.run_view(running) if running else None
        return status_data(s, state.model.name, str(data_root()), progress)

    @app.get("/v1/log")
    def log(limit: int = 10) -> list[dict[str, Any]]:
        return [turn_dict(t) for t in state.store.recent_turns(max(1, min(limit, 1000)))]

    @app.get("/v1/dashboard")
    def dashboard() -> dict[str, Any]:
        return dashboard_data(state)

    if WEB.is_dir():
        app.mount("/static", StaticFiles(directory=WEB), name="static")

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(WEB / "index.html")

    return app


def learn_config(default: LearnConfig, body: dict[str, Any]) -> LearnConfig:
    """The server's learn settings with the request's overrides; unknown or bad fields
    are a usage error naming them."""
    kinds = typing.get_type_hints(LearnConfig)
    unknown = sorted(set(body) - set(kinds))
    if unknown:
        raise UsageError(f"unknown learn setting(s): {', '.join(unknown)}")
    for name, value in body.items():
        accepted = {float: (int, float), int: (int,)}.get(kinds[name], (kinds[name],))
        if isinstance(value, bool) != (kinds[name] is bool) or not isinstance(value, accepted):
            raise UsageError(f"learn setting {name} must be a {kinds[name].__name__}")
    try:
        return dataclasses.replace(default, **body)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad learn setting: {exc}") from exc


def dashboard_data(state: ServerState) -> dict[str, Any]:
    store = state.store
    s = store.status()
    runs = [
        {
            "run": r.id,
            "version": r.version_id,
            "status": r.status,
            "losses": losses(progress_events(Path(r.run_dir))) if r.run_dir else [],
        }
        for r in store.runs()
    ]
    return {
        "active_version": state.active,
        "feedback_waiting": s.unlearned_feedback,
        "running_run": s.running_run,
        "approval": [
            {"version": v, "up": up, "down": down, "rate": up / (up + down)}
            for v, up, down in store.approval_by_version()
        ],
        "runs": runs,
        "bench": bench_points(state.bench_results),
    }


def bench_points(path: Path | None) -> dict[str, Any] | None:
    """The benchmark's accuracy curve from its results.json, when there is one."""
    if path is None or not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
        points = [
            {"interactions": 0, "accuracy": results["base"]["accuracy"], "version": "base"},
            *[
                {
                    "interactions": c["interactions"],
                    "accuracy": c["accuracy"],
                    "version": c["version"],
                }
                for c in results["cycles"]
            ],
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a bench results file: the plot is simply absent
    return {"points": points, "path": str(path)}


def _errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc), "not_found_error")

    @app.exception_handler(UsageError)
    async def usage(_: Request, exc: UsageError) -> JSONResponse:
        return error(400, str(exc), "invalid_request_error")

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return error(409, str(exc), "conflict_error")

    @app.exception_handler(NothingToLearn)
    async def nothing(_: Request, exc: NothingToLearn) -> JSONResponse:
        return error(422, f"nothing to learn: {exc}", "nothing_to_learn")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return JSONResponse(
            {
                "error": {
                    "message": "invalid request: " + "; ".join(problems[:5]),
                    "type": "invalid_request_error",
                    "details": jsonable_encoder(exc.errors()[:5], exclude={"input", "ctx"}),
                }
            },
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http(_: Request, exc: HTTPException) -> JSONResponse:
        kinds = {404: "not_found_error", 405: "method_not_allowed"}
        return JSONResponse(
            {"error": {"message": str(exc.detail), "type": kinds.get(exc.status_code, "error")}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
