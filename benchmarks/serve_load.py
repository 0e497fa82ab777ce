"""The server under load, on loopback: what the README's serving figures come from.

It starts ``learnloop serve`` as a separate process (the real model, a fresh data root
under ``--out``) with two versions registered beforehand (LoRA adapters with random
weights: they only have to be real adapters that take time to load), and measures:

1. one client: ``--single`` streamed chats one after another;
2. ``--clients`` (8) streaming clients for ``--seconds`` (60), each sending its next chat
   as soon as the last one ended, while a switcher activates v1, v2, v1, ... every
   ``--swap-every`` seconds: requests completed, errors (any non-200, a stream without
   ``[DONE]``, an answer naming a version other than its header's), time to first token
   (request sent -> first content chunk) at p50 / p95, tokens per second per stream
   (completion tokens from the usage chunk / time from the first to the last chunk);
3. each swap's time as the server measured it (load the adapter + record + repoint) and
   as the switcher saw it (the activate request's round trip);
4. the cost of logging: ``Store.add_turn`` and ``Store.add_feedback`` on a DuckDB file
   in this process (``--log-ops`` each), p50 / p95 in ms.

    python -m benchmarks.serve_load --out /tmp/serve-load [--json]

Output: ``OUT/results.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
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


# -- measuring ---------------------------------------------------------------------------


def stream_chat(url: str, prompt: str, max_tokens: int, **settings: Any) -> dict[str, Any]:
    """One streamed chat; ``settings``: more of the request's fields (temperature, ...)."""
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
    except httpx.HTTPError as exc:
        return {"ok": False, "error": str(exc)}
    ttft = None if first is None else first - sent
    span = None if first is None or last is None else last - first
    return {
        "ok": ok,
        "ttft": ttft,
        "tokens": tokens,
        "tokens_per_s": tokens / span if span and tokens > 1 else None,
        "seconds": time.perf_counter() - sent,
        "version": header,
    }


