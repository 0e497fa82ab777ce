"""Teach learnloop a labelled task from a JSONL file, from Python, through its service layer.

Each line of the file is ``{"text": ..., "label": ...}``. For every row the example asks
the agent (the instruction, a blank line, the text), judges the answer the way the gate
and ``learnloop bench`` do (``learnloop.learning.tasks``: correct when it names exactly
the gold label), and gives feedback: 👍 when right, else 👎 with the gold label as the
correction. Then it runs one learning cycle (SFT on the corrections and the good answers;
the gate, unless ``--no-gate``, promotes only a version with a better task accuracy on
the file) and asks every row again: accuracy before and after. Both are measured on the
rows it was taught; ``learnloop bench`` measures on a held-out split.

    python examples/teach_from_jsonl.py rows.jsonl \\
        --instruction "Is this review positive or negative? Answer with one word." \\
        --labels positive,negative
    python examples/teach_from_jsonl.py rows.jsonl --model DIR --max-steps 2 --no-gate \\
        --set sft_learning_rate=0.01

Everything is stored under $LEARNLOOP_HOME (default ~/.learnloop).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from learnloop.agent.config import GenerationConfig
from learnloop.agent.service import LocalService, open_local
from learnloop.learning.tasks import Example, is_correct, labels_of, read_labelled, task_message
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import LearnloopError, UsageError


def setting(text: str) -> tuple[str, Any]:
    """``--set name=value``: the value as JSON (numbers, true/false), else as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--set takes NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def accuracy(service: LocalService, rows: list[Example], args: Any, teach: bool) -> float:
    """Ask every row in a thread of its own; with ``teach``, rate each answer."""
    right = 0
    for row in rows:
        turn = service.ask(task_message(args.instruction, row.text))
        correct = is_correct(turn["answer"], row.label, args.labels)
        right += correct
        if teach and correct:
            service.feedback(turn["turn_id"], "up", who="teach-example")
        elif teach:
            service.feedback(turn["turn_id"], "down", correction=row.label, who="teach-example")
    return right / len(rows)


def learn_settings(args: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"method": "sft", "max_steps": args.max_steps}
    if args.no_gate:
        settings["gate"] = False
    else:  # judge the candidate by task accuracy on the same file, against the active one
        settings |= {
            "eval_file": str(args.file),
            "eval_instruction": args.instruction,
            "eval_labels": ",".join(args.labels),
            "gate_metric": "task_accuracy",
        }
    return settings | dict(args.set)


def run(args: Any) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {args.limit}")
    rows = read_labelled(args.file, args.labels)[: args.limit]  # a bad file stops here
    args.labels = args.labels or labels_of(rows)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0)
    trigger = TriggerConfig(auto_learn=False)  # one cycle, started below
    with closing(open_local(args.model, generation=generation, trigger=trigger)) as service:
        before = accuracy(service, rows, args, teach=True)
        print(f"taught {len(rows)} rows; accuracy before: {before:.2f}")
        result = service.learn(learn_settings(args), who="examples/teach_from_jsonl.py")
        verdict = "promoted" if result["promoted"] else "rejected"
        print(f"learned {result['version']} ({result['sft_examples']} SFT examples): {verdict}")
        for reason in result["reasons"]:
            print(f"  {reason}")
        after = accuracy(service, rows, args, teach=False)
        active = service.status()["active_version"]
        print(f"accuracy after: {after:.2f} (answered by {active})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help='JSONL file of {"text", "label"} lines')
    parser.add_argument("--instruction", default="Answer with one word.")
    parser.add_argument(
        "--labels",
        type=lambda s: [w.strip().lower() for w in s.split(",")],
        default=None,
        help="comma-separated labels (default: those in the file)",
    )
    parser.add_argument("--model", help="model id, checkpoint folder or .gguf (default SmolLM2)")
    parser.add_argument("--limit", type=int, default=None, help="teach at most N rows")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=-1, help="training steps (-1: all)")
    parser.add_argument("--no-gate", action="store_true", help="promote without the gate")
    parser.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other learn setting (`learnloop learn --help` lists them)",
    )
    try:
        run(parser.parse_args(argv))
    except (LearnloopError, ValueError) as exc:  # bad input: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
