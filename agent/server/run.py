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

from agent.config import GenerationConfig
from learning.triggers import TriggerConfig
from storage.home import data_root

if TYPE_CHECKING:
    from agent.server.state import ServerState

SERVER_FILE = "server.json"


def server_file() -> Path:
    return data_root() / SERVER_FILE


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier server keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(text)


def build_state(
    model_spec: str | None,
    generation: GenerationConfig,
    trigger: TriggerConfig,
    bench_results: Path | None,
    *,
    keep_adapters: int = 4,
) -> ServerState:
    """The store (held for good), the model wrapped for adapters, the active version."""
    from agent.backend import TransformersBackend
    from agent.models import resolve_model
    from agent.runtime import Agent
    from agent.server.state import ServerState
    from learning.cycle import pid_alive
    from storage.store import Store

    store = Store(shared=True)
    store.fail_stale_runs(pid_alive)  # a cycle of a server that was killed
    model = resolve_model(model_spec)
    backend = TransformersBackend(model.path, model.name, keep_adapters=keep_adapters)
    agent = Agent(store, backend, generation)
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
) -> None:
    import uvicorn

    from agent.client import find_server
    from agent.runtime import UsageError
    from agent.server.app import create_app
    from agent.server.auth import keys_required
    from storage.keys import new_key
    from storage.store import Store

    running = find_server()
    if running is not None:
        raise UsageError(
            f"a learnloop server already runs for this data root at {running.url} "
            f"(pid {running.pid}); stop it or set LEARNLOOP_HOME to another data root"
        )
    with Store() as keys:  # before the model loads: a refusal comes at once
        require_keys = keys_required(host, keys)
    token = new_key() if require_keys else None  # the CLI's key to this server
    state = build_state(model_spec, generation, trigger, bench_results)
    path = server_file()

    def stop() -> None:
        path.unlink(missing_ok=True)
        state.store.close()

    app = create_app(state, generation, require_keys=require_keys, local_token=token, on_stop=stop)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    info = {"url": url, "pid": os.getpid()} | ({"token": token} if token else {})
    write_private(path, json.dumps(info))
    print(f"learnloop serving {url} (data root {data_root()}); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
