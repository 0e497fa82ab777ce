"""A real learnloop server for tests: uvicorn on a free loopback port, in a thread of the
test process, over the tiny model and the test's own data root."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from learnloop.agent.backend import Backend
from learnloop.agent.config import GenerationConfig, LoopLimits, ServingConfig
from learnloop.agent.runtime import Agent
from learnloop.agent.server.app import create_app
from learnloop.agent.server.run import build_state, server_url
from learnloop.agent.server.state import ServerState
from learnloop.learning.models import resolve_model
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.store import Store

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

    def counts(self) -> tuple[int, ...]:
        """Everything a request could change: turns, threads, feedback, runs, switches,
        control prompts, keys."""
        store = self.state.store
        status = store.status()
        return (
            status.turns,
            status.threads,
            status.feedback,
            len(store.runs()),
            len(store.activations()),
            len(store.control_prompts()),
            len(store.api_keys()),
        )


@contextmanager
def running_server(
    model_dir: Path,
    *,
    trigger: TriggerConfig | None = None,
    generation: GenerationConfig = GEN,
    require_keys: bool = False,
    keep_adapters: int = 4,
    allow_files: tuple[Path, ...] = (),
    backend: Backend | None = None,
    toolbox: Toolbox = NO_TOOLS,
    limits: LoopLimits | None = None,
    serving: ServingConfig | None = None,
    **app_options: Any,
) -> Iterator[Running]:
    """``app_options``: more of ``create_app``'s settings (hosts, max_prompt_tokens);
    ``toolbox``: the operator's tools (``serve --tools``); ``backend``: one that answers
    instead of the model's (tests/scripted.py), the agent built around it as
    ``build_state`` builds it."""
    trigger = trigger or TriggerConfig(auto_learn=False)
    if backend is None:
        state = build_state(
            str(model_dir),
            generation,
            trigger,
            None,
            keep_adapters=keep_adapters,
            toolbox=toolbox,
            limits=limits,
            serving=serving,
        )
    else:
        store = Store(shared=True)
        agent = Agent(store, backend, generation, toolbox=toolbox, limits=limits)
        state = ServerState(store, agent, resolve_model(str(model_dir)), trigger=trigger)
    store = state.store
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                state,
                generation,
                require_keys=require_keys,
                allow_files=allow_files,
                **app_options,
            ),
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


@contextmanager
def serve_process(
    model_dir: Path, home: Path, log: Path, *flags: str, host: str = "127.0.0.1"
) -> Iterator[str]:
    """``learnloop --model MODEL serve FLAGS`` in a child process, as a user starts it, on
    a free port; yields its URL once it answers and has written server.json. Ctrl-C (as
    a user stops it) at the end."""
    port = free_port()
    command = [sys.executable, "-m", "learnloop.agent.cli", "--model", str(model_dir), "serve"]
    command += ["--host", host, "--port", str(port), *flags]
    env = {**os.environ, "LEARNLOOP_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    url = server_url(host, port)
    try:
        _wait_until_serving(url, process, log, home / "server.json")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(
    url: str, process: subprocess.Popen[bytes], log: Path, server_json: Path
) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            code = process.returncode
            raise RuntimeError(f"learnloop serve exited with {code}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200 and server_json.exists():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"learnloop serve did not answer in time:\n{log.read_text()}")
