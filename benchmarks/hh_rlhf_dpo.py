"""HH-RLHF preference pairs through learnloop's real DPO path, once: a check of that path.

The train pairs become a run folder exactly like the one a learning cycle writes
(``learning/snapshot.py``): ``dpo.jsonl`` in TRL's conversational preference shape,
``heldout_pairs.jsonl`` from the dev pairs, and ``request.json`` with a LearnConfig
(method "dpo") and a gate against the base model. The real trainer child
(``python -m learnloop.learning.trainer RUN_DIR``, started and relayed by
``learnloop.learning.child.train_in_child``) trains a fresh LoRA adapter with TRL's DPOTrainer and
then measures, in the same process, the held-out preference accuracy (share of dev pairs
with log p(chosen | prompt) > log p(rejected | prompt), ``learning/evaluate.py``) of the
candidate ("after") and of the base model ("before") on the same dev pairs.

Nothing here touches the user's data: the base checkpoint is resolved (and converted from
the bundled GGUF once, ~25 s) under ``--home``, by default ``OUT/home``. The data sets are
read from the paths given, never copied into the repo.

    python benchmarks/hh_rlhf_dpo.py --train ../shared/data/hh_rlhf_harmless/train.jsonl \
        --dev ../shared/data/hh_rlhf_harmless/dev.jsonl --out /tmp/hh-dpo-run
    python benchmarks/hh_rlhf_dpo.py ... --max-pairs 40 --max-dev 32   # a quick timing run
    python benchmarks/hh_rlhf_dpo.py ... --max-pairs 406               # all train pairs

Output: ``OUT/results.json`` (``--json`` prints it), a short table on stdout, the child's
progress lines on stderr. The run folder stays in ``OUT/run`` (adapter, metrics.json,
gate.json, trainer.log). Bad input (a missing file, a line that is not a JSON object with
string "prompt", "chosen" and "rejected") is one line on stderr naming the file and line,
exit status 1.

The mean held-out log-prob margin (chosen - rejected, summed over the answer's tokens) is
reported beside the accuracy when the child's gate measures it (``preference_margin``);
this script loads no model itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from learnloop.learning.child import CycleFailed, train_in_child
from learnloop.learning.config import LearnConfig
from learnloop.learning.models import ModelNotFound, ResolvedModel, resolve_model
from learnloop.learning.tasks import TaskFileError, string_fields

Row = dict[str, Any]

PAIR_FIELDS = ("prompt", "chosen", "rejected")
RUN_SUBDIR = "run"
RESULTS_FILE = "results.json"

# Defaults sized for about 10 minutes on the 2-core CPU: the fastest DPO steps (4 of these
# pairs) took about 8 s, the gate about 1.4 s per dev pair, so all 406 pairs (102 steps)
# would take over a quarter of an hour. 50 steps is short, so the learning rate is the
# LoRA one of learnloop's SFT stage, not its DPO default (with 5e-5 the last logged
# rewards/margins was still -0.008 after 10 steps).
DEFAULT_MAX_PAIRS = 200
DEFAULT_EPOCHS = 1.0
DEFAULT_LEARNING_RATE = 2e-4
DEFAULT_BETA = 0.1
DEFAULT_MAX_LENGTH = 384  # the longest train pair is 546 tokens; one pair in 406 is longer


class BadInput(Exception):
    """A data file that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class Pair:
    """One single-turn preference pair; all three fields are non-empty strings."""

    prompt: str
    chosen: str
    rejected: str

    def to_dpo_row(self) -> Row:
        """TRL's conversational preference shape, as ``learning/datasets.py`` builds it."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


# --- input ------------------------------------------------------------------------------


def parse_pair(line: str, where: str) -> Pair:
    """One JSONL line as a Pair, or BadInput naming ``where`` (file and line)."""
    try:
        row = string_fields(line, where, PAIR_FIELDS)
    except TaskFileError as exc:
        raise BadInput(str(exc)) from exc
    return Pair(row["prompt"], row["chosen"], row["rejected"])


def read_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    """The pairs of a JSONL file in file order (blank lines skipped), at most ``limit``.

    Every line up to the limit is checked; a file without pairs is BadInput too.
    """
    if not path.is_file():
        raise BadInput(f"{path}: no such file")
    pairs: list[Pair] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(pairs) >= limit:
                break
            if line.strip():
                pairs.append(parse_pair(line, f"{path} line {number}"))
    if not pairs:
        raise BadInput(f"{path}: no preference pairs")
    return pairs


# --- the run folder ---------------------------------------------------------------------


def learn_config(args: argparse.Namespace) -> LearnConfig:
    """LearnConfig for a DPO-only run; the other fields keep learnloop's defaults."""
    return LearnConfig(
        method="dpo",
        dpo_epochs=args.epochs,
        dpo_learning_rate=args.learning_rate,
        dpo_beta=args.beta,
        max_length=args.max_length,
        seed=args.seed,
    )


