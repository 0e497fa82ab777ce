"""The server under load, on loopback: what the README's serving figures come from.

It starts ``learnloop serve`` as a separate process (the real model, a fresh data root
under ``--out``, the engine ``--engine``: auto, llama.cpp, transformers or
transformers-bf16) with two versions registered beforehand (LoRA adapters with random
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

With ``--cycle``, a learning cycle runs during step 2: before it, 12 chats get feedback
through the API (a third rated down with a short correction, the rest up); at a third of
``--seconds``, ``POST /v1/learn`` starts a short cycle (``force``, SFT, no gate, at most
``--cycle-steps`` optimizer steps), followed by ``GET /v1/learn/{run}`` until it ends (the
benchmark waits for it after the load). Each chat counts as "during the cycle" when its
request was sent while the cycle ran, else "without a cycle"; the two are reported side
by side, with the cycle's duration and outcome. Without the gate the cycle promotes its
version (v3) unless the active version changed while it trained, which the switcher's
activations usually do (the server then says "not promoted: v2 was made active while it
trained"); a promoted v3 serves until the switcher's next activation, and as a request
stays pinned to the version it started with, the version check holds across it too.

    python -m benchmarks.serve_load --out /tmp/serve-load [--engine auto] [--cycle] [--json]

Output: ``OUT/results.json`` and a Markdown table on stdout (the server's log is
``OUT/home/server.log``).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_kit import (
    PROMPTS,
    fmt,
    prepare_home,
    report,
    served_engine,
    start_server,
    stop_server,
    stream_chat,
    summary,
)

# what a "down" of seed_feedback says instead, one per prompt of PROMPTS
CORRECTIONS = [
    "Put the one thing you ask for in the first sentence.",
    "Ash, after the colour of its fur.",
    "A loan to a company or a state that pays interest and is repaid at a set date.",
    "Walk to a nearby hill and have a picnic at the top.",
]
# the learning cycle of --cycle (and of the soak): learn even without new feedback, SFT
# only, promote without comparing; the steps cap comes with it (--cycle-steps)
CYCLE_SETTINGS: dict[str, Any] = {"force": True, "method": "sft", "gate": False}
CYCLE_LIMIT_S = 900.0  # a cycle still running after this is cancelled
POLL_S = 1.0  # between two GET /v1/learn/{run} of a running cycle
SWITCHED = ("v1", "v2")


# -- measuring ---------------------------------------------------------------------------


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


def load_phase(
    url: str,
    clients: int,
    seconds: float,
    swap_every: float,
    chat: Callable[[int], dict[str, Any]],
    versions: Sequence[str] = SWITCHED,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float, float]:
    """``clients`` threads, each calling ``chat(i)`` (i = 0, 1, 2, ... per client, offset by
    the client's number) until ``seconds`` are up, while a switcher activates
    ``versions`` in turn every ``swap_every`` seconds. Returns the chats' results (each
    with its ``client``), the swaps, and when the phase started and ended
    (``time.perf_counter``)."""
    results: list[dict[str, Any]] = []
    swaps: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    stop = threading.Event()

    def client(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            results.append({**chat(i), "client": n})
            i += 1

    def switcher() -> None:
        n = 0
        while not stop.wait(swap_every):
            swaps.append(activate(url, versions[n % len(versions)]))
            n += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    swapper = threading.Thread(target=switcher)
    swapper.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended = time.perf_counter()
    stop.set()
    swapper.join()
    return results, swaps, started, ended


def activate(url: str, version: str) -> dict[str, Any]:
    """``POST /v1/versions/{version}/activate``: the server's times and the round trip."""
    sent = time.perf_counter()
    swap: dict[str, Any] = {"version": version, "sent": sent}
    try:
        r = httpx.post(f"{url}/v1/versions/{version}/activate", json={}, timeout=60)
        answer = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        return {**swap, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    swap["round_trip_s"] = time.perf_counter() - sent
    if r.status_code != 200:
        return {**swap, "ok": False, "error": f"HTTP {r.status_code}: {r.text[:200]}"}
    return {
        **swap,
        "ok": True,
        "server_s": answer.get("seconds", float("nan")),
        "load_s": answer.get("load_seconds", float("nan")),
    }


def swap_summary(swaps: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in swaps if s["ok"]]
    return {
        "swaps": len(swaps),
        "failed": len(swaps) - len(good),
        "server_ms": summary([s["server_s"] * 1000 for s in good]),
        "load_ms": summary([s["load_s"] * 1000 for s in good]),
        "round_trip_ms": summary([s["round_trip_s"] * 1000 for s in good]),
        "errors": [f"{s['version']}: {s['error']}" for s in swaps if not s["ok"]][:10],
    }


def measured_load(
    url: str, clients: int, seconds: float, swap_every: float, max_tokens: int
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Step 2: the load's aggregate, the swaps' summary, and (for the cycle's split) the
    raw results with the phase's start and end."""

    def chat(i: int) -> dict[str, Any]:
        return stream_chat(url, PROMPTS[i % len(PROMPTS)], max_tokens)

    results, swaps, started, ended = load_phase(url, clients, seconds, swap_every, chat)
    load = aggregate(results, ended - started)
    load["versions_served"] = sorted({str(r.get("version")) for r in results if r["ok"]})
    return load, swap_summary(swaps), (results, started, ended)


# -- a learning cycle through the API ----------------------------------------------------


def seed_feedback(url: str, chats: int = 12, max_tokens: int = 24) -> dict[str, Any]:
    """Feedback for a cycle to learn from, given as a user would: ``chats`` non-streamed
    chats (``POST /v1/chat/completions``), then ``POST /v1/feedback`` on each turn: a
    third rated down with a short correction, the rest up."""
    counts = {"chats": chats, "up": 0, "down": 0}
    for i in range(chats):
        prompt = PROMPTS[i % len(PROMPTS)]
        body = {
            "model": "learnloop",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
        }
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        rating = "down" if i % 3 == 0 else "up"
        feedback: dict[str, Any] = {"turn_id": r.json()["turn_id"], "rating": rating}
        if rating == "down":
            feedback["correction"] = CORRECTIONS[i % len(CORRECTIONS)]
        httpx.post(url + "/v1/feedback", json=feedback, timeout=60).raise_for_status()
        counts[rating] += 1
    return counts


class Cycle(threading.Thread):
    """One learning cycle through the API: ``delay`` seconds after ``start()``,
    ``POST /v1/learn`` with CYCLE_SETTINGS and ``max_steps``, then ``GET /v1/learn/{run}``
    every POLL_S seconds until the run is no longer running (cancelled after
    CYCLE_LIMIT_S). ``started`` / ``ended``: ``time.perf_counter`` when the request went
    and when the poll saw the end (None before); ``outcome``: the run's status, version,
    promotion, steps, error, and ``seconds`` (ended - started)."""

    def __init__(self, url: str, delay: float, max_steps: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.delay = delay
        self.settings = {**CYCLE_SETTINGS, "max_steps": max_steps}
        self.started: float | None = None
        self.ended: float | None = None
        self.outcome: dict[str, Any] = {"status": "not started", "settings": self.settings}

    def covers(self, when: float) -> bool:
        """Whether the cycle ran at ``when`` (a ``time.perf_counter`` time)."""
        if self.started is None:
            return False
        return self.started <= when < (self.ended if self.ended is not None else float("inf"))

    def run(self) -> None:
        time.sleep(self.delay)
        self.started = time.perf_counter()
        try:
            r = httpx.post(self.url + "/v1/learn", json=self.settings, timeout=120)
            if r.status_code != 202:
                self._end({"status": "refused", "error": f"HTTP {r.status_code}: {r.text[:300]}"})
                return
            self._end(self._follow(int(r.json()["run"])))
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._end({"status": "lost", "error": f"{type(exc).__name__}: {exc}"})

    def _follow(self, run: int) -> dict[str, Any]:
        assert self.started is not None
        deadline, cancelled = self.started + CYCLE_LIMIT_S, False
        while True:
            try:
                view = httpx.get(f"{self.url}/v1/learn/{run}", timeout=60).json()
            except (httpx.HTTPError, ValueError):
                view = {"status": "running"}  # a slow answer under load: ask again
            if view.get("status") != "running":
                return {"run": run, **view, "cancelled_by_benchmark": cancelled}
            if not cancelled and time.perf_counter() > deadline:
                httpx.post(f"{self.url}/v1/learn/{run}/cancel", timeout=60)
                cancelled = True
            time.sleep(POLL_S)

    def _end(self, view: dict[str, Any]) -> None:
        self.ended = time.perf_counter()
        assert self.started is not None
        keep = ("run", "status", "stage", "step", "total", "loss", "version", "promoted")
        self.outcome = {
            **{k: view.get(k) for k in keep},
            "error": view.get("error"),
            "summary": view.get("summary"),
            "cancelled_by_benchmark": view.get("cancelled_by_benchmark", False),
            "seconds": self.ended - self.started,
            "settings": self.settings,
        }


def cycle_split(
    results: list[dict[str, Any]], cycle: Cycle, started: float, ended: float
) -> dict[str, Any]:
    """The load's chats sent while ``cycle`` ran against the others, with the cycle's
    outcome and when it started and ended, in seconds from the load's start (an end
    after the load's is past ``seconds``)."""
    overlap = 0.0
    if cycle.started is not None:
        until = cycle.ended if cycle.ended is not None else ended
        overlap = max(0.0, min(until, ended) - max(cycle.started, started))
    during = [r for r in results if cycle.covers(r["sent"])]
    without = [r for r in results if not cycle.covers(r["sent"])]
    parts = {"during": aggregate(during, 0), "without": aggregate(without, 0)}
    for part in parts.values():  # tokens over time means little for a split by send time
        del part["aggregate_tokens_per_s"], part["seconds"]
    return {
        **cycle.outcome,
        "started_s": None if cycle.started is None else cycle.started - started,
        "ended_s": None if cycle.ended is None else cycle.ended - started,
        "load_seconds_with_cycle": overlap,
        **parts,
    }


def cycle_line(cycle: dict[str, Any]) -> str:
    """The cycle in one line: run, outcome, version, steps, duration, when."""
    if cycle["status"] in ("not started", "refused", "lost"):
        return f"learning cycle: {cycle['status']} {cycle.get('error') or ''}".rstrip()
    outcome = cycle["status"]
    if cycle.get("version"):
        promoted = {True: " promoted", False: " not promoted"}.get(cycle["promoted"], "")
        outcome += f", {cycle['version']}{promoted}"
    if cycle.get("error"):
        outcome += f" ({cycle['error']})"
    steps = cycle["settings"].get("max_steps")
    gate = "on" if cycle["settings"].get("gate", True) else "off"
    return (
        f"learning cycle: run {cycle.get('run')} ({cycle['settings'].get('method')}, at most "
        f"{steps} steps per stage, gate {gate}): {outcome}; "
        f"{fmt(cycle['seconds'], 1)} s, from {fmt(cycle['started_s'], 1)} s to "
        f"{fmt(cycle['ended_s'], 1)} s of the load"
    )


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


def engine_name(results: dict[str, Any]) -> str:
    """The engine as the server named it, with the flag it was given."""
    flag = results["config"].get("engine", "auto")
    served = results.get("engine")
    return f"{served} (--engine {flag})" if served else f"--engine {flag}"


def table(results: dict[str, Any]) -> str:
    single, load, swap, log = (
        results["single"],
        results["load"],
        results["swap"],
        results["logging"],
    )
    rows = [
        f"| engine: {engine_name(results)} | single client | "
        f"{results['config']['clients']} concurrent streams |",
        "|---|---:|---:|",
        f"| requests completed / errors | {single['completed']} / {single['errors']} | "
        f"{load['completed']} / {load['errors']} |",
        f"| time to first token p50 / p95 (s) | {fmt(single['ttft_s']['p50'])} / "
        f"{fmt(single['ttft_s']['p95'])} | {fmt(load['ttft_s']['p50'])} / "
        f"{fmt(load['ttft_s']['p95'])} |",
        f"| tokens/s per stream p50 | {fmt(single['tokens_per_s_per_stream']['p50'], 1)} | "
        f"{fmt(load['tokens_per_s_per_stream']['p50'], 1)} |",
        f"| tokens/s all streams | {fmt(single['aggregate_tokens_per_s'], 1)} | "
        f"{fmt(load['aggregate_tokens_per_s'], 1)} |",
    ]
    cycle = results.get("cycle")
    if cycle:
        without, during = cycle["without"], cycle["during"]
        rows += [
            "",
            f"| {results['config']['clients']} concurrent streams | without a cycle | "
            "during the cycle |",
            "|---|---:|---:|",
            f"| requests completed / errors | {without['completed']} / {without['errors']} | "
            f"{during['completed']} / {during['errors']} |",
            f"| time to first token p50 / p95 (s) | {fmt(without['ttft_s']['p50'])} / "
            f"{fmt(without['ttft_s']['p95'])} | {fmt(during['ttft_s']['p50'])} / "
            f"{fmt(during['ttft_s']['p95'])} |",
            f"| tokens/s per stream p50 | "
            f"{fmt(without['tokens_per_s_per_stream']['p50'], 1)} | "
            f"{fmt(during['tokens_per_s_per_stream']['p50'], 1)} |",
            "",
            cycle_line(cycle),
        ]
    rows += [
        "",
        "| swap | p50 | p95 | swaps | failed |",
        "|---|---:|---:|---:|---:|",
        f"| load the adapter and make it current (ms) | {fmt(swap['load_ms']['p50'], 0)} | "
        f"{fmt(swap['load_ms']['p95'], 0)} | {swap['swaps']} | {swap['failed']} |",
        f"| whole switch: load, record, repoint (ms) | "
        f"{fmt(swap['server_ms']['p50'], 0)} | {fmt(swap['server_ms']['p95'], 0)} | | |",
        f"| activate request round trip under load (ms) | "
        f"{fmt(swap['round_trip_ms']['p50'], 0)} | {fmt(swap['round_trip_ms']['p95'], 0)} | | |",
        "",
        "| logging (DuckDB file) | p50 (ms) | p95 (ms) |",
        "|---|---:|---:|",
        f"| a turn | {fmt(log['turn_ms']['p50'])} | {fmt(log['turn_ms']['p95'])} |",
        f"| a feedback item | {fmt(log['feedback_ms']['p50'])} | "
        f"{fmt(log['feedback_ms']['p95'])} |",
    ]
    return "\n".join(rows)


ENGINES = ("auto", "llama.cpp", "transformers", "transformers-bf16")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data root and results")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M-Instruct]")
    ap.add_argument("--engine", default="auto", choices=ENGINES, help="serve --engine")
    ap.add_argument("--port", type=int, default=8765, help="loopback port for the server")
    ap.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    ap.add_argument("--seconds", type=float, default=60, help="how long the load lasts")
    ap.add_argument("--single", type=int, default=8, help="chats of the single client")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer length limit")
    ap.add_argument("--swap-every", type=float, default=5, help="seconds between swaps")
    ap.add_argument("--log-ops", type=int, default=300, help="turns and feedback items logged")
    ap.add_argument(
        "--cycle", action="store_true", help="run a learning cycle from a third of the load on"
    )
    ap.add_argument("--cycle-steps", type=int, default=8, help="the cycle's max_steps")
    ap.add_argument("--json", action="store_true", help="print results.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = args.out / "home"
    prepare_home(home, args.model)
    server = start_server(home, args.port, args.model, "--engine", args.engine)
    url = f"http://127.0.0.1:{args.port}"
    measured: dict[str, Any] = {"engine": served_engine(home)}
    try:
        stream_chat(url, PROMPTS[0], 4)  # warm-up, not counted
        measured["single"] = single_client(url, args.single, args.max_tokens)
        cycle = None
        if args.cycle:
            measured["feedback"] = seed_feedback(url)
            cycle = Cycle(url, args.seconds / 3, args.cycle_steps)
            cycle.start()
        load, swap, (results, started, ended) = measured_load(
            url, args.clients, args.seconds, args.swap_every, args.max_tokens
        )
        if cycle is not None:
            cycle.join()  # its outcome, before the server stops
            measured["cycle"] = cycle_split(results, cycle, started, ended)
        measured["load"], measured["swap"] = load, swap
    finally:
        stop_server(server)
    measured["logging"] = logging_cost(args.out, args.log_ops)
    report(args, measured, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
