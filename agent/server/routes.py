"""The API's routes, grouped by what they serve; each only parses and hands over.

Every route calls one method of the server's :class:`ServerService` (the use cases,
written once in agent/service.py) or, for chat, the agent; errors are the project's
:class:`~learnloop.storage.errors.LearnloopError` kinds, turned into 4xx answers in one
place (agent/server/errors.py). The JSON bodies are the CLI's ``--json`` output.

Who may do what (the guard, agent/server/auth.py, has said who calls: :class:`Caller`):

- the operator (loopback without a key, the server's own token) and an admin key may do
  everything and see every thread;
- a user key sees, rates, renames and deletes only its own threads and turns (another's
  are a 404: the :class:`ServerService` ``*_seen`` methods), and may not switch
  versions, learn, add control prompts, export, read the history of switches or manage
  keys (403: ``Admin``). The versions, models, runs, control set, status (without the
  data root's path) and dashboard (counts and plots over everyone's feedback) it may read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from learnloop.agent.checks import MAX_LIST
from learnloop.agent.report import losses
from learnloop.agent.runtime import MAX_MESSAGE_CHARS
from learnloop.agent.server.chat import Prepared, stream_answer
from learnloop.agent.server.chat_request import ChatRequest
from learnloop.agent.server.service import ServerService
from learnloop.agent.server.state import ACTIVE_ALIAS
from learnloop.learning.child import progress_events
from learnloop.learning.config import LearnConfig
from learnloop.storage.errors import Forbidden, UsageError
from learnloop.storage.records import LOCAL_USER
from learnloop.storage.store import BASE_VERSION

# with "stream": true the answer comes as server-sent events
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


def service(request: Request) -> ServerService:
    return request.app.state.service  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Caller:
    """Who makes a request: ``user`` is the API key's name (None: the operator, on
    loopback without a key or with the server's own token); ``admin``: may do all."""

    user: str | None
    admin: bool

    @property
    def sees(self) -> str | None:
        """Whose threads it sees: None for everyone's, else its own name."""
        return None if self.admin else self.user


def caller(request: Request) -> Caller:
    user = getattr(request.state, "user", None)
    return Caller(user, user is None or getattr(request.state, "role", None) == "admin")


def admin(request: Request) -> None:
    """Only the operator or an admin key: a user's API key gets 403."""
    if not caller(request).admin:
        raise Forbidden(
            "a user's API key may not do this: it takes an admin key "
            "(`learnloop keys create NAME --admin`) or the server's operator"
        )


def user_of(request: Request) -> str:
    """Who makes the request: the API key's user when keys are required, else local."""
    return str(getattr(request.state, "user", None) or LOCAL_USER)


Service = Depends(service)
Admin = Depends(admin)
Who = Depends(caller)
Limit = Query(default=10, ge=1, le=MAX_LIST)
ThreadLimit = Query(default=50, ge=1, le=MAX_LIST)


class FeedbackRequest(BaseModel):
    turn_id: int = Field(ge=1, le=2**62)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=MAX_MESSAGE_CHARS)
    correction_messages: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=32,
        description="a corrected trajectory instead of a text correction: the assistant "
        "steps with their tool_calls, the tool results (a call without one is run with the "
        "server's tool) and the final answer, in OpenAI's message shape",
    )
    comment: str | None = Field(default=None, max_length=2000)
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="who gives it (the CLI's --user); ignored when an API key names the user",
    )


class RenameRequest(BaseModel):
    title: str = Field(description="the thread's new title: 1 to 200 characters")


class SwitchRequest(BaseModel):
    why: str | None = Field(default=None, max_length=500)


class ForgetRequest(BaseModel):
    user: str = Field(
        min_length=1,
        max_length=200,
        description="whose turns and feedback go (a user key may name only its own user)",
    )
    learn: dict[str, Any] | None = Field(
        default=None,
        description="learn settings for the replacement's cycle, as POST /v1/learn takes "
        "them, over the server's",
    )


class RemoveRequest(BaseModel):
    versions: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default=[], max_length=MAX_LIST, description="the versions whose adapter files go"
    )
    rejected: bool = Field(default=False, description="also every rejected version's files")
    dry_run: bool = Field(default=False, description="only say what would go, and its size")


def learn_request_model() -> Any:
    """``POST /v1/learn``'s body: any of LearnConfig's fields, typed and described as the
    dataclass says (one source for the CLI's flags and the API). Its bounds are checked
    by LearnConfig itself, which names the setting; an unknown field is named too."""
    hints = get_type_hints(LearnConfig)
    fields: dict[str, Any] = {
        f.name: (hints[f.name] | None, Field(default=None, description=f.metadata.get("help")))
        for f in dataclasses.fields(LearnConfig)
    }
    config = ConfigDict(extra="allow", strict=True)
    return create_model("LearnRequest", __config__=config, **fields)


LearnRequest = learn_request_model()


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["user", "admin"] = Field(
        default="user",
        description="user: sees and rates its own threads only; admin: may do everything",
    )


class ControlRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    answer: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    expect: str | None = Field(default=None, min_length=1, max_length=MAX_MESSAGE_CHARS)


chat = APIRouter(tags=["chat"])
learning = APIRouter(tags=["learning"])
versions = APIRouter(tags=["versions"])
data = APIRouter(tags=["data"])
keys = APIRouter(tags=["keys"], dependencies=[Admin])


# -- chat -------------------------------------------------------------------------------


@chat.get("/v1/models")
def models(s: ServerService = Service) -> dict[str, Any]:
    base = {"object": "model", "created": 0, "owned_by": "learnloop"}
    listed = [
        {**base, "id": ACTIVE_ALIAS, "version": s.state.active},
        {**base, "id": BASE_VERSION, "version": BASE_VERSION, "root": s.model_name()},
    ]
    for v in s.store.versions():
        if v.removed_at is not None:
            continue  # its files are gone (`versions rm`): no request can use it
        created = int(v.created_at.timestamp())
        listed.append(
            {**base, "id": v.id, "created": created, "version": v.id, "parent": v.parent}
            | {"status": v.status}
        )
    return {"object": "list", "data": listed}


@chat.post("/v1/chat/completions", response_model=None, responses=STREAMED)
async def completions(
    body: ChatRequest, request: Request, s: ServerService = Service, who: Caller = Who
) -> Any:
    app = request.app.state
    prepared = await asyncio.to_thread(
        Prepared,
        s.state,
        body,
        app.generation,
        owner=who.user,
        sees=who.sees,
        max_prompt_tokens=app.max_prompt_tokens,
    )
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            stream_answer(prepared, include),
            media_type="text/event-stream",
            headers={**prepared.headers(), "Cache-Control": "no-cache"},
        )
    answer = await asyncio.to_thread(prepared.ask)
    return JSONResponse(prepared.completion(answer), headers=prepared.headers())


@chat.post("/v1/feedback", status_code=201)
def feedback(
    body: FeedbackRequest, request: Request, s: ServerService = Service, who: Caller = Who
) -> Any:
    user = user_of(request) if who.user or not body.user else body.user
    return s.feedback_seen(
        body.turn_id,
        body.rating,
        who.sees,
        correction=body.correction,
        correction_messages=body.correction_messages,
        comment=body.comment,
        who=user,
    )


# -- learning ---------------------------------------------------------------------------


@learning.post("/v1/learn", status_code=202, dependencies=[Admin])
def learn(
    request: Request,
    body: LearnRequest | None = None,  # type: ignore[valid-type]
    s: ServerService = Service,
) -> dict[str, Any]:
    settings: dict[str, Any] = body.model_dump(exclude_unset=True) if body is not None else {}
    return s.start_learning(settings, f"api:{user_of(request)}")


@learning.get("/v1/learn")
def runs(s: ServerService = Service) -> list[dict[str, Any]]:
    return s.runs()


@learning.post("/v1/learn/{run}/publish", dependencies=[Admin])
def publish(run: int, request: Request, s: ServerService = Service) -> dict[str, Any]:
    """Publish a run that a local `learnloop learn` trained while this server started (the
    CLI does this itself); 409 for a run that is not trained and unpublished."""
    return s.publish_run(run, f"api:{user_of(request)}")


@learning.post("/v1/learn/{run}/cancel", dependencies=[Admin])
def cancel(run: int, s: ServerService = Service) -> dict[str, Any]:
    """Stop a running cycle: its trainer is stopped, the run recorded as cancelled, the
    active version unchanged; 409 for a run that is not running."""
    return s.cancel(run)


@learning.get("/v1/learn/{run}")
def run(run: int, s: ServerService = Service) -> dict[str, Any]:
    return s.run(run)


@learning.get("/v1/control")
def control_list(s: ServerService = Service) -> list[dict[str, Any]]:
    return s.control_list()


@learning.post("/v1/control", status_code=201, dependencies=[Admin])
def control_add(body: ControlRequest, s: ServerService = Service) -> dict[str, Any]:
    return s.control_add(body.prompt, body.answer, body.expect)


