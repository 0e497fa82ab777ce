"""The LoRA recipe, measured: adapters trained on one bench run's feedback, one per point
of a grid of learn settings, each scored on a labelled eval file.

A ``learnloop bench`` data root (``OUT/home``) keeps every turn and rating, and each of its
learning runs records the feedback its snapshot considered. For each point of the grid
(the cross product of the ``--grid FIELD=V1,V2,...`` flags), this builds the snapshot a
fresh cycle builds from the feedback run ``--run`` considered, with that run's settings
and the point's on top (learning/snapshot.py), trains it in the real trainer child
(learning/child.py), then has base + adapter answer every eval row greedily and scores the
answers as the bench does (accuracy, macro-F1, exact one-word format). The points differ
only in the settings named; the held-out split, seed and rows are the same. The source
data root is only read: its database is copied into ``--out``.

``--start active`` sweeps a continual step instead: each point trains the adapter the run
started from (its version's ``started_from``) further on the snapshot that run's cycle
built (the feedback new since that version plus the replay), and the start adapter's own
scores stand beside the base's, so a point shows what the step gained or lost.

    nice python -m benchmarks.lora_sweep --home OUT/home --run 2 \\
        --eval ../shared/data/financial_phrasebank/dev.jsonl \\
        --grid sft_learning_rate=6e-4,1e-3 --grid lora_r=16,32 --out sweep [--json]
    nice python -m benchmarks.lora_sweep --home OUT/home --run 3 --start active \\
        --eval ../shared/data/financial_phrasebank/dev.jsonl \\
        --grid sft_continue_learning_rate=3e-4,6e-4 --out sweep-step

Answers come from transformers in fp32 (the gate's engine), not from the bench's chat
engine, so a point's score can differ from a bench table's by an answer or two.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="a bench's data root (only read)")
    ap.add_argument(
        "--run", type=int, required=True, help="train on the feedback this learning run used"
    )
    ap.add_argument("--eval", type=Path, required=True, help="labelled JSONL rows to score on")
    ap.add_argument("--eval-limit", type=int, default=0, help="the first N rows (0: all)")
    ap.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="a learn setting and its values (repeat: the cross product is swept)",
    )
    ap.add_argument(
        "--start",
        choices=("fresh", "active"),
        default="fresh",
        help="fresh: a new adapter on all the run's feedback; active: the run's start "
        "adapter trained further, as its continual cycle did",
    )
    ap.add_argument("--out", type=Path, required=True, help="a new folder for the results")
    ap.add_argument("--model", default=None, help="the base model (default: SmolLM2-135M)")
    ap.add_argument("--json", action="store_true", help="print results.json, not a table")
    return ap.parse_args(argv)


def grid_points(specs: list[str]) -> list[dict[str, Any]]:
    """``["lora_r=16,32", "sft_epochs=1"]`` -> every combination, each value typed as its
    LearnConfig field (a bad name or value fails here, before anything trains)."""
    from learnloop.agent.options import parse_settings
    from learnloop.learning.config import LearnConfig

    axes = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise SystemExit(f"--grid {spec!r}: write FIELD=V1,V2,...")
        axes.append([f"{name.strip()}={v.strip()}" for v in values.split(",")])
    try:
        points = [parse_settings(LearnConfig, list(combo)) for combo in itertools.product(*axes)]
        for point in points:
            LearnConfig(**point)  # in bounds
    except ValueError as exc:
        raise SystemExit(f"--grid: {str(exc).removeprefix('--set ')}") from exc
    return points


def score_adapter(
    model_path: str, adapter: Path | None, rows: list[Any], config: Any
) -> dict[str, Any]:
    """The bench's scores of greedy answers to ``rows`` from base (+ ``adapter``)."""
    from learnloop.agent.bench.label_task import score_adapters

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    scores = score_adapters(model_path, {"point": adapter}, rows, config.eval_instruction,
                            config.label_words, config.eval_max_new_tokens, say)  # fmt: skip
    return scores["point"]


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    points = grid_points(args.grid)
    args.out.mkdir(parents=True)  # a new folder: never mixes two sweeps
    home = args.out / "home"
    home.mkdir()
    shutil.copy2(args.home / "learnloop.duckdb", home / "learnloop.duckdb")
    os.environ["LEARNLOOP_HOME"] = str(home)

    from learnloop.learning.child import train_in_child
    from learnloop.learning.config import LearnConfig
    from learnloop.learning.models import resolve_model
    from learnloop.learning.snapshot import build_snapshot, write_snapshot
    from learnloop.learning.tasks import read_labelled
    from learnloop.learning.trainer_output import training_seconds
    from learnloop.storage.store import Store

    model = resolve_model(args.model)
    with Store() as store:
        run = store.get_run(args.run)
        if run.version_id is None:
            raise SystemExit(f"learning run {args.run} made no version: pick one that did")
        upto = store.trained_upto(run.version_id)
        examples = [e for e in store.feedback_examples() if upto and e.feedback_id <= upto]
        real_users = frozenset(key.name for key in store.api_keys())
        settings = {**run.config, "start": args.start, "gate": False, "force": True}
        base = LearnConfig(**settings)
        try:
            start = (
                start_of(store, model, base, run.version_id, args)
                if args.start == "active"
                else None
            )
        except SystemExit:
            shutil.rmtree(args.out)  # refused: leave no half-made sweep behind
            raise
    rows = read_labelled(args.eval, base.label_words)
    rows = rows[: args.eval_limit or None]
    print(f"base: scoring {len(rows)} eval rows", file=sys.stderr, flush=True)
    results: dict[str, Any] = {
        "home": str(args.home),
        "run": args.run,
        "feedback": len(examples),
        "eval": str(args.eval),
        "eval_rows": len(rows),
        "settings": settings,
        "base": score_adapter(model.path, None, rows, base),
        "start": None,
        "points": [],
    }
    if start is not None:
        print(f"{start.version}: scoring the start adapter", file=sys.stderr, flush=True)
        scores = score_adapter(model.path, Path(start.adapter), rows, base)
        results["start"] = {"version": start.version, **scores}
    for n, point in enumerate(points, start=1):
        config = LearnConfig(**{**settings, **point})
        snap = build_snapshot(examples, config, real_users, start.since if start else None)
        run_dir = args.out / f"point-{n}"
        run_dir.mkdir()
        write_snapshot(run_dir, snap, model, config, None, [], [], start)
        print(f"point {n}/{len(points)} {point}: training", file=sys.stderr, flush=True)
        started = time.perf_counter()
        metrics = train_in_child(run_dir)
        wall = time.perf_counter() - started
        scores = score_adapter(model.path, run_dir / "adapter", rows, config)
        results["points"].append(
            {
                "settings": point,
                "sft_rows": len(snap.data.sft),
                "train_seconds": round(training_seconds(metrics), 1),
                "cpu_seconds": metrics.get("cpu_seconds"),
                "wall_seconds": round(wall, 1),
                **scores,
            }
        )
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        shutil.rmtree(run_dir / "trl-output", ignore_errors=True)
    return results


