"""Figures 1 to 3 of ``loop_figures.py``: converting the default GGUF, `learnloop ask`
(with the import floor and the base model's load), and batch-1 generation."""

from __future__ import annotations

import gc
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loop_run import (
    Row,
    folder_bytes,
    last_json,
    learnloop_bin,
    log,
    median,
    r3,
    root_env,
    run_timed,
    run_until_json,
    seed_models,
    use_root,
)

ASK_QUESTION = "What is the capital of France? Answer in one sentence."

GEN_PROMPTS = [
    "Explain how photosynthesis works in detail.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Describe the water cycle step by step.",
    "What are the main differences between Python lists and tuples? Give examples.",
]


# --- 1. conversion ----------------------------------------------------------------------

CONVERT_CODE = (
    "import json, time\n"
    "t = time.perf_counter()\n"
    "from learnloop.learning.models import resolve_model\n"
    "r = resolve_model(None, progress=False)\n"
    "print(json.dumps({'path': r.path, 'name': r.name, 'in_process_s': time.perf_counter() - t}))\n"
)


def measure_conversion(work: Path, reps: int) -> Row:
    walls, inproc, path, name, models = [], [], "", "", None
    for i in range(reps):
        root = work / f"convert-{i}"
        log(f"1. converting the default GGUF in a fresh data root ({i + 1}/{reps})")
        wall, out, _ = run_timed(
            [sys.executable, "-c", CONVERT_CODE], root_env(root), 900, "conversion"
        )
        got = last_json(out)
        walls.append(wall)
        inproc.append(got["in_process_s"])
        path, name = got["path"], got["name"]
        if models is None:
            models = root / "models"
    assert models is not None
    return {
        "wall_s": [r3(w) for w in walls],
        "wall_s_median": r3(median(walls)),
        "in_process_s": [r3(x) for x in inproc],
        "checkpoint": path,
        "checkpoint_mb": round(folder_bytes(Path(path)) / 1e6, 1),
        "_models": models,
        "_path": path,
        "_name": name,
    }


# --- 2. ask, import floor, base load ------------------------------------------------------

IMPORT_CODE = (
    "import torch, transformers, langgraph.graph, learnloop.agent.runtime, learnloop.agent.backend"
)


def measure_import_floor(reps: int, env: dict[str, str]) -> Row:
    walls = []
    for _ in range(reps):
        wall, _, _ = run_timed([sys.executable, "-c", IMPORT_CODE], env, 300, "import")
        walls.append(wall)
    return {"wall_s": [r3(w) for w in walls], "wall_s_median": r3(median(walls))}


def measure_ask(work: Path, models: Path, reps: int, tokens: int, root_name: str = "ask") -> Row:
    """`learnloop ask` in ``work/root_name``: a fresh root (base active) or an existing one."""
    root = work / root_name
    if not root.exists():
        seed_models(root, models)
    before = sorted(p.name for p in (root / "models").iterdir())
    env = root_env(root)
    cmd = [learnloop_bin(), "ask", ASK_QUESTION, "--json", "--max-new-tokens", str(tokens)]
    walls, answered, turn_ids = [], [], []
    for i in range(reps):
        log(f"2. learnloop ask --json --max-new-tokens {tokens} ({i + 1}/{reps})")
        got, wall, out = run_until_json(cmd, env, 600)
        walls.append(wall)
        answered.append(got)
        turn_ids.append(last_json(out)["turn_id"])
    after = sorted(p.name for p in (root / "models").iterdir())
    if after != before:
        raise RuntimeError(f"`learnloop ask` converted again ({before} -> {after}): cache not warm")
    from learnloop.storage.store import Store

    use_root(root)
    with Store() as store:
        turns = [store.get_turn(t).log for t in turn_ids]
    gen = [t.total_ms / 1000 for t in turns]
    return {
        "command": " ".join(shlex.quote(c) for c in cmd),
        "wall_s": [r3(w) for w in walls],
        "wall_s_median": r3(median(walls)),
        "answer_printed_s": [r3(a) for a in answered],
        "answer_printed_s_median": r3(median(answered)),
        "exit_after_answer_s_median": r3(
            median([w - a for w, a in zip(walls, answered, strict=True)])
        ),
        "generation_s": [r3(g) for g in gen],
        "completion_tokens": [t.completion_tokens for t in turns],
        "other_before_answer_s_median": r3(
            median([a - g for a, g in zip(answered, gen, strict=True)])
        ),
    }


