"""A soak of the server on loopback: many streaming clients for a long time, versions
switching, one learning cycle in the middle; does any request fail, does memory grow?

It starts ``learnloop serve`` as benchmarks/serve_load.py does (the real model, a fresh
data root under ``--out``, versions v1 and v2 registered as random LoRA adapters, the
engine ``--engine``), gives it feedback to learn from through the API (12 chats, a third
rated down with a correction), then for ``--minutes`` (20):

- ``--clients`` (8) clients stream chats one after another, the answer limit cycling
  through 24, 48 and 96 tokens (the 96-token ones with ``whole_answer``, so that some
  answers run long and the batch mixes short and long ones);
- a switcher activates v1, v2, base, v1, ... every ``--swap-every`` seconds (5);
- at the middle, one short learning cycle (``POST /v1/learn``: force, SFT, no gate, at
  most ``--cycle-steps`` steps per stage), followed until it ends (its version, v3, is
  promoted only if no swap came while it trained, as the server refuses otherwise, and
  then serves until the switcher's next activation);
- the server process's resident memory (VmRSS of ``/proc/PID/status``; the trainer
  child is a process of its own, not counted) is sampled every ``--rss-every`` seconds.

A request fails on any non-200, a stream without ``[DONE]``, a chunk naming another
version than the response's header, or a transport error; the first few are listed.
Memory counts as flat when, after the first ``--warmup-minutes`` (2), the largest sample
is within 10 % of the smallest ((max - min) / min <= 10 %); the first and the last
minute's means after the warm-up show any drift.

    python -m benchmarks.serve_soak --out /tmp/soak [--minutes 20] [--clients 8]
        [--swap-every 5] [--engine auto] [--warmup-minutes 2] [--json]

Output: ``OUT/results.json``, ``OUT/rss.csv`` (seconds from the start of the load,
rss_mb), ``OUT/requests.csv`` (every chat: when sent, its limit, time to first token,
tokens, seconds, version, error), ``OUT/soak-rss.png`` (resident memory over time, the
warm-up and the cycle marked, and each request's time to first token) and a Markdown
table on stdout; the server's log is ``OUT/home/server.log``.
"""

from __future__ import annotations

import argparse
import csv
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.serve_kit import (
    PROMPTS,
    fmt,
    prepare_home,
    report,
    served_engine,
    start_server,
    stop_server,
    stream_chat,
)
from benchmarks.serve_load import (
    ENGINES,
    Cycle,
    aggregate,
    cycle_line,
    engine_name,
    load_phase,
    seed_feedback,
    swap_summary,
)

LENGTHS = (24, 48, 96)  # max_tokens, in turn; the longest with whole_answer
FLAT = 0.10  # the bound on resident memory after the warm-up
SHOWN_ERRORS = 10


def rss_mb(pid: int) -> float | None:
    """VmRSS of process ``pid`` in MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """``rss_mb(pid)`` every ``every`` seconds from ``start()`` until ``stop``: a list of
    (seconds since ``zero``, MiB)."""

    def __init__(self, pid: int, every: float, zero: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.zero = pid, every, zero
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while True:
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((time.perf_counter() - self.zero, mb))
            if self.stop.wait(self.every):
                return


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def memory(samples: list[tuple[float, float]], warmup_s: float, end_s: float) -> dict[str, Any]:
    """After the warm-up: min, max, their spread (% of min), the first and the last
    minute's mean, their drift (% of the first), and whether the spread is within FLAT."""
    after = [(t, mb) for t, mb in samples if t >= warmup_s]
    values = [mb for _, mb in after]
    low, high = (min(values), max(values)) if values else (None, None)
    spread = (high - low) / low * 100 if low and high is not None else None
    first = mean([mb for t, mb in after if t < warmup_s + 60])
    last = mean([mb for t, mb in after if t >= end_s - 60])
    drift = (last - first) / first * 100 if first and last is not None else None
    return {
        "samples_after_warmup": len(values),
        "min_mb": low,
        "max_mb": high,
        "spread_pct": spread,
        "first_minute_mean_mb": first,
        "last_minute_mean_mb": last,
        "drift_pct": drift,
        "flat": None if spread is None else spread <= FLAT * 100,
        "whole_run_max_mb": max((mb for _, mb in samples), default=None),
    }