def start_of(store: Any, model: Any, config: Any, version_id: str, args: argparse.Namespace) -> Any:
    """Where run ``args.run``'s cycle started, by the rule a cycle uses
    (learning/snapshot.py ``start_from``), its adapter copied from the source data root
    into the sweep's (where the copied database places it)."""
    from learnloop.learning.snapshot import start_from
    from learnloop.storage.home import data_root

    parent = store.get_version(version_id).started_from
    if parent is None:
        raise SystemExit(
            f"learning run {args.run} trained a fresh adapter: with --start "
            "active, pick a run that trained one further (versions: started_from)"
        )
    start = start_from(store, model, config, parent)
    if start is None:
        raise SystemExit(
            f"version {parent} cannot be trained further here: retired, trained on "
            "another base, or without a snapshot"
        )
    adapter = Path(start.adapter)
    shutil.copytree(args.home / adapter.relative_to(data_root()), adapter)
    return start


def table(results: dict[str, Any]) -> str:
    names = sorted({k for p in results["points"] for k in p["settings"]})
    head = " | ".join(names)
    lines = [
        f"run {results['run']}'s feedback ({results['feedback']} items), "
        f"{results['eval_rows']} eval rows",
        "",
        f"| {head} | SFT rows | train s | accuracy | macro-F1 | exact format |",
        "|" + " --- |" * len(names) + " ---: | ---: | ---: | ---: | ---: |",
    ]
    blank = " | ".join("-" for _ in names)
    start = results.get("start")
    for name, b in (("base", results["base"]), (start and start["version"], start)):
        if b is not None:
            lines.append(
                f"| {blank} ({name}) | - | - | {b['accuracy']:.3f} | {b['macro_f1']:.3f} "
                f"| {b['exact_format']:.3f} |"
            )
    for p in results["points"]:
        values = " | ".join(str(p["settings"].get(k, "")) for k in names)
        lines.append(
            f"| {values} | {p['sft_rows']} | {p['train_seconds']:.0f} | {p['accuracy']:.3f} "
            f"| {p['macro_f1']:.3f} | {p['exact_format']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = sweep(args)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
