"""Generation speed side by side, in one interleaved run, on loopback: bare transformers
``generate`` in this process against ``learnloop serve`` (a separate process), with a
learned version active in both (a LoRA adapter on the attention projections, unmerged).

For each number of concurrent clients (``--clients``, 1 2 4 8) and each answer length
(``--lengths``, 48 128), one after the other:

- bare: ``generate`` on a left-padded batch of that many prompts at once (the most plain
  transformers does for concurrent requests: a static batch), greedy;
- serve: that many streaming clients, each sending ``--rounds`` chats one after another,
  greedy, ``whole_answer`` (no first-paragraph stop).

Prompts are user messages of about 40 tokens asking for a long text, so answers run to
the token limit. Reported per cell: aggregate tokens/s (completion tokens of all streams
/ wall time), tokens/s per stream (p50), time to first token p50 / p95 (bare: the batch's
prefill, when its first token is sampled), failed requests; and peak resident memory of
each process.

    python -m benchmarks.serve_speed --out /tmp/serve-speed [--json]

Output: ``OUT/results.json`` and a Markdown table on stdout. Give the machine to it alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.serve_load import prepare_home, report, start_server, stream_chat, summary

GREEDY = {"temperature": 0, "whole_answer": True}
ENGINES = {"bare": "bare transformers generate (static batch)", "serve": "learnloop serve"}
TOPICS = ["a lighthouse keeper", "a small bakery", "a river journey", "an old clock"]


def prompt(n: int) -> str:
    """About 40 tokens, asking for more text than any answer length measured."""
    topic = TOPICS[n % len(TOPICS)]
    return (
        f"Write a long and detailed story about {topic}, with names, places, weather, "
        "what people say to each other and how the day ends. Use many sentences and do "
        "not stop early."
    )


# -- bare transformers -------------------------------------------------------------------


def load_bare(home: Path, model_spec: str | None) -> tuple[Any, Any]:
    """The model with v1's adapter, as the server loads it (fp32 on CPU, unmerged)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from learnloop.agent.backend import load_tokenizer
    from learnloop.learning.models import resolve_model

    model = resolve_model(model_spec)
    base = AutoModelForCausalLM.from_pretrained(model.path)
    tuned = PeftModel.from_pretrained(base, str(home / "adapters" / "v1"), adapter_name="v1")
    tuned.eval()
    tokenizer = load_tokenizer(model.path)
    tokenizer.padding_side = "left"
    return tuned, tokenizer


def bare_cell(model: Any, tokenizer: Any, clients: int, max_tokens: int) -> dict[str, Any]:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt(i)}], tokenize=False, add_generation_prompt=True
        )
        for i in range(clients)
    ]
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


# -- learnloop serve ---------------------------------------------------------------------


def serve_cell(url: str, clients: int, max_tokens: int, rounds: int) -> dict[str, Any]:
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


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory (Linux's VmHWM), in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) / 1024


# -- report ------------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| engine | clients | answer tokens | tokens/s all streams | tokens/s per stream "
        "| first token p50 / p95 (s) | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        for engine in ("bare", "serve"):
            m = cell[engine]
            lines.append(
                f"| {ENGINES[engine]} | {cell['clients']} | {cell['max_tokens']} | "
                f"{_f(m['aggregate_tokens_per_s'])} | "
                f"{_f(m['tokens_per_s_per_stream']['p50'])} | "
                f"{_f(m['ttft_s']['p50'], 2)} / {_f(m['ttft_s']['p95'], 2)} | {m['failed']} |"
            )
    memory = results["peak_rss_mb"]
    lines += [
        "",
        f"peak resident memory: bare (this process) {_f(memory['bare'], 0)} MB, "
        f"learnloop serve {_f(memory['serve'], 0)} MB",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data root and results")
    ap.add_argument("--model", default=None, help="model spec [default: SmolLM2-135M-Instruct]")
    ap.add_argument("--port", type=int, default=8766, help="loopback port for the server")
    ap.add_argument(
        "--clients", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent clients"
    )
    ap.add_argument("--lengths", type=int, nargs="+", default=[48, 128], help="answer tokens")
    ap.add_argument("--rounds", type=int, default=2, help="chats each serve client sends")
    ap.add_argument("--json", action="store_true", help="print results.json")
    return ap.parse_args(argv)


def activate_v1(home: Path) -> None:
    os.environ["LEARNLOOP_HOME"] = str(home)
    from learnloop.storage.store import Store

    with Store() as store:
        if store.active_version() != "v1":
            store.activate("v1", who="serve_speed", why="a learned version serves")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    home = args.out / "home"
    prepare_home(home, args.model)
    activate_v1(home)
    model, tokenizer = load_bare(home, args.model)
    server = start_server(home, args.port, args.model)
    url = f"http://127.0.0.1:{args.port}"
    cells = []
    try:
        stream_chat(url, prompt(0), 4, **GREEDY)  # warm-up, not counted
        bare_cell(model, tokenizer, 1, 4)
        for clients in args.clients:
            for max_tokens in args.lengths:
                print(f"{clients} clients, {max_tokens} tokens", flush=True)
                cells.append(
                    {
                        "clients": clients,
                        "max_tokens": max_tokens,
                        "bare": bare_cell(model, tokenizer, clients, max_tokens),
                        "serve": serve_cell(url, clients, max_tokens, args.rounds),
                    }
                )
        serve_rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    bare_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = {"cells": cells, "peak_rss_mb": {"bare": bare_rss, "serve": serve_rss}}
    report(args, measured, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
