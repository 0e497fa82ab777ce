"""Generation speed side by side, in one interleaved run, on loopback, with a learned
version active everywhere (v1: a LoRA r16 on q/k/v/o, unmerged; the same adapter files in
every engine): bare transformers and bare llama.cpp in this process against
``learnloop serve`` with each of its engines (one server per engine, each a separate
process on its own data root ``OUT/home-<engine>`` and port ``--port`` + i, all started
before measuring).

For each number of concurrent clients (``--clients``, 1 2 4 8) and each answer length
(``--lengths``, 48 128), each engine in turn, never two at once:

- bare transformers ``generate`` fp32, the PEFT adapter unmerged, on a left-padded batch
  of that many prompts at once (the most plain transformers does for concurrent requests:
  a static batch), greedy;
- bare llama.cpp (benchmarks/llama_bare.py): the model's GGUF requantised to F16
  (``--llama-weights``) as ``learnloop serve --engine llama.cpp`` runs it, the adapter
  converted to a GGUF LoRA, one sequence per client in one context, its own greedy decode
  loop; skipped when llama-cpp-python is not installed;
- ``learnloop serve --engine E`` for E in llama.cpp (same weights and LoRA as the bare
  one; skipped without llama-cpp-python), transformers (fp32) and transformers-bf16: that
  many streaming clients, each sending ``--rounds`` chats one after another, greedy,
  ``whole_answer`` (no first-paragraph stop).

Prompts are user messages of about 40 tokens asking for a long text, so answers run to
the token limit. Reported per engine and cell: aggregate tokens/s (completion tokens of
all streams / wall time), tokens/s per stream (p50; decode: from the first token to the
last), time to first token p50 / p95 (bare: when each sequence's first token is sampled),
failed requests; peak resident memory of each server process and of this process (both
bare engines; with what loading and warming up each added). Then the ratios the issue's
goals use, from the same run, per server engine: aggregate tokens/s at the most clients
over one client and first token p95 at the most clients (shortest answers), and one
client's tokens/s per stream over bare transformers' and bare llama.cpp's (longest
answers).

    python -m benchmarks.serve_speed --out /tmp/serve-speed [--json]

Output: ``OUT/results.json`` and Markdown tables on stdout. Give the machine to it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import llama_bare
from benchmarks.serve_kit import (
    fmt,
    prepare_home,
    report,
    start_server,
    stream_chat,
    summary,
)
from learnloop.agent.config import ENGINES

GREEDY = {"temperature": 0, "whole_answer": True}
SERVE_ENGINES = ("llama.cpp", "transformers", "transformers-bf16")
BARE_TRANSFORMERS, BARE_LLAMA = "bare-transformers", "bare-llama.cpp"
TOPICS = ["a lighthouse keeper", "a small bakery", "a river journey", "an old clock"]
NO_LLAMA = "llama-cpp-python is not installed (`make setup` builds the llama extra)"
NO_VLLM = "vLLM is not installed (a CUDA machine: `pip install vllm`)"

Cell = dict[str, Any]
Runner = Callable[[int, int], Cell]  # (clients, answer tokens) -> the cell's figures


def engine_names(weights: str, engines: list[str]) -> dict[str, str]:
    """Each engine's key in results.json -> its name in the tables, in measuring order."""
    return {
        BARE_TRANSFORMERS: "bare transformers generate fp32 (static batch)",
        BARE_LLAMA: f"bare llama.cpp {weights} (batched sequences)",
        **{f"serve-{e}": f"learnloop serve --engine {e}" for e in engines},
    }


def prompt(n: int) -> str:
    """About 40 tokens, asking for more text than any answer length measured."""
    topic = TOPICS[n % len(TOPICS)]
    return (
        f"Write a long and detailed story about {topic}, with names, places, weather, "
        "what people say to each other and how the day ends. Use many sentences and do "
        "not stop early."
    )


# -- set-up ------------------------------------------------------------------------------


def activate_v1(home: Path) -> None:
    os.environ["LEARNLOOP_HOME"] = str(home)
    from learnloop.storage.store import Store

    with Store() as store:
        if store.active_version() != "v1":
            store.activate("v1", who="serve_speed", why="a learned version serves")