COLD_LOAD_CODE = (
    "import json, sys, time\n"
    "t0 = time.perf_counter()\n"
    "import torch, transformers\n"
    "from learnloop.agent.transformers_engine import TransformersBackend\n"
    "t1 = time.perf_counter()\n"
    "TransformersBackend(sys.argv[1], sys.argv[2])\n"
    "t2 = time.perf_counter()\n"
    "TransformersBackend(sys.argv[1], sys.argv[2])\n"
    "t3 = time.perf_counter()\n"
    "print(json.dumps({'imports_s': t1 - t0, 'first_s': t2 - t1, 'second_s': t3 - t2}))\n"
)


def measure_cold_load(path: str, name: str, reps: int, env: dict[str, str]) -> Row:
    """TransformersBackend construction in a fresh process, as `learnloop ask` pays it: the
    first one includes transformers' lazily imported tokenizer and model modules."""
    runs = []
    for i in range(reps):
        log(f"2b. TransformersBackend construction in a fresh process ({i + 1}/{reps})")
        _, out, _ = run_timed(
            [sys.executable, "-c", COLD_LOAD_CODE, path, name], env, 300, "cold load"
        )
        runs.append(last_json(out))
    return {key: [r3(r[key]) for r in runs] for key in ("imports_s", "first_s", "second_s")} | {
        "first_s_median": r3(median([r["first_s"] for r in runs])),
        "second_s_median": r3(median([r["second_s"] for r in runs])),
    }


def measure_load(path: str, name: str, reps: int) -> tuple[Row, Any]:
    from learnloop.agent.transformers_engine import TransformersBackend

    times, backend = [], None
    for i in range(reps):
        log(f"2b. TransformersBackend construction ({i + 1}/{reps})")
        backend = None
        gc.collect()
        t = time.perf_counter()
        backend = TransformersBackend(path, name)
        times.append(time.perf_counter() - t)
    return {
        "load_s": [r3(x) for x in times],
        "load_s_first": r3(times[0]),
        "load_s_median": r3(median(times)),
    }, backend


# --- 3. generation ----------------------------------------------------------------------


def measure_generation(backend: Any, reps: int, max_new_tokens: int) -> Row:
    from learnloop.agent.config import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    warm = backend.stream(
        [{"role": "user", "content": "Hi"}], GenerationConfig(max_new_tokens=8, temperature=0.0)
    )
    for _ in warm:  # untimed warm-up
        pass
    runs = []
    for rep in range(reps):
        for prompt in GEN_PROMPTS:
            log(f"3. generation rep {rep + 1}/{reps}: {prompt[:40]}...")
            t0 = time.perf_counter()
            stream = backend.stream([{"role": "user", "content": prompt}], config)
            first = None
            for piece in stream:
                if piece and first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            n = stream.completion_tokens
            runs.append(
                {
                    "prompt_tokens": stream.prompt_tokens,
                    "completion_tokens": n,
                    "seconds": end - t0,
                    "ttft_s": None if first is None else first - t0,
                    "tok_s": n / (end - t0),
                    "decode_tok_s": (n - 1) / (end - first) if first and n > 1 else None,
                }
            )
    decode = [r["decode_tok_s"] for r in runs if r["decode_tok_s"]]
    ttft = [r["ttft_s"] for r in runs if r["ttft_s"] is not None]
    return {
        "settings": config.to_dict(),
        "runs": [{k: r3(v) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
        "tok_s_median": r3(median([r["tok_s"] for r in runs])),
        "tok_s_aggregate": r3(
            sum(r["completion_tokens"] for r in runs) / sum(r["seconds"] for r in runs)
        ),
        "decode_tok_s_median": r3(median(decode)) if decode else None,
        "ttft_s_median": r3(median(ttft)) if ttft else None,
        "completion_tokens_median": median([r["completion_tokens"] for r in runs]),
    }
