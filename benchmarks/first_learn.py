"""The first hour, measured: the README's walkthrough (``examples/walkthrough.sh``) from a
fresh data root, then one more correction and the second cycle run twice, side by side
on copies of the same data root: with the control scores the first cycle kept
(learning/control_cache.py) and with that cache removed, as every cycle measured before.

    python -m benchmarks.first_learn [--json FILE] [--seeds N]

Prints a markdown table (what the README shows): wall seconds of the walkthrough and of
each cycle, each cycle's training and gate seconds (from its ``metrics.json``), how many
prompts the gate measured, the verdict's summary, and whether the new version gives the
correction. Uses the default model and settings; give the machine to it alone.

``--seeds N`` then runs the walkthrough again with each sampling seed 1..N (the script's
``SEED``) and tabulates how often its first cycle is promoted: four feedback items make
that a close call, and the answers the seed samples decide it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.loop_run import learnloop_bin, log, root_env
from learnloop.learning.trainer_output import training_seconds

WALKTHROUGH = Path(__file__).resolve().parent.parent / "examples" / "walkthrough.sh"
SECOND = ("What is our team's stand-up time?", "Our stand-up is at 9:30 every morning.")


def cli(root: Path, *args: str) -> Any:
    out = subprocess.run(
        [learnloop_bin(), *args, "--json"], env=root_env(root), capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"learnloop {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def cycle_row(
    name: str, root: Path, wall: float, run_id: int, version: dict[str, Any]
) -> dict[str, Any]:
    """One table row from a cycle's version record (``versions --json``)."""
    metrics = version["metrics"]
    training = training_seconds(metrics)
    events = (root / "runs" / f"run-{run_id}" / "progress.jsonl").read_text()
    gate = [json.loads(line) for line in events.splitlines() if '"gate"' in line]
    return {
        "cycle": name,
        "wall_s": round(wall, 1),
        "train_s": round(training, 1),
        "gate_s": metrics.get("gate_seconds"),
        "gate_prompts": max((e["total"] for e in gate), default=0),
        "promoted": version["status"] == "promoted",
        "summary": version["gate"]["summary"],
    }


def timed_learn(name: str, root: Path) -> dict[str, Any]:
    started = time.perf_counter()
    learned = cli(root, "learn")
    wall = time.perf_counter() - started
    version = next(v for v in cli(root, "versions") if v["id"] == learned["version"])
    return cycle_row(name, root, wall, learned["run_id"], version)


def walkthrough(root: Path, seed: int | None = None) -> tuple[str, float]:
    """The walkthrough script's output in a fresh ``root``, and its wall seconds."""
    log(f"walkthrough in {root}" + ("" if seed is None else f", seed {seed}"))
    env = {**root_env(root), "LEARNLOOP": learnloop_bin()}
    if seed is not None:
        env["SEED"] = str(seed)
    started = time.perf_counter()
    done = subprocess.run(["bash", str(WALKTHROUGH)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the walkthrough failed:\n{done.stderr}")
    return done.stdout, time.perf_counter() - started


def seed_row(work: Path, seed: int) -> dict[str, Any]:
    root = work / f"seed-{seed}"
    walkthrough(root, seed)
    version = cli(root, "versions")[-1]
    gate = version["gate"]
    right = [
        round(side["control_accuracy"] * side["control_prompts"])
        for side in (gate["candidate"], gate["base_control"] or gate["active"])
    ]
    return {
        "seed": seed,
        "promoted": version["status"] == "promoted",
        "general": f"{right[0]} of {gate['candidate']['control_prompts']} (base {right[1]})",
        "answers_hopper": "Hopper" in cli(root, "log", "-n", "1")[0]["answer"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--seeds", type=int, default=0, help="then the walkthrough with seeds 1..N (0: none)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="learnloop-first-learn-"))
    root = work / "root"
    said, walkthrough_s = walkthrough(root)
    print(said)
    first = cycle_row(
        "walkthrough: 4 feedback items", root, walkthrough_s, 1, cli(root, "versions")[-1]
    )
    first["wall_s"] = f"{first['wall_s']} (whole script)"
    rows = [first]
    answered = cli(root, "log", "-n", "1")[0]
    log(f"after the walkthrough {answered['version']} answers: {answered['answer']!r}")
    turn = cli(root, "ask", SECOND[0])["turn_id"]
    cli(root, "feedback", str(turn), "down", "--correction", SECOND[1])
    uncached = work / "uncached"
    shutil.copytree(root, uncached)
    (uncached / "runs" / "control-scores.json").unlink()
    for name, where in (("second, control scores kept", root), ("second, measured anew", uncached)):
        log(f"learn: {name}")
        rows.append(timed_learn(name, where))
    print(table(rows))
    seeds = [seed_row(work, seed) for seed in range(1, args.seeds + 1)]
    if seeds:
        print(seed_table(seeds))
    if args.json:
        args.json.write_text(json.dumps({"cycles": rows, "seeds": seeds}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    head = "| cycle | wall s | training s | gate s | gate prompts | promoted | verdict |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        prompts = "" if r["gate_prompts"] is None else str(r["gate_prompts"])
        lines.append(
            f"| {r['cycle']} | {r['wall_s']} | {r['train_s']} | {r['gate_s']} | {prompts} | "
            f"{'yes' if r['promoted'] else 'no'} | {r['summary']} |"
        )
    return "\n".join(lines)


def seed_table(rows: list[dict[str, Any]]) -> str:
    promoted = sum(r["promoted"] for r in rows)
    lines = [
        "| seed | v1 promoted | general questions right | then answers Hopper |",
        "| ---: | --- | ---: | --- |",
    ]
    yes = {True: "yes", False: "no"}
    for r in rows:
        lines.append(
            f"| {r['seed']} | {yes[r['promoted']]} | {r['general']} | {yes[r['answers_hopper']]} |"
        )
    return "\n".join([*lines, "", f"promoted with {promoted} of {len(rows)} seeds"])


if __name__ == "__main__":
    main()
