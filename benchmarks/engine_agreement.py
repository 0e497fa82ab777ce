"""Do the engines answer alike? Greedy answers of llama.cpp (F16, F32, BF16 weights) and
transformers bf16 against transformers fp32, the engine the gate measures with.

The gate promotes a version for the answers transformers fp32 gives; a server that
answers with another engine serves what the gate measured only as far as their answers
agree. For the base and a version (``--adapter``, default: a LoRA r16 on q/k/v/o with
random non-zero weights, so that it changes answers), this asks every engine for greedy
answers, one at a time, as the gate does (``--max-tokens``, default the gate's 48, whole
answers) to:

- the shipped control set (learning/control.jsonl): the same text as fp32's, and the
  control verdict (its ``expect`` word in the answer) the same;
- the first ``--eval-rows`` rows of a labelled task file (``--eval``, with
  ``--instruction`` and ``--labels``; default Financial PhraseBank's dev split): the same
  text, and the same verdict (correct or not), with each engine's accuracy.

    python -m benchmarks.engine_agreement --out /tmp/engine-agreement [--json]

Output: ``OUT/results.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from benchmarks.serve_kit import report

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INSTRUCTION = (
    "Classify the sentiment of this financial news sentence as positive, negative or "
    "neutral. Answer with one word."
)
ENGINES = ("transformers-bf16", "llama.cpp f16", "llama.cpp f32", "llama.cpp bf16")


def load(engine: str, model: Any) -> Any:
    from learnloop.agent.llama_engine import LlamaBackend
    from learnloop.agent.transformers_engine import TransformersBackend

    if engine.startswith("llama.cpp"):
        return LlamaBackend(model, weights=engine.split()[1], keep_adapters=2)
    dtype = "bfloat16" if engine == "transformers-bf16" else "float32"
    return TransformersBackend(model.path, model.name, keep_adapters=2, dtype=dtype)


def answers(backend: Any, prompts: list[str], pin: Any, max_tokens: int) -> list[str]:
    from learnloop.agent.config import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_tokens, temperature=0, whole_answer=True)
    return ["".join(backend.stream([{"role": "user", "content": p}], config, pin)) for p in prompts]


def compare(
    reference: list[str], served: list[str], verdict: Any, golds: list[str]
) -> dict[str, Any]:
    """How far ``served`` agrees with ``reference``: texts, and verdicts under ``verdict``."""
    pairs = list(zip(reference, served, strict=True))
    judged = [(verdict(r, g), verdict(s, g)) for (r, s), g in zip(pairs, golds, strict=True)]
    return {
        "n": len(pairs),
        "same_text": sum(r == s for r, s in pairs) / len(pairs),
        "same_verdict": sum(a == b for a, b in judged) / len(judged),
        "correct": sum(b for _, b in judged) / len(judged),
        "reference_correct": sum(a for a, _ in judged) / len(judged),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the results")
    ap.add_argument("--adapter", type=Path, default=None, help="a PEFT adapter folder")
    ap.add_argument("--eval", type=Path, default=SHARED / "financial_phrasebank" / "dev.jsonl")
    ap.add_argument("--instruction", default=INSTRUCTION, help="the task's instruction")
    ap.add_argument("--labels", default="positive,negative,neutral", help="the task's labels")
    ap.add_argument("--eval-rows", type=int, default=100, help="rows of --eval asked")
    ap.add_argument("--max-tokens", type=int, default=48, help="answer length (the gate's)")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--json", action="store_true", help="print results.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LEARNLOOP_HOME", str(args.out / "home"))
    from benchmarks.random_adapter import save_random_adapter
    from learnloop.agent.backend import Pin
    from learnloop.learning.models import resolve_model
    from learnloop.learning.tasks import is_correct, read_labelled, task_message

    model = resolve_model(None)
    adapter = args.adapter or args.out / "adapter"
    if args.adapter is None and not adapter.is_dir():
        save_random_adapter(
            model.path, adapter, seed=1, modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        )
    labels = args.labels.split(",")
    control = [
        json.loads(line)
        for line in resources.files("learnloop.learning")
        .joinpath("control.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    rows = read_labelled(args.eval, labels)[: args.eval_rows]
    sets = {
        "control": (
            [c["prompt"] for c in control],
            [c["expect"] for c in control],
            lambda answer, expect: expect.lower() in answer.lower(),
        ),
        "eval": (
            [task_message(args.instruction, r.text) for r in rows],
            [r.label for r in rows],
            lambda answer, gold: is_correct(answer, gold, labels),
        ),
    }
    pins = {"base": Pin("base"), "v1": Pin("v1", str(adapter))}
    measured: dict[str, Any] = {"engines": {}}
    for engine in ["transformers fp32", *args.engines]:
        backend = load(engine, model)
        got = {
            (version, name): answers(backend, prompts, pin, args.max_tokens)
            for version, pin in pins.items()
            for name, (prompts, _, _) in sets.items()
        }
        if engine == "transformers fp32":
            reference = got
            continue
        measured["engines"][engine] = {
            f"{version} {name}": compare(
                reference[(version, name)], got[(version, name)], sets[name][2], sets[name][1]
            )
            for version, name in got
        }
        print(f"{engine}: done", flush=True)
    report(args, measured, table)
    return 0


def table(results: dict[str, Any]) -> str:
    lines = [
        "| engine | answers | same text as fp32 | same verdict | correct (fp32) |",
        "|---|---|---:|---:|---:|",
    ]
    for engine, cells in results["engines"].items():
        for what, c in cells.items():
            lines.append(
                f"| {engine} | {what} ({c['n']}) | {c['same_text']:.2f} | "
                f"{c['same_verdict']:.2f} | {c['correct']:.2f} ({c['reference_correct']:.2f}) |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
