"""Start the server: open the database for good, load the model, listen.

While it runs, ``DATA_ROOT/server.json`` says where (url and pid), so that CLI commands
for the same data root talk to it instead of failing on the database lock; it is removed
when the server stops. A server that requires API keys also puts its own token there
(the file is readable by its owner only), which the CLI sends as its key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from learnloop.agent.config import GenerationConfig, LoopLimits, ServingConfig
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.home import data_root, server_file, write_private

if TYPE_CHECKING:
    from learnloop.agent.server.state import ServerState


def build_state(
    model_spec: str | None,
    generation: GenerationConfig,
    trigger: TriggerConfig,
    bench_results: Path | None,
    *,
    keep_adapters: int = 4,
    toolbox: Toolbox = NO_TOOLS,
    limits: LoopLimits | None = None,
    serving: ServingConfig | None = None,
) -> ServerState:
    """The store (held for good), the model wrapped for adapters, the active version, and
    the operator's tools, which run inside the graph."""
    from learnloop.agent.engines import load_backend
    from learnloop.agent.runtime import Agent
    from learnloop.agent.server.state import ServerState
    from learnloop.learning.models import resolve_model
    from learnloop.storage.home import pid_alive
    from learnloop.storage.store import Store

    store = Store(shared=True)
    store.fail_stale_runs(pid_alive)  # a cycle of a server that was killed
    model = resolve_model(model_spec)
    backend = load_backend(model, serving or ServingConfig(), keep_adapters=keep_adapters)
    agent = Agent(store, backend, generation, toolbox=toolbox, limits=limits)
    agent.backend.ready_for_adapters()  # swaps then never wait for a gap between answers
    agent.sync_version()
    default_bench = data_root().parent / "results.json"  # a `learnloop bench` OUT/home
    return ServerState(
        store, agent, model, trigger=trigger, bench_results=bench_results or default_bench
    )


def serve(
    model_spec: str | None,
    host: str,
    port: int,
    generation: GenerationConfig,
    trigger: TriggerConfig,
    bench_results: Path | None,
    allow_files: tuple[Path, ...] = (),
    *,
    allow_hosts: tuple[str, ...] = (),
    max_prompt_tokens: int | None = None,
    toolbox: Toolbox = NO_TOOLS,
    limits: LoopLimits | None = None,
    serving: ServingConfig | None = None,
) -> None:
    """``allow_hosts``: names besides the listening address and loopback's that requests
    may reach the server by; ``max_prompt_tokens``: the bound on a chat request's prompt
    (None: the default, agent/server/chat.py)."""
    import uvicorn

    from learnloop.agent.client import find_server
    from learnloop.agent.server.app import create_app
    from learnloop.agent.server.auth import Hosts, keys_required
    from learnloop.agent.server.chat_request import MAX_PROMPT_TOKENS
    from learnloop.storage.errors import UsageError
    from learnloop.storage.keys import new_key
    from learnloop.storage.store import Store

    running = find_server()
    if running is not None:
        raise UsageError(
            f"a learnloop server already runs for this data root at {running.url} "
            f"(pid {running.pid}); stop it or set LEARNLOOP_HOME to another data root"
        )
    hosts = Hosts(host, allow_hosts)  # a bad --allow-host is refused before anything loads
    with Store() as keys:  # before the model loads: a refusal comes at once
        require_keys = keys_required(host, keys)
    token = new_key() if require_keys else None  # the CLI's key to this server
    state = build_state(
        model_spec,
        generation,
        trigger,
        bench_results,
        toolbox=toolbox,
        limits=limits,
        serving=serving,
    )
    path = server_file()

    def stop() -> None:
        path.unlink(missing_ok=True)
        state.store.close()

    app = create_app(
        state,
        generation,
        require_keys=require_keys,
        local_token=token,
        allow_files=allow_files,
        hosts=hosts,
        max_prompt_tokens=max_prompt_tokens or MAX_PROMPT_TOKENS,
        on_stop=stop,
    )
    url = server_url(host, port)
    info = {"url": url, "pid": os.getpid()} | ({"token": token} if token else {})
    write_private(path, json.dumps(info))
    engine = state.agent.backend.engine
    print(
        f"learnloop serving {url} with {engine} (data root {data_root()}); Ctrl-C stops",
        file=sys.stderr,
    )
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning")


def server_url(host: str, port: int) -> str:
    """Where this machine's clients reach a server listening on ``host``: an address of
    every interface on loopback (IPv4's for 0.0.0.0, IPv6's for ::), an IPv6 address in
    brackets (``http://[::1]:8000``; ``http://::1:8000`` is no URL)."""
    from learnloop.agent.server.auth import host_name

    bare = host.strip().strip("[]")
    name = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(bare, host_name(bare))
    return f"http://{name}:{port}"