def gate_spec() -> Row:
    """The gate as ``learning/snapshot.gate_request`` writes it with the base model active,
    held-out pairs only (no corrections, no control set)."""
    return {
        "active_version": "base",
        "active_adapter": None,
        "max_new_tokens": 16,
        "pairs": "heldout_pairs.jsonl",
        "fixes": None,
        "control": None,
    }


def write_jsonl(path: Path, rows: list[Row]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def write_run(
    run_dir: Path, model: ResolvedModel, config: LearnConfig, train: list[Pair], dev: list[Pair]
) -> None:
    """A fresh run folder in the trainer child's contract (``learning/trainer.py``).

    ``run_dir`` is this script's own folder: whatever an earlier run left there is removed
    (the child refuses to write over an adapter).
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    write_jsonl(run_dir / "dpo.jsonl", [p.to_dpo_row() for p in train])
    write_jsonl(run_dir / "heldout_pairs.jsonl", [p.to_dpo_row() for p in dev])
    request = {
        "base_model": model.path,
        "config": config.to_dict(),
        "dpo": "dpo.jsonl",
        "gate": gate_spec(),
    }
    (run_dir / "request.json").write_text(json.dumps(request, indent=2) + "\n")


# --- running ----------------------------------------------------------------------------


@contextlib.contextmanager
def learnloop_home(home: Path) -> Iterator[None]:
    """``LEARNLOOP_HOME`` set to ``home`` inside the block, restored after it."""
    previous = os.environ.get("LEARNLOOP_HOME")
    os.environ["LEARNLOOP_HOME"] = str(home)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LEARNLOOP_HOME", None)
        else:
            os.environ["LEARNLOOP_HOME"] = previous


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def relay(event: Row) -> None:
    """One progress line of the child (stage / step / total / loss) on stderr."""
    stage, step, total, loss = (event.get(k) for k in ("stage", "step", "total", "loss"))
    text = f"{stage}"
    if total:
        text += f" {step}/{total}"
    if isinstance(loss, int | float):
        text += f" loss {loss:.4f}"
    log(text)


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def before_after(gate: Row, key: str) -> Row:
    """``key`` of the gate's base side ("before") and candidate ("after"), and the change;
    None where the gate did not report it."""
    before, after = gate["active"].get(key), gate["candidate"].get(key)
    delta = None if before is None or after is None else after - before
    return {"before": before, "after": after, "delta": delta}


def summarise(
    args: argparse.Namespace,
    model: ResolvedModel,
    config: LearnConfig,
    sizes: tuple[int, int],
    metrics: Row,
    gate: Row,
    wall: float,
) -> Row:
    """results.json: inputs, config, before/after accuracy and the DPO stage's numbers.

    "before" is the base model (the gate's active side), "after" the trained candidate;
    both were measured by the child on the same dev pairs.
    """
    dpo = metrics["dpo"] or {}
    losses = dpo.get("losses") or []
    return {
        "benchmark": "hh_rlhf_dpo",
        "when": datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv,
        "data": {"train": str(args.train), "dev": str(args.dev)},
        "pairs": {"train": sizes[0], "dev": sizes[1]},
        "model": {"spec": model.spec, "name": model.name, "path": model.path},
        "config": config.to_dict(),
        "preference_accuracy": before_after(gate, "preference_accuracy"),
        "preference_margin": before_after(gate, "preference_margin"),
        "train": {
            "seconds": dpo.get("seconds"),
            "steps": dpo.get("steps"),
            "train_loss": dpo.get("train_loss"),  # mean over all steps (Trainer's figure)
            "final_loss": losses[-1] if losses else None,  # the last logged step
            "rewards/accuracies": dpo.get("rewards/accuracies"),
            "rewards/margins": dpo.get("rewards/margins"),
            "losses": losses,
        },
        "gate_seconds": metrics.get("gate_seconds"),
        "child_seconds": metrics.get("seconds"),
        "peak_rss_mb": metrics.get("peak_rss_mb"),
        "trainable_params": metrics.get("trainable_params"),
        "wall_seconds": round(wall, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg(),
            **package_versions(),
        },
        "run_dir": str(args.out / RUN_SUBDIR),
    }


def fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Row) -> str:
    """The short printed view of results.json."""
    train, cfg, pairs = results["train"], results["config"], results["pairs"]
    acc, margin = results["preference_accuracy"], results["preference_margin"]
    lines = [
        f"HH-RLHF harmless through learnloop DPO: {pairs['train']} train / {pairs['dev']} dev "
        f"pairs, {results['model']['name']}",
        f"config: {cfg['dpo_epochs']:g} epoch(s), lr {cfg['dpo_learning_rate']:g}, "
        f"beta {cfg['dpo_beta']:g}, max_length {cfg['max_length']}, batch {cfg['batch_size']}, "
        f"LoRA r{cfg['lora_r']}",
        "",
        f"{'held-out (dev) pairs':40} {'before (base)':>14} {'after (DPO)':>12} {'change':>8}",
        f"{'preference accuracy':40} {fmt(acc['before'], '.3f'):>14} "
        f"{fmt(acc['after'], '.3f'):>12} {fmt(acc['delta'], '+.3f'):>8}",
        f"{'mean log-prob margin, chosen - rejected':40} {fmt(margin['before'], '.2f'):>14} "
        f"{fmt(margin['after'], '.2f'):>12} {fmt(margin['delta'], '+.2f'):>8}",
        "",
        f"train: {train['steps']} steps in {fmt(train['seconds'], '.1f')} s; "
        f"loss mean {fmt(train['train_loss'], '.4f')}, last {fmt(train['final_loss'], '.4f')}; "
        f"last rewards/accuracies {fmt(train['rewards/accuracies'], '.3f')}, "
        f"rewards/margins {fmt(train['rewards/margins'], '.3f')}",
        f"gate {fmt(results['gate_seconds'], '.1f')} s; trainer child "
        f"{fmt(results['child_seconds'], '.1f')} s; peak RSS {results['peak_rss_mb']} MiB; "
        f"wall {results['wall_seconds']} s; {results['machine']['cpus']} CPUs",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, required=True, help="train pairs (JSONL)")
    ap.add_argument("--dev", type=Path, required=True, help="held-out pairs (JSONL)")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and run/")
    ap.add_argument("--home", type=Path, default=None, help="LEARNLOOP_HOME (default OUT/home)")
    ap.add_argument("--model", default=None, help="model spec for resolve_model (default SmolLM2)")
    ap.add_argument("--epochs", type=float, default=DEFAULT_EPOCHS, help="DPO epochs")
    ap.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    ap.add_argument("--beta", type=float, default=DEFAULT_BETA, help="DPO beta")
    ap.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH)
    ap.add_argument(
        "--max-pairs", type=int, default=DEFAULT_MAX_PAIRS, help="use the first N train pairs"
    )
    ap.add_argument("--max-dev", type=int, default=None, help="use the first N dev pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print results.json, not the table")
    args = ap.parse_args(argv)
    for name in ("max_pairs", "max_dev"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> Row:
    """Read, write the run folder, train and measure in the child; write results.json."""
    started = time.monotonic()
    train = read_pairs(args.train, args.max_pairs)
    dev = read_pairs(args.dev, args.max_dev)
    config = learn_config(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with learnloop_home(args.home or args.out / "home"):
        model = resolve_model(args.model, progress=False)
    run_dir = args.out / RUN_SUBDIR
    write_run(run_dir, model, config, train, dev)
    log(f"{len(train)} train / {len(dev)} dev pairs; trainer child in {run_dir}")
    metrics = train_in_child(run_dir, relay)
    gate = json.loads((run_dir / "gate.json").read_text())
    sizes = (len(train), len(dev))
    results = summarise(args, model, config, sizes, metrics, gate, time.monotonic() - started)
    (args.out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run(args)
    except (BadInput, ModelNotFound, CycleFailed, ValueError) as exc:
        print(f"hh_rlhf_dpo: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