def prepare_homes(out: Path, model_spec: str | None, engines: list[str]) -> dict[str, Path]:
    """A data root per server engine with v1 active, the adapters the first one's files."""
    homes: dict[str, Path] = {}
    for engine in engines:
        home = out / f"home-{engine}"
        if homes:  # prepare_home keeps adapter folders it finds: the same files everywhere
            first = next(iter(homes.values()))
            shutil.copytree(first / "adapters", home / "adapters", dirs_exist_ok=True)
        prepare_home(home, model_spec)
        activate_v1(home)
        homes[engine] = home
    return homes


@contextlib.contextmanager
def servers_running(
    homes: dict[str, Path],
    args: argparse.Namespace,
    skipped: dict[str, str],
    peaks: dict[str, float | None],
) -> Iterator[dict[str, str]]:
    """``learnloop serve --engine E`` on each engine's data root, warmed up, until the block
    ends: key -> url. An engine that cannot run or start goes to ``skipped`` with the
    reason; each server's peak resident memory (MB) goes to ``peaks`` as it stops."""
    servers: dict[str, subprocess.Popen[bytes]] = {}
    urls: dict[str, str] = {}
    try:
        for i, (engine, home) in enumerate(homes.items()):
            key = f"serve-{engine}"
            if engine == "llama.cpp" and not llama_bare.available():
                skipped[key] = NO_LLAMA
                continue
            if engine == "vllm" and importlib.util.find_spec("vllm") is None:
                skipped[key] = NO_VLLM
                continue
            flags = ["--engine", engine, "--llama-weights", args.llama_weights]
            try:
                servers[key] = start_server(home, args.port + i, args.model, *flags)
            except SystemExit as exc:  # it exited or never answered: its log says why
                skipped[key] = f"{exc} ({home / 'server.log'})"
                continue
            urls[key] = f"http://127.0.0.1:{args.port + i}"
            stream_chat(urls[key], prompt(0), 4, **GREEDY)  # warm-up, not counted
        yield urls
    finally:
        for key, server in servers.items():
            peaks[key] = peak_rss_mb(server.pid)
            server.terminate()
        for server in servers.values():
            server.wait(timeout=60)


# -- bare transformers -------------------------------------------------------------------


def load_bare(adapter: Path, model_path: str) -> tuple[Any, Any]:
    """The model with the adapter, as the server's transformers engine loads it (fp32 on
    CPU, unmerged), and the tokenizer padding on the left."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from learnloop.agent.backend import load_tokenizer

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(adapter), adapter_name=adapter.name)
    tuned.eval()
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "left"
    return tuned, tokenizer


def chat_texts(tokenizer: Any, clients: int) -> list[str]:
    """The clients' prompts, rendered by the chat template as the server renders them."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt(i)}], tokenize=False, add_generation_prompt=True
        )
        for i in range(clients)
    ]


def bare_cell(model: Any, tokenizer: Any, clients: int, max_tokens: int) -> Cell:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    texts = chat_texts(tokenizer, clients)
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    first: list[float] = []

    class FirstToken(LogitsProcessor):  # called once per token: the first call is the first
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if not first:
                first.append(time.perf_counter())
            return scores

    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([FirstToken()]),
        )
    wall = time.perf_counter() - started
    new = out[:, inputs["input_ids"].shape[1] :]
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    tokens = [int(sum(1 for t in row.tolist() if t not in ends)) for row in new]
    ttft = first[0] - started
    decode = wall - ttft
    return {
        "requests": clients,
        "failed": 0,
        "aggregate_tokens_per_s": sum(tokens) / wall,
        "tokens_per_s_per_stream": summary([(n - 1) / decode for n in tokens if n > 1]),
        "ttft_s": summary([ttft] * clients),
        "prompt_tokens": int(inputs["attention_mask"].sum(dim=1).max()),
    }


# -- bare llama.cpp ----------------------------------------------------------------------


def llama_cell(engine: Any, tokenizer: Any, clients: int, max_tokens: int) -> Cell:
    cell: Cell = engine.generate(chat_texts(tokenizer, clients), max_tokens)
    cell.pop("answers")
    return cell


# -- learnloop serve ---------------------------------------------------------------------


def serve_cell(url: str, rounds: int, clients: int, max_tokens: int) -> Cell:
    results: list[dict[str, Any]] = []

    def client(n: int) -> None:
        for r in range(rounds):
            results.append(stream_chat(url, prompt(n + r * clients), max_tokens, **GREEDY))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    good = [r for r in results if r["ok"]]
    return {
        "requests": len(results),
        "failed": len(results) - len(good),
        "aggregate_tokens_per_s": sum(r["tokens"] for r in good) / wall,
        "tokens_per_s_per_stream": summary(
            [r["tokens_per_s"] for r in good if r["tokens_per_s"] is not None]
        ),
        "ttft_s": summary([r["ttft"] for r in good if r["ttft"] is not None]),
    }