def single_client(url: str, n: int, max_tokens: int) -> dict[str, Any]:
    results = [stream_chat(url, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(n)]
    return aggregate(results, time_s=sum(r.get("seconds", 0) for r in results))


def aggregate(results: list[dict[str, Any]], time_s: float) -> dict[str, Any]:
    good = [r for r in results if r["ok"]]
    return {
        "requests": len(results),
        "completed": len(good),
        "errors": len(results) - len(good),
        "ttft_s": summary([r["ttft"] for r in good if r["ttft"] is not None]),
        "tokens_per_s_per_stream": summary(
            [r["tokens_per_s"] for r in good if r["tokens_per_s"] is not None]
        ),
        "aggregate_tokens_per_s": sum(r["tokens"] for r in good) / time_s if time_s else None,
        "seconds": time_s,
    }


def under_load(url: str, clients: int, seconds: float, swap_every: float, max_tokens: int) -> Any:
    results: list[dict[str, Any]] = []
    swaps: list[dict[str, float]] = []
    deadline = time.monotonic() + seconds
    stop = threading.Event()

    def client(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            results.append(stream_chat(url, PROMPTS[i % len(PROMPTS)], max_tokens))
            i += 1

    def switcher() -> None:
        n = 0
        while not stop.wait(swap_every):
            sent = time.perf_counter()
            version = ("v1", "v2")[n % 2]
            r = httpx.post(f"{url}/v1/versions/{version}/activate", json={}, timeout=60)
            swaps.append(
                {
                    "ok": r.status_code == 200,
                    "server_s": r.json().get("seconds", float("nan")),
                    "load_s": r.json().get("load_seconds", float("nan")),
                    "round_trip_s": time.perf_counter() - sent,
                }
            )
            n += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    swapper = threading.Thread(target=switcher)
    swapper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    swapper.join()
    load = aggregate(results, time.perf_counter() - started)
    load["versions_served"] = sorted({str(r.get("version")) for r in results if r["ok"]})
    return load, {
        "swaps": len(swaps),
        "failed": sum(1 for s in swaps if not s["ok"]),
        "server_ms": summary([s["server_s"] * 1000 for s in swaps]),
        "load_ms": summary([s["load_s"] * 1000 for s in swaps]),
        "round_trip_ms": summary([s["round_trip_s"] * 1000 for s in swaps]),
    }


def logging_cost(folder: Path, n: int) -> dict[str, Any]:
    """add_turn and add_feedback on a real DuckDB file, one call at a time."""
    from learnloop.storage.records import TurnLog
    from learnloop.storage.store import Store

    turn_ms, feedback_ms = [], []
    with Store(folder / "logging.duckdb") as store:
        for i in range(n):
            log = TurnLog(
                thread_id=f"t{i % 20}",
                user_message=PROMPTS[i % len(PROMPTS)],
                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                prompt="<|im_start|>user\n...<|im_end|>",
                answer="An answer of a few words. " * 8,
                version="base",
                model="SmolLM2-135M-Instruct",
                settings={"max_new_tokens": 64},
                prompt_tokens=30,
                completion_tokens=64,
                first_token_ms=40.0,
                total_ms=900.0,
                nodes=["load_history", "respond", "log_turn"],
            )
            t0 = time.perf_counter()
            turn_id = store.add_turn(log)
            t1 = time.perf_counter()
            store.add_feedback(turn_id, "up" if i % 3 else "down", correction=None)
            t2 = time.perf_counter()
            turn_ms.append((t1 - t0) * 1000)
            feedback_ms.append((t2 - t1) * 1000)
    return {"turn_ms": summary(turn_ms), "feedback_ms": summary(feedback_ms)}


# -- report ------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    single, load, swap, log = (
        results["single"],
        results["load"],
        results["swap"],
        results["logging"],
    )
    rows = [
        "| | single client | " + f"{results['config']['clients']} concurrent streams |",
        "|---|---:|---:|",
        f"| requests completed / errors | {single['completed']} / {single['errors']} | "
        f"{load['completed']} / {load['errors']} |",
        f"| time to first token p50 / p95 (s) | {_f(single['ttft_s']['p50'])} / "
        f"{_f(single['ttft_s']['p95'])} | {_f(load['ttft_s']['p50'])} / "
        f"{_f(load['ttft_s']['p95'])} |",
        f"| tokens/s per stream p50 | {_f(single['tokens_per_s_per_stream']['p50'], 1)} | "
        f"{_f(load['tokens_per_s_per_stream']['p50'], 1)} |",
        f"| tokens/s all streams | {_f(single['aggregate_tokens_per_s'], 1)} | "
        f"{_f(load['aggregate_tokens_per_s'], 1)} |",
        "",
        "| swap | p50 | p95 | swaps | failed |",
        "|---|---:|---:|---:|---:|",
        f"| load the adapter and make it current (ms) | {_f(swap['load_ms']['p50'], 0)} | "
        f"{_f(swap['load_ms']['p95'], 0)} | {swap['swaps']} | {swap['failed']} |",
        f"| whole switch: load, record, repoint (ms) | "
        f"{_f(swap['server_ms']['p50'], 0)} | {_f(swap['server_ms']['p95'], 0)} | | |",
        f"| activate request round trip under load (ms) | "
        f"{_f(swap['round_trip_ms']['p50'], 0)} | {_f(swap['round_trip_ms']['p95'], 0)} | | |",
        "",
        "| logging (DuckDB file) | p50 (ms) | p95 (ms) |",
        "|---|---:|---:|",
        f"| a turn | {_f(log['turn_ms']['p50'])} | {_f(log['turn_ms']['p95'])} |",
        f"| a feedback item | {_f(log['feedback_ms']['p50'])} | {_f(log['feedback_ms']['p95'])} |",
    ]
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data root and results")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M-Instruct]")
    ap.add_argument("--port", type=int, default=8765, help="loopback port for the server")
    ap.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    ap.add_argument("--seconds", type=float, default=60, help="how long the load lasts")
    ap.add_argument("--single", type=int, default=8, help="chats of the single client")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer length limit")
    ap.add_argument("--swap-every", type=float, default=5, help="seconds between swaps")
    ap.add_argument("--log-ops", type=int, default=300, help="turns and feedback items logged")
    ap.add_argument("--json", action="store_true", help="print results.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = args.out / "home"
    prepare_home(home, args.model)
    server = start_server(home, args.port, args.model)
    url = f"http://127.0.0.1:{args.port}"
    try:
        stream_chat(url, PROMPTS[0], 4)  # warm-up, not counted
        single = single_client(url, args.single, args.max_tokens)
        load, swap = under_load(url, args.clients, args.seconds, args.swap_every, args.max_tokens)
    finally:
        server.terminate()
        server.wait(timeout=60)
    measured = {
        "single": single,
        "load": load,
        "swap": swap,
        "logging": logging_cost(args.out, args.log_ops),
    }
    report(args, measured, table)
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
