"""What the serving benchmarks share (serve_load, serve_speed, serve_soak, engine_agreement,
llama_bare, web_screenshots): a data root with two versions, `learnloop serve` started on
it as a process and stopped, one streamed chat through the API, percentiles, and the
``results.json`` every one of them writes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

PROMPTS = [
    "Give me one tip for writing clear emails.",
    "What is a good name for a grey cat?",
    "Explain what a bond is in finance, briefly.",
    "Suggest a short weekend activity.",
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "n": len(values)}


# -- set-up ------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    """A figure for a table: ``digits`` decimals, "-" where there is none."""
    return "-" if value is None else f"{value:.{digits}f}"


def prepare_home(home: Path, model_spec: str | None) -> None:
    """Resolve the model and register two random adapters as versions v1 and v2, before the
    server takes the database."""
    os.environ["LEARNLOOP_HOME"] = str(home)
    from benchmarks.random_adapter import register_adapter, save_random_adapter
    from learnloop.learning.models import resolve_model
    from learnloop.storage.store import Store

    model = resolve_model(model_spec)
    with Store() as store:
        for seed, version_id in enumerate(["v1", "v2"], start=1):
            folder = home / "adapters" / version_id
            if not folder.is_dir():
                modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
                save_random_adapter(model.path, folder, seed, modules, random_b=False)
            if version_id not in {v.id for v in store.versions()}:
                register_adapter(
                    store, version_id, folder, model.name, "serve_load", "benchmark adapter"
                )


def start_server(
    home: Path, port: int, model_spec: str | None, *flags: str
) -> subprocess.Popen[bytes]:
    """`learnloop serve` on ``home`` with learning off (and ``flags``), once it answers."""
    env = {**os.environ, "LEARNLOOP_HOME": str(home)}
    args = [sys.executable, "-m", "learnloop.agent.cli"]
    if model_spec:
        args += ["--model", model_spec]
    args += ["serve", "--port", str(port), "--auto-learn", "false", *flags]
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(args, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server exited; see {home / 'server.log'}")
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not answer /healthz within 180 s")


def served_engine(home: Path) -> str | None:
    """What generates, as the server's start line in ``home/server.log`` names it
    ("llama.cpp f16", "transformers float32"); None if the line is not there."""
    try:
        log = (home / "server.log").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"learnloop serving \S+ with (.+?) \(data root", log)
    return found.group(1) if found else None


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


# -- measuring ---------------------------------------------------------------------------


def stream_chat(url: str, prompt: str, max_tokens: int, **settings: Any) -> dict[str, Any]:
    """One streamed chat; ``settings``: more of the request's fields (temperature, ...).
    ``sent`` is when the request went (``time.perf_counter``); a failed chat says why in
    ``error``."""
    body = {
        **settings,
        "model": "learnloop",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
    }
    sent = time.perf_counter()
    first = last = None
    tokens, done, versions = 0, False, set()
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=300) as r:
            header = r.headers.get("X-Learnloop-Version")
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunk = json.loads(line[6:])
                    versions.add(chunk.get("version"))
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                    if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                        first = first or time.perf_counter()
                        last = time.perf_counter()
            ok = r.status_code == 200 and done and versions == {header}
            status = r.status_code
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        return {"ok": False, "error": error, "sent": sent, "seconds": time.perf_counter() - sent}
    ttft = None if first is None else first - sent
    span = None if first is None or last is None else last - first
    result = {
        "ok": ok,
        "ttft": ttft,
        "tokens": tokens,
        "tokens_per_s": tokens / span if span and tokens > 1 else None,
        "seconds": time.perf_counter() - sent,
        "version": header,
        "sent": sent,
    }
    if not ok:
        if status != 200:
            result["error"] = f"HTTP {status}"
        elif not done:
            result["error"] = "the stream ended without [DONE]"
        else:
            named = sorted(str(v) for v in versions)
            result["error"] = f"chunks name version(s) {named}, the header {header!r}"
    return result


def report(
    args: argparse.Namespace, measured: dict[str, Any], table: Callable[[dict[str, Any]], str]
) -> None:
    """``OUT/results.json``: the run's settings, the machine and ``measured``; printed as
    JSON with ``--json``, else as ``table`` makes it."""
    results = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **measured,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2) if args.json else table(results))