# -- memory ------------------------------------------------------------------------------


def status_mb(pid: int | str, field: str) -> float | None:
    """A field of a process's /proc status in MB: VmHWM (peak resident), VmRSS (now)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith(f"{field}:")), None)
    return None if line is None else int(line.split()[1]) / 1024


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (Linux's VmHWM), in MB."""
    return status_mb(pid, "VmHWM")


def rss_added_mb(load: Callable[[], Any], warm_up: Callable[[Any], Any]) -> tuple[Any, float]:
    """``load()``'s result, warmed up, and the resident memory this process grew by."""
    before = status_mb("self", "VmRSS") or 0.0
    loaded = load()
    warm_up(loaded)
    return loaded, (status_mb("self", "VmRSS") or 0.0) - before


# -- the run -----------------------------------------------------------------------------


def bare_runners(
    args: argparse.Namespace, adapter: Path, added_by: dict[str, float], skipped: dict[str, str]
) -> dict[str, Runner]:
    """The bare engines, loaded and warmed up; what each added to this process's resident
    memory (MB) goes to ``added_by``, an engine that cannot run to ``skipped``."""
    from learnloop.learning.models import resolve_model

    model = resolve_model(args.model)
    (tuned, tokenizer), added = rss_added_mb(
        lambda: load_bare(adapter, model.path), lambda m: bare_cell(m[0], m[1], 1, 4)
    )
    added_by[BARE_TRANSFORMERS] = added
    runners: dict[str, Runner] = {BARE_TRANSFORMERS: functools.partial(bare_cell, tuned, tokenizer)}
    if not llama_bare.available():
        skipped[BARE_LLAMA] = NO_LLAMA
    elif model.gguf is None:
        skipped[BARE_LLAMA] = f"{args.model} is not a GGUF model"
    else:
        seqs, gguf = max(args.clients), Path(model.gguf)
        engine, added = rss_added_mb(
            lambda: llama_bare.load(gguf, model.path, adapter, args.out, args.llama_weights, seqs),
            lambda e: llama_cell(e, tokenizer, 1, 4),
        )
        added_by[BARE_LLAMA] = added
        runners[BARE_LLAMA] = functools.partial(llama_cell, engine, tokenizer)
    return runners


def measure(args: argparse.Namespace, runners: dict[str, Runner]) -> list[Cell]:
    """Every (clients, answer tokens) cell, each engine in turn within it."""
    cells = []
    for clients in args.clients:
        for max_tokens in args.lengths:
            print(f"{clients} clients, {max_tokens} tokens", flush=True)
            cell: Cell = {"clients": clients, "max_tokens": max_tokens, "engines": list(runners)}
            for key, run in runners.items():
                cell[key] = run(clients, max_tokens)
            cells.append(cell)
    return cells


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(cells: list[Cell], clients: list[int], lengths: list[int]) -> dict[str, Any]:
    """Per server engine, the issue's goals: aggregate tokens/s at the most clients over
    one (shortest answers), first token p95 at the most clients (shortest answers), one
    client's tokens/s per stream over the bare engines' (longest answers)."""
    one, most, short, long = min(clients), max(clients), min(lengths), max(lengths)
    at = {(c["clients"], c["max_tokens"]): c for c in cells}

    def get(key: str, c: int, n: int, figure: str, stat: str | None = None) -> float | None:
        value = at.get((c, n), {}).get(key, {}).get(figure)
        return value if stat is None or value is None else value[stat]

    def per_stream(key: str) -> float | None:
        return get(key, one, long, "tokens_per_s_per_stream", "p50")

    measured = cells[0]["engines"] if cells else []
    served = [key.removeprefix("serve-") for key in measured if key.startswith("serve-")]
    by_engine = {
        f"serve-{e}": {
            "scaling": _ratio(
                get(f"serve-{e}", most, short, "aggregate_tokens_per_s"),
                get(f"serve-{e}", one, short, "aggregate_tokens_per_s"),
            ),
            "ttft_p95_s": get(f"serve-{e}", most, short, "ttft_s", "p95"),
            "per_stream_vs_bare_transformers": _ratio(
                per_stream(f"serve-{e}"), per_stream(BARE_TRANSFORMERS)
            ),
            "per_stream_vs_bare_llama": _ratio(per_stream(f"serve-{e}"), per_stream(BARE_LLAMA)),
        }
        for e in served
    }
    return {"one": one, "most": most, "short": short, "long": long, "engines": by_engine}


