"""The FastAPI application: the routers, the error answers, the web page.

Routes live in agent/server/routes.py, grouped in routers; each calls one method of the
server's service (agent/server/service.py), so a use case is written once for the CLI,
the REPL and the API. Errors are answered in one place (agent/server/errors.py); who may
call, and from where, is checked before any route (agent/server/auth.py).

The web page (``/``) is served with the page token written into it: its scripts send it
with every call (agent/web/api.js), and another site's page cannot read it (the
browser's same-origin rule; a foreign ``Host`` gets nothing at all). ``/docs`` and
``/redoc`` load their files from this server, not a CDN (agent/server/docs.py).
"""

from __future__ import annotations

import html
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from learnloop.agent.config import GenerationConfig
from learnloop.agent.server.auth import Hosts, install
from learnloop.agent.server.chat_request import MAX_PROMPT_TOKENS
from learnloop.agent.server.docs import add_docs
from learnloop.agent.server.errors import install_errors
from learnloop.agent.server.routes import ROUTERS
from learnloop.agent.server.service import ServerService
from learnloop.agent.server.state import ServerState

WEB = Path(__file__).resolve().parent.parent / "web"
TOKEN_SLOT = '<meta name="learnloop-page-token" content="">'  # in index.html


def create_app(
    state: ServerState,
    generation: GenerationConfig | None = None,
    *,
    require_keys: bool = False,
    local_token: str | None = None,
    allow_files: tuple[Path, ...] = (),
    hosts: Hosts | None = None,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    on_stop: Callable[[], None] | None = None,
) -> FastAPI:
    """The app over ``state``; ``require_keys``: every request needs a valid API key or
    ``local_token``, the server's own (see ``auth.py``; a server off loopback).
    ``allow_files``: folders besides the data root whose files a request may name.
    ``hosts``: the names the server answers to (default: loopback's). A chat request's
    prompt may be at most ``max_prompt_tokens`` tokens.
    ``on_stop`` runs when the server shuts down (also on SIGTERM, which uvicorn re-raises
    after shutting down, so a ``finally`` around it would not run)."""

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
        docs_url=None,  # FastAPI's pages load from CDNs: add_docs serves them offline
        redoc_url=None,
    )
    app.state.learnloop = state
    app.state.service = ServerService(state, allow_files)
    app.state.generation = generation or GenerationConfig()
    app.state.max_prompt_tokens = max_prompt_tokens
    page_token = secrets.token_urlsafe(32)  # new with every start of the server
    add_docs(app, page_token)
    install_errors(app)
    install(
        app,
        state.store,
        require_keys=require_keys,
        local_token=local_token,
        page_token=page_token,
        hosts=hosts,
    )

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness, open to anyone: it says nothing else (not where the data lives)."""
        return {"status": "ok"}

    for router in ROUTERS:
        app.include_router(router)
    if WEB.is_dir():
        app.mount("/static", StaticFiles(directory=WEB), name="static")

        @app.get("/", include_in_schema=False)
        def page() -> HTMLResponse:
            return web_page(page_token)

    return app


def web_page(page_token: str) -> HTMLResponse:
    """index.html with the page token in its slot; never cached, since the token changes
    with every start of the server (a stale one would be refused)."""
    text = (WEB / "index.html").read_text(encoding="utf-8")
    if TOKEN_SLOT not in text:
        raise RuntimeError(f"{WEB / 'index.html'} lacks {TOKEN_SLOT}")  # a bug in the page
    filled = TOKEN_SLOT.replace('content=""', f'content="{html.escape(page_token)}"')
    return HTMLResponse(text.replace(TOKEN_SLOT, filled), headers={"Cache-Control": "no-store"})
