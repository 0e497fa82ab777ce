"""The API's description pages, ``/docs`` (Swagger UI) and ``/redoc``, that work offline.

FastAPI's own pages load their scripts, styles and fonts from CDNs, which a machine
without the internet (or a browser that blocks them) never reaches: the page stays blank.
Here the same pages load the files the ``fastapi-offline`` package ships, served by this
server under ``/static/docs/`` (a path the guard leaves open, like the web page's files).

``/docs`` also sends the web page's token with "Try it out" (swagger-ui's
``requestInterceptor``), only to this server: a browser's API call without it is refused
(agent/server/auth.py), so without it every call tried from the page would be a 403.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from learnloop.agent.server.auth import PAGE_TOKEN_HEADER

ASSETS_URL = "/static/docs"  # under /static/: open without a key or the page token
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# where swagger-ui's options start in get_swagger_ui_html's page: the interceptor goes there
CONFIG_START = "const ui = SwaggerUIBundle({"


def assets() -> Path:
    """The folder of swagger-ui's and redoc's files (swagger-ui-bundle.js, swagger-ui.css,
    redoc.standalone.js, favicon.png)."""
    return Path(str(files("fastapi_offline") / "static"))


def add_docs(app: FastAPI, page_token: str) -> None:
    """Serve ``/docs`` and ``/redoc`` from local files. ``app`` was made with
    ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off); their paths are set
    back on it so the guard, installed after this, leaves them open as before."""
    app.docs_url, app.redoc_url = DOCS_URL, REDOC_URL
    # mounted before the web page's /static, which would otherwise answer these paths
    app.mount(ASSETS_URL, StaticFiles(directory=assets()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=oauth2_redirect,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        return with_page_token(page, page_token)

    if oauth2_redirect:

        @app.get(oauth2_redirect, include_in_schema=False)
        def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        # redoc's footer links a logo on its CDN: images from this server only, so the
        # browser never asks another machine (found by the offline test in a fresh clone)
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page


def with_page_token(page: HTMLResponse, page_token: str) -> HTMLResponse:
    """Swagger UI's page with a ``requestInterceptor`` that adds the page token to every
    request for this server (never to another one a user points the page at). Never
    cached: the token changes with every start of the server."""
    text = bytes(page.body).decode("utf-8")
    if CONFIG_START not in text:  # FastAPI changed its page: say so rather than 403 later
        raise RuntimeError(f"FastAPI's Swagger UI page lacks {CONFIG_START!r}")
    interceptor = (
        "requestInterceptor: (request) => {"
        " if (new URL(request.url, location.href).origin === location.origin) {"
        f" request.headers[{json.dumps(PAGE_TOKEN_HEADER)}] = {json.dumps(page_token)}; }}"
        " return request; },"
    )
    filled = text.replace(CONFIG_START, f"{CONFIG_START}\n    {interceptor}", 1)
    return HTMLResponse(filled, headers={"Cache-Control": "no-store"})
