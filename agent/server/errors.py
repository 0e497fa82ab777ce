"""Every error answer of the server, in one place: ``{"error": {"message", "type"}}``.

A :class:`~learnloop.storage.errors.LearnloopError` answers its own status and kind; a
request that fails validation 422 naming the fields; an unknown path or wrong method 404
/ 405. Each changes nothing. Anything else is a bug, and only a bug is a 500.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from learnloop.storage.errors import LearnloopError


def error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind}}, status_code=status, headers=headers
    )


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(LearnloopError)
    async def user_error(_: Request, exc: LearnloopError) -> JSONResponse:
        headers = getattr(exc, "headers", None)  # Retry-After on a busy server's 503
        return error(exc.status, exc.api_prefix + str(exc), exc.kind, headers)

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
        kind = kinds.get(exc.status_code, "error")
        return error(exc.status_code, str(exc.detail), kind, getattr(exc, "headers", None))