@learning.get("/v1/dashboard")
def dashboard(request: Request, s: ServerService = Service) -> dict[str, Any]:
    store = s.store
    status = store.status()
    return {
        "active_version": s.state.active,
        "feedback_waiting": status.unlearned_feedback,
        "running_run": status.running_run,
        "approval": [
            {"version": v, "up": up, "down": down, "rate": up / (up + down)}
            for v, up, down in store.approval_by_version()
        ],
        "runs": [
            {
                "run": r.id,
                "version": r.version_id,
                "status": r.status,
                "losses": losses(progress_events(Path(r.run_dir))) if r.run_dir else [],
            }
            for r in store.runs()
        ],
        "bench": bench_points(s.state.bench_results),
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


# -- versions ---------------------------------------------------------------------------


@versions.get("/v1/versions")
def version_list(s: ServerService = Service) -> list[dict[str, Any]]:
    return s.versions()


@versions.get("/v1/versions/compare")
def compare(
    a: str | None = Query(
        default=None, min_length=1, max_length=200, description="default: b's parent"
    ),
    b: str | None = Query(
        default=None, min_length=1, max_length=200, description="default: the active version"
    ),
    s: ServerService = Service,
) -> dict[str, Any]:
    """Two versions' stored answers to the control prompts side by side, each marked
    correct or not, and the counts (how many differ, became correct, stopped being);
    404 for an unknown version or one whose answers were never measured."""
    return s.compare(a, b)


@versions.post("/v1/versions/{version}/activate", dependencies=[Admin])
def activate(
    version: str, request: Request, body: SwitchRequest | None = None, s: ServerService = Service
) -> dict[str, Any]:
    why = (body.why if body else None) or "activated through the API"
    return s.activate(version, why=why, who=f"api:{user_of(request)}")


@versions.post("/v1/forget")
def forget(
    body: ForgetRequest, request: Request, s: ServerService = Service, who: Caller = Who
) -> dict[str, Any]:
    """Delete a user's turns and feedback, retire every version trained on them (the
    active one is switched away from before the next answer) and start training a
    replacement from the rest (``replacement_run``, followed as any run). The operator
    and admin keys may forget anyone; a user key only its own user (else 403)."""
    if not who.admin and body.user != who.user:
        raise Forbidden(f"a user key may forget only its own user ({who.user}), not {body.user!r}")
    return s.forget(body.user, settings=body.learn, who=f"api:{user_of(request)}")


@versions.post("/v1/versions/remove", dependencies=[Admin])
def remove_versions(body: RemoveRequest, s: ServerService = Service) -> dict[str, Any]:
    """Delete adapter files (``learnloop versions rm``); the versions' rows stay, marked
    removed. Never the active version (409)."""
    return s.remove_versions(body.versions, rejected=body.rejected, dry_run=body.dry_run)


@versions.post("/v1/rollback", dependencies=[Admin])
def rollback(
    request: Request, body: SwitchRequest | None = None, s: ServerService = Service
) -> dict[str, Any]:
    why = (body.why if body else None) or "rolled back through the API"
    return s.rollback(why=why, who=f"api:{user_of(request)}")


@versions.get("/v1/history", dependencies=[Admin])
def history(s: ServerService = Service) -> list[dict[str, Any]]:
    return s.history()


# -- turns, threads, status -------------------------------------------------------------


@data.get("/v1/threads")
def threads(
    limit: int = ThreadLimit,
    q: str | None = Query(
        default=None, description="only threads whose title or messages contain this text"
    ),
    s: ServerService = Service,
    who: Caller = Who,
) -> list[dict[str, Any]]:
    return s.threads_seen(limit, who.sees, q)


@data.get("/v1/threads/{thread_id}")
def thread(thread_id: str, s: ServerService = Service, who: Caller = Who) -> dict[str, Any]:
    return s.thread_seen(thread_id, who.sees)


@data.patch("/v1/threads/{thread_id}")
def rename_thread(
    thread_id: str, body: RenameRequest, s: ServerService = Service, who: Caller = Who
) -> dict[str, Any]:
    """Give a thread a title (1 to 200 characters); a user key only its own threads."""
    return s.rename_thread_seen(thread_id, body.title, who.sees)


@data.delete("/v1/threads/{thread_id}")
def delete_thread(thread_id: str, s: ServerService = Service, who: Caller = Who) -> dict[str, Any]:
    """Delete a thread, its turns and their feedback; a user key only its own threads.
    Versions already trained on its feedback keep what they learned."""
    return s.delete_thread_seen(thread_id, who.sees)


@data.get("/v1/log")
def log(limit: int = Limit, s: ServerService = Service, who: Caller = Who) -> list[dict[str, Any]]:
    return s.log_seen(limit, who.sees)


@data.get("/v1/status")
def status(s: ServerService = Service, who: Caller = Who) -> dict[str, Any]:
    return s.status(show_root=who.admin)


@data.get("/v1/export", dependencies=[Admin])
def export(
    run: int | None = Query(default=None, ge=1, le=2**62),
    current: bool = False,
    s: ServerService = Service,
) -> dict[str, Any]:
    """The rows of a run's snapshot (default: the latest) or of the current feedback, as
    ``learnloop export`` writes them: ``{"source", "run_id", "rows": {part: [row]}}``."""
    if run is not None and current:
        raise UsageError("give run or current, not both")
    return s.export_data(run, current)


# -- API keys (the operator only) -------------------------------------------------------


@keys.get("/v1/keys")
def keys_list(s: ServerService = Service) -> list[dict[str, Any]]:
    return s.keys_list()


@keys.post("/v1/keys", status_code=201)
def keys_create(body: KeyRequest, s: ServerService = Service) -> dict[str, Any]:
    return s.keys_create(body.name, admin=body.role == "admin")


@keys.post("/v1/keys/{name}/revoke")
def keys_revoke(name: str, s: ServerService = Service) -> dict[str, Any]:
    return s.keys_revoke(name)


ROUTERS = (chat, learning, versions, data, keys)
