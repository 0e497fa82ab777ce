"""The time of a turn with one tool call against a plain turn, side by side in one run.

Both kinds go through the real agent (graph, store, backend) on the same model and version:
the tool turns ask the task's questions with its tools offered (a call, its result, the
answer: two model calls and a longer prompt, the tools' schemas in it); the plain turns ask
the same questions with no tools (one model call). Turns alternate, so both see the same
machine load. A tool turn counts only if it made exactly one well-formed call; the others
are reported as such.

    python -m benchmarks.tool_turn --home out/bench-tools-correct/home \\
        --tools ../shared/data/tool_arithmetic/tools.py \\
        --questions ../shared/data/tool_arithmetic/dev.jsonl -n 20

``--home`` is a data root whose active version calls the tools (a tool bench's
``OUT/home``); it is copied first, so the benchmark's turns land in the copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

INSTRUCTION = "Answer the question. Use the calculate tool for arithmetic."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a data root to copy")
    parser.add_argument("--tools", required=True, help="the --tools spec of the task")
    parser.add_argument("--questions", type=Path, required=True, help="tool task rows")
    parser.add_argument("--instruction", default=INSTRUCTION)
    parser.add_argument("-n", type=int, default=20, help="questions (each asked both ways)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        shutil.copytree(args.home, home, ignore=shutil.ignore_patterns("runs"))
        os.environ["LEARNLOOP_HOME"] = str(home)
        figures = measure(args)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(table(figures))
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from learnloop.agent.config import GenerationConfig
    from learnloop.agent.runtime import Agent, load_agent
    from learnloop.learning.tasks import read_tool_task, task_message
    from learnloop.learning.toolbox import load_tools
    from learnloop.storage.store import Store

    rows = read_tool_task(args.questions)[: args.n]
    greedy = GenerationConfig(max_new_tokens=64, temperature=0)
    store = Store()
    with_tools = load_agent(store, None, greedy, load_tools([args.tools]))
    plain = Agent(store, with_tools.backend, greedy)  # same model and version, no tools
    with_tools.ask("warm-up", tools=[])  # the first answer pays for lazy loading
    times: dict[str, list[float]] = {"tool": [], "plain": []}
    tokens: dict[str, list[int]] = {"tool": [], "plain": []}
    other = 0
    for row in rows:
        message = task_message(args.instruction, row.text)
        for kind, agent in (("tool", with_tools), ("plain", plain)):
            started = time.perf_counter()
            answer = agent.ask(message)
            seconds = time.perf_counter() - started
            calls = [s for s in answer.steps if s["type"] == "tool"]
            if kind == "tool" and (len(calls) != 1 or answer.steps[0].get("malformed")):
                other += 1
                continue
            times[kind].append(seconds)
            tokens[kind].append(answer.prompt_tokens + answer.completion_tokens)
    store.close()
    return {
        "version": with_tools.backend.version,
        "questions": len(rows),
        "not_one_call": other,
        **{
            kind: {
                "turns": len(times[kind]),
                "median_s": round(statistics.median(times[kind]), 2) if times[kind] else None,
                "p90_s": round(_p90(times[kind]), 2) if times[kind] else None,
                "tokens": round(statistics.mean(tokens[kind]), 1) if tokens[kind] else None,
            }
            for kind in ("plain", "tool")
        },
    }


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def table(f: dict[str, Any]) -> str:
    lines = [
        f"version {f['version']}, {f['questions']} questions, each asked both ways "
        f"({f['not_one_call']} tool turns without exactly one well-formed call left out)",
        "",
        "| turn | turns | median s | p90 s | tokens (prompts + answers) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, name in (("plain", "plain (no tools)"), ("tool", "one tool call")):
        k = f[kind]
        lines.append(f"| {name} | {k['turns']} | {k['median_s']} | {k['p90_s']} | {k['tokens']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