def per_minute(results: list[dict[str, Any]], zero: float) -> list[dict[str, int]]:
    """Requests sent in each minute of the load, and how many of them failed."""
    minutes: dict[int, dict[str, int]] = {}
    for r in results:
        m = minutes.setdefault(int((r["sent"] - zero) // 60), {"requests": 0, "failed": 0})
        m["requests"] += 1
        m["failed"] += 0 if r["ok"] else 1
    return [{"minute": k, **minutes[k]} for k in sorted(minutes)]


# -- report ------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    config, load, swap, rss = results["config"], results["load"], results["swap"], results["rss"]
    verdict = {True: "flat within 10 %", False: "NOT flat within 10 %", None: "no samples"}
    rows = [
        f"| soak: {fmt(config['minutes'], 1)} min, {config['clients']} clients, engine: "
        f"{engine_name(results)} | |",
        "|---|---:|",
        f"| requests / failed | {load['requests']} / {load['errors']} |",
        f"| time to first token p50 / p95 (s) | {fmt(load['ttft_s']['p50'])} / "
        f"{fmt(load['ttft_s']['p95'])} |",
        f"| tokens/s per stream p50 | {fmt(load['tokens_per_s_per_stream']['p50'], 1)} |",
        f"| tokens/s all streams | {fmt(load['aggregate_tokens_per_s'], 1)} |",
        f"| swaps / failed | {swap['swaps']} / {swap['failed']} |",
        f"| server RSS after warm-up min / max (MiB) | {fmt(rss['min_mb'], 0)} / "
        f"{fmt(rss['max_mb'], 0)} |",
        f"| (max - min) / min | {fmt(rss['spread_pct'], 1)} % |",
        f"| first / last minute's mean (MiB) | {fmt(rss['first_minute_mean_mb'], 0)} / "
        f"{fmt(rss['last_minute_mean_mb'], 0)} ({fmt(rss['drift_pct'], 1)} %) |",
        "",
        f"memory: {verdict[rss['flat']]} after a {fmt(config['warmup_minutes'], 1)}-minute "
        f"warm-up ({rss['samples_after_warmup']} samples, every {fmt(config['rss_every'], 0)} s)",
        cycle_line(results["cycle"]),
        f"server still running at the end: {results['server_alive']}",
    ]
    if results["errors"]:
        rows += ["", f"first failed requests (of {load['errors']}):"]
        rows += [f"- at {fmt(e['at_s'], 1)} s: {e['error']}" for e in results["errors"]]
    if swap["errors"]:
        rows += ["", "failed swaps:", *[f"- {e}" for e in swap["errors"]]]
    return "\n".join(rows)


def save_rss(out: Path, samples: list[tuple[float, float]]) -> None:
    with (out / "rss.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time_s", "rss_mb"])
        writer.writerows([(f"{t:.1f}", f"{mb:.1f}") for t, mb in samples])


REQUEST_FIELDS = ("sent_s", "client", "limit", "ok", "ttft", "tokens", "tokens_per_s", "seconds")


def save_requests(out: Path, results: list[dict[str, Any]], zero: float) -> None:
    """``OUT/requests.csv``: every chat of the load, in the order sent."""
    with (out / "requests.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*REQUEST_FIELDS, "version", "error"])
        for r in sorted(results, key=lambda r: r["sent"]):
            row = {**r, "sent_s": round(r["sent"] - zero, 2)}
            cells = [row.get(k) for k in (*REQUEST_FIELDS, "version")]
            writer.writerow([*cells, r.get("error") or ""])


def plot(
    out: Path,
    results: dict[str, Any],
    samples: list[tuple[float, float]],
    chats: list[dict[str, Any]],
    zero: float,
) -> None:
    """``OUT/soak-rss.png``: the server's resident memory over the load's minutes, the
    warm-up shaded, the cycle's span marked, the 10 % bound over the minimum after the
    warm-up dashed, the end of the load dotted (clients stop sending; answers under way
    still finish); below, each completed chat's time to first token and tokens/s at the
    time it was sent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, rss, cycle = results["config"], results["rss"], results["cycle"]
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]}
    )
    top.plot([t / 60 for t, _ in samples], [mb for _, mb in samples], marker=".", lw=1)
    for ax in (top, middle, bottom):
        named = ax is top  # the legend's labels, once

        def legend(text: str, named: bool = named) -> dict[str, str]:
            return {"label": text} if named else {}

        ax.axvspan(0, config["warmup_minutes"], color="grey", alpha=0.2, lw=0, **legend("warm-up"))
        if cycle.get("started_s") is not None:
            end = cycle["ended_s"] if cycle.get("ended_s") is not None else config["minutes"] * 60
            span = (cycle["started_s"] / 60, end / 60)
            ax.axvspan(*span, color="tab:orange", alpha=0.25, lw=0, **legend("learning cycle"))
        ax.axvline(config["minutes"], color="black", ls=":", lw=1, **legend("end of the load"))
    if rss["min_mb"] is not None:
        bound = rss["min_mb"] * (1 + FLAT)
        top.axhline(bound, color="tab:red", ls="--", lw=1, label="min after warm-up + 10 %")
    top.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=4, fontsize="small", frameon=False)
    top.set_ylabel("server RSS (MiB)")
    verdict = {True: "flat within 10 %", False: "not flat within 10 %", None: "no samples"}
    fig.suptitle(
        f"serve soak: {results['load']['requests']} requests, {results['load']['errors']} "
        f"failed, {results['swap']['swaps']} swaps; memory {verdict[rss['flat']]}"
    )
    for ax, key, label in ((middle, "ttft", "first token (s)"), (bottom, "tokens_per_s", "tok/s")):
        shown = [(r["sent"] - zero, r[key]) for r in chats if r["ok"] and r.get(key) is not None]
        ax.scatter([t / 60 for t, _ in shown], [v for _, v in shown], s=4)
        ax.set_ylabel(label)
    bottom.set_xlabel("minutes from the start of the load (chats: when sent)")
    fig.tight_layout()
    fig.savefig(out / "soak-rss.png", dpi=110)
    plt.close(fig)


# -- run ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data root and results")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M-Instruct]")
    ap.add_argument("--engine", default="auto", choices=ENGINES, help="serve --engine")
    ap.add_argument("--port", type=int, default=8775, help="loopback port for the server")
    ap.add_argument("--minutes", type=float, default=20, help="how long the load lasts")
    ap.add_argument("--clients", type=int, default=8, help="concurrent streaming clients")
    ap.add_argument("--swap-every", type=float, default=5, help="seconds between swaps")
    ap.add_argument(
        "--warmup-minutes", type=float, default=2, help="left out of the memory figures"
    )
    ap.add_argument("--rss-every", type=float, default=5, help="seconds between RSS samples")
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
    seconds = args.minutes * 60
    measured: dict[str, Any] = {"engine": served_engine(home)}

    def chat(i: int) -> dict[str, Any]:
        n = i // len(PROMPTS)  # the lengths turn against the prompts
        length = LENGTHS[n % len(LENGTHS)]
        whole = {"whole_answer": True} if length == max(LENGTHS) else {}
        result = stream_chat(url, PROMPTS[i % len(PROMPTS)], length, **whole)
        if not result["ok"]:
            time.sleep(1)  # a server that is gone fails at once: not thousands of times
        return {**result, "limit": length}

    try:
        stream_chat(url, PROMPTS[0], 4)  # warm-up, not counted
        measured["feedback"] = seed_feedback(url)
        zero = time.perf_counter()
        sampler = Sampler(server.pid, args.rss_every, zero)
        cycle = Cycle(url, seconds / 2, args.cycle_steps)
        sampler.start()
        cycle.start()
        results, swaps, started, ended = load_phase(
            url, args.clients, seconds, args.swap_every, chat, ("v1", "v2", "base")
        )
        sampler.stop.set()
        sampler.join()
        cycle.join()  # a cycle that outlasts the load is waited for (CYCLE_LIMIT_S at most)
        measured["server_alive"] = server.poll() is None
    finally:
        stop_server(server)

    samples = sampler.samples
    load = aggregate(results, ended - started)
    load["versions_served"] = sorted({str(r.get("version")) for r in results if r["ok"]})
    load["by_limit"] = {
        str(n): aggregate([r for r in results if r["limit"] == n], ended - started) for n in LENGTHS
    }
    load["per_minute"] = per_minute(results, zero)
    failed = sorted((r for r in results if not r["ok"]), key=lambda r: r["sent"])
    measured |= {
        "load": load,
        "errors": [
            {"at_s": r["sent"] - zero, "client": r["client"], "error": r.get("error")}
            for r in failed[:SHOWN_ERRORS]
        ],
        "swap": swap_summary(swaps),
        "cycle": {
            **cycle.outcome,
            "started_s": None if cycle.started is None else cycle.started - zero,
            "ended_s": None if cycle.ended is None else cycle.ended - zero,
        },
        "rss": {
            **memory(samples, args.warmup_minutes * 60, ended - zero),
            "samples": [[round(t, 1), round(mb, 1)] for t, mb in samples],
        },
    }
    save_rss(args.out, samples)
    save_requests(args.out, results, zero)
    plot(args.out, {"config": vars(args), **measured}, samples, results, zero)
    report(args, measured, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
