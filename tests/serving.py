"""A real learnloop server for tests: uvicorn on a free loopback port, in a thread of the
test process, over the tiny model and the test's own data root."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from agent.config import GenerationConfig
from agent.server.app import create_app
from agent.server.run import build_state
from agent.server.state import ServerState
from learning.triggers import TriggerConfig

GEN = GenerationConfig(max_new_tokens=8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    state: ServerState

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


@contextmanager
def running_server(
    model_dir: Path,
    *,
    trigger: TriggerConfig | None = None,
    generation: GenerationConfig = GEN,
    require_keys: bool = False,
    keep_adapters: int = 4,
) -> Iterator[Running]:
    trigger = trigger or TriggerConfig(auto_learn=False)
    state = build_state(str(model_dir), generation, trigger, None, keep_adapters=keep_adapters)
    store = state.store
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state, generation, require_keys=require_keys),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Running(url, state)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for job in state.jobs.values():
            if job.thread is not None:
                job.thread.join(timeout=120)
        store.close()
