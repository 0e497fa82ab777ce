"""The first hour, measured: the README's walkthrough (``examples/walkthrough.sh``) from a
fresh data root, then one more correction and the second cycle run twice, side by side
on copies of the same data root: with the control scores the first cycle kept
(learning/control_cache.py) and with that cache removed, as every cycle measured before.

    python -m benchmarks.first_learn [--json FILE]

Prints a markdown table (what the README shows): wall seconds of the walkthrough and of
each cycle, each cycle's training and gate seconds (from its ``metrics.json``), how many
prompts the gate measured, the verdict's summary, and whether the new version gives the
correction. Uses the default model and settings; give the machine to it alone.
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
    training = sum(
        (metrics.get(stage) or {}).get("seconds", 0.0) for stage in ("sft", "dpo", "kto")
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="learnloop-first-learn-"))
    root = work / "root"
    log(f"walkthrough in {root}")
    started = time.perf_counter()
    env = {**root_env(root), "LEARNLOOP": learnloop_bin()}
    done = subprocess.run(["bash", str(WALKTHROUGH)], env=env, capture_output=True, text=True)
    walkthrough = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the walkthrough failed:\n{done.stderr}")
    print(done.stdout)
    first = cycle_row(
        "walkthrough: 4 feedback items", root, walkthrough, 1, cli(root, "versions")[-1]
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
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
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


if __name__ == "__main__":
    main()
