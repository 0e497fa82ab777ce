"""Start the server: open the database for good, load the model, listen.

While it runs, ``DATA_ROOT/server.json`` says where (url and pid), so that CLI commands
for the same data root talk to it instead of failing on the database lock; it is removed
when the server stops.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agent.config import GenerationConfig
from learning.triggers import TriggerConfig
from storage.home import data_root

SERVER_FILE = "server.json"


def server_file() -> Path:
    return data_root() / SERVER_FILE


def build_state(
    model_spec: str | None,
    generation: GenerationConfig,
    trigger: TriggerConfig,
    bench_results: Path | None,
) -> object:
    from agent.backend import TransformersBackend
    from agent.models import resolve_model
    from agent.runtime import Agent
    from agent.server.state import ServerState
    from learning.cycle import pid_alive
    from storage.store import Store

    store = Store(shared=True)
    store.fail_stale_runs(pid_alive)  # a cycle of a server that was killed
    model = resolve_model(model_spec)
    agent = Agent(store, TransformersBackend(model.path, model.name, keep_adapters=4), generation)
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
) -> None:
    import uvicorn

    from agent.server.app import create_app
    from agent.server.state import ServerState

    state = build_state(model_spec, generation, trigger, bench_results)
    assert isinstance(state, ServerState)
    app = create_app(state, generation)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    path = server_file()
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    print(f"learnloop serving {url} (data root {data_root()}); Ctrl-C stops", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        path.unlink(missing_ok=True)
        state.store.close()