# -- report ------------------------------------------------------------------------------


def cells_table(results: dict[str, Any]) -> list[str]:
    names = results["engine_names"]
    lines = [
        "| engine | clients | answer tokens | tokens/s all streams | tokens/s per stream "
        "| first token p50 / p95 (s) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        for key in cell["engines"]:
            m = cell[key]
            lines.append(
                f"| {names[key]} | {cell['clients']} | {cell['max_tokens']} | "
                f"{fmt(m['aggregate_tokens_per_s'], 1)} | "
                f"{fmt(m['tokens_per_s_per_stream']['p50'], 1)} | "
                f"{fmt(m['ttft_s']['p50'], 2)} / {fmt(m['ttft_s']['p95'], 2)} | {m['failed']} |"
            )
    return lines


def ratios_table(results: dict[str, Any]) -> list[str]:
    r, names = results["ratios"], results["engine_names"]
    lines = [
        f"| engine | tokens/s all streams, {r['most']} clients / {r['one']} "
        f"({r['short']} tokens) | first token p95, {r['most']} clients ({r['short']} tokens, "
        f"s) | tokens/s per stream, {r['one']} client ({r['long']} tokens): / "
        f"{names[BARE_TRANSFORMERS]} | / {names[BARE_LLAMA]} |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, m in r["engines"].items():
        lines.append(
            f"| {names[key]} | {fmt(m['scaling'], 2)} | {fmt(m['ttft_p95_s'], 2)} | "
            f"{fmt(m['per_stream_vs_bare_transformers'], 2)} | "
            f"{fmt(m['per_stream_vs_bare_llama'], 2)} |"
        )
    return lines


def memory_lines(results: dict[str, Any]) -> list[str]:
    memory, names = results["peak_rss_mb"], results["engine_names"]
    added = ", ".join(f"{names[k]} {fmt(v, 0)} MB" for k, v in memory["added_by"].items())
    lines = [
        f"- this process (the bare engines together): {fmt(memory['this_process'], 0)} MB; "
        f"loading and a warm-up added {added}"
    ]
    lines += [f"- {names[key]}: {fmt(mb, 0)} MB" for key, mb in memory["servers"].items()]
    return lines


def table(results: dict[str, Any]) -> str:
    lines = cells_table(results) + ["", *ratios_table(results)]
    lines += ["", "peak resident memory:", *memory_lines(results)]
    names = results["engine_names"]
    skipped = [f"- {names[key]}: {why}" for key, why in results["skipped"].items()]
    return "\n".join(lines + (["", "not measured:", *skipped] if skipped else []))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data roots and results")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M-Instruct]")
    ap.add_argument(
        "--port", type=int, default=8766, help="loopback port of the first server (+1, +2: next)"
    )
    ap.add_argument(
        "--clients", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent clients"
    )
    ap.add_argument("--lengths", type=int, nargs="+", default=[48, 128], help="answer tokens")
    ap.add_argument(
        "--engines",
        nargs="+",
        choices=[e for e in ENGINES if e != "auto"],
        default=list(SERVE_ENGINES),
        help="the `learnloop serve --engine` servers to measure (vllm: on a CUDA machine)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="chats each serve client sends")
    ap.add_argument(
        "--llama-weights",
        choices=llama_bare.WEIGHTS,
        default="f16",
        help="the weights of bare llama.cpp and of `serve --engine llama.cpp` [default: f16]",
    )
    ap.add_argument("--json", action="store_true", help="print results.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    homes = prepare_homes(args.out, args.model, args.engines)
    adapter = next(iter(homes.values())) / "adapters" / "v1"
    skipped: dict[str, str] = {}
    memory: dict[str, Any] = {"added_by": {}, "servers": {}}
    runners = bare_runners(args, adapter, memory["added_by"], skipped)
    with servers_running(homes, args, skipped, memory["servers"]) as urls:
        runners.update(
            {key: functools.partial(serve_cell, url, args.rounds) for key, url in urls.items()}
        )
        cells = measure(args, runners)
    memory["this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = {
        "engine_names": engine_names(args.llama_weights, args.engines),
        "skipped": skipped,
        "cells": cells,
        "ratios": ratios(cells, args.clients, args.lengths),
        "peak_rss_mb": memory,
    }
    report(args, measured, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
