"""``learnloop federate simulate``: the federation measured against its alternatives.

Simulated users (agent/bench/simulated_user.py) teach a labelled task on K nodes, each
its own data root under ``OUT/nodes/``; each node sees mostly one label (non-IID, see
:func:`split_non_iid`). Then, from the same feedback:

- ``federated``: R rounds of the Flower Simulation Engine (learning/federated/), one run
  per aggregation rule asked for (``federated`` is the first; ``rules`` has each);
- ``local``: each node trained on its own feedback alone (the mean over the nodes);
- ``centralized``: one adapter trained on every node's feedback together.

Every adapter is trained with the same learn settings (the bench's, then ``--set``) and
scored on the eval rows by greedy answers from transformers (fp32, the gate's engine),
with the bench's scores (accuracy, macro-F1, exact format). ``OUT/results.json`` holds
them, the split, the bytes each round sent and the seconds each part took.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from learnloop.agent.bench.config import BenchConfig
from learnloop.agent.bench.label_task import LabelTask, score_adapters
from learnloop.learning.config import LearnConfig
from learnloop.learning.federated.aggregate import RULES
from learnloop.learning.federated.environ import environment
from learnloop.learning.tasks import Example, label_words

Say = Callable[[str], None]


@dataclass(frozen=True)
class SimulateConfig:
    train: str = field(default="", metadata={"help": "JSONL {text, label} rows the users send"})
    eval: str = field(default="", metadata={"help": "JSONL {text, label} rows to score on"})
    instruction: str = field(default="", metadata={"help": "sent before each text"})
    labels: str = field(default="", metadata={"help": "comma-separated label words"})
    out: str = field(default="", metadata={"help": "a new folder for results.json and data"})
    nodes: int = field(default=4, metadata={"help": "simulated nodes (K)"})
    rounds: int = field(default=3, metadata={"help": "federated rounds (R)"})
    interactions: int = field(default=150, metadata={"help": "texts sent on each node"})
    feedback: str = field(default="correct", metadata={"help": "correct | thumbs, as in bench"})
    aggregation: str = field(
        default="fedavg",
        metadata={"help": "comma-separated rules to measure: fedavg, svd, ffa"},
    )
    home_share: float = field(
        default=0.8,
        metadata={
            "help": "non-IID: the share of a node's texts that carry its own label (node i: "
            "label i mod L); the rest are drawn from the other labels alike"
        },
    )
    eval_limit: int = field(default=0, metadata={"help": "score a seeded sample (0: all)"})
    seed: int = field(default=0, metadata={"help": "the split, the sampling, the adapters"})

    def __post_init__(self) -> None:
        for name in ("train", "eval", "out", "instruction"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"--{name} is required")
        if len(label_words(self.labels)) < 2:
            raise ValueError("--labels needs at least two comma-separated label words")
        if self.nodes < 2 or self.rounds < 1 or self.interactions < 1:
            raise ValueError("--nodes must be at least 2, --rounds and --interactions 1")
        unknown = set(self.rules) - set(RULES)
        if unknown or not self.rules:
            raise ValueError(f"--aggregation takes {', '.join(RULES)}, not {self.aggregation!r}")
        if not 0 <= self.home_share <= 1:
            raise ValueError("--home-share must lie between 0 and 1")

    @property
    def rules(self) -> list[str]:
        return [r.strip() for r in self.aggregation.split(",") if r.strip()]

    def bench(self) -> BenchConfig:
        """The simulated user's settings on one node."""
        return BenchConfig(
            train=self.train, eval=self.eval, instruction=self.instruction, labels=self.labels,
            out=self.out, interactions=self.interactions, feedback=self.feedback,
            seed=self.seed, gate_rows=0,
        )  # fmt: skip


def split_non_iid(
    rows: list[Example], labels: list[str], nodes: int, per_node: int, share: float, seed: int
) -> list[list[Example]]:
    """Pure: ``per_node`` rows for each node, no row on two nodes. Node ``i``'s home label
    is ``labels[i % len(labels)]``; ``share`` of its rows carry it, the rest are drawn at
    random from the rows of the other labels. When those run out, its own label fills in."""
    pools: dict[str, list[Example]] = {label: [] for label in labels}
    for row in rows:
        pools.setdefault(row.label, []).append(row)
    rng = random.Random(seed)
    for pool in pools.values():
        rng.shuffle(pool)
    parts: list[list[Example]] = []
    for i in range(nodes):
        home = labels[i % len(labels)]
        mine = [pools[home].pop() for _ in range(min(round(share * per_node), len(pools[home])))]
        rest = [row for label, pool in pools.items() for row in pool if label != home]
        rng.shuffle(rest)
        rest += pools[home]  # only when the other labels run out
        for row in rest[: per_node - len(mine)]:
            pools[row.label].remove(row)
            mine.append(row)
        rng.shuffle(mine)
        parts.append(mine)
    return parts


def collect_feedback(
    config: SimulateConfig, learn: LearnConfig, parts: list[list[Example]],
    model_spec: str | None, say: Say,
) -> list[dict[str, Any]]:  # fmt: skip
    """The simulated user on each node's data root; each node's tally."""
    from learnloop.agent.bench.simulated_user import Bench, Data, Job

    task = LabelTask(config.instruction, label_words(config.labels), "task_accuracy")
    tallies = []
    for k, rows in enumerate(parts):
        job = Job(task, Data(rows, [], []), learn, config.bench().answer_tokens)
        bench = Bench(config.bench(), [job], model_spec)
        with environment({"LEARNLOOP_HOME": str(node_root(config, k))}):
            store = bench.start()
            for row in rows:
                bench.interact(job, row, f"node{k}")
            store.close()
        tallies.append(asdict(bench.tally))
        say(f"node{k}: {len(rows)} interactions · {bench.tally}")
    return tallies


def node_root(config: SimulateConfig, k: int) -> Path:
    return Path(config.out) / "nodes" / f"node{k}"


def examples_of(root: Path) -> tuple[list[Any], list[dict[str, str]]]:
    """A node's feedback and control set."""
    from learnloop.learning.snapshot import control_set
    from learnloop.storage.store import Store

    with environment({"LEARNLOOP_HOME": str(root)}), Store() as store:
        return store.feedback_examples(), control_set(store)


def train_alone(
    config: SimulateConfig, learn: LearnConfig, model: Any, say: Say
) -> tuple[dict[str, Path], dict[str, float]]:
    """Each node on its own feedback, and all nodes' feedback together: adapter folders
    under OUT/local and OUT/centralized, and the seconds each took."""
    from learnloop.learning.federated.node import train_examples

    out, folders, seconds = Path(config.out), {}, {}
    everything: list[Any] = []
    control: list[dict[str, str]] = []
    for k in range(config.nodes):
        examples, control = examples_of(node_root(config, k))
        everything += examples
        began = time.perf_counter()
        folders[f"node{k}"] = out / "local" / f"node{k}"
        train_examples(examples, frozenset(), control, model, learn, keep=folders[f"node{k}"])
        seconds[f"node{k}"] = time.perf_counter() - began
        say(f"local node{k}: trained in {seconds[f'node{k}']:.0f} s")
    began = time.perf_counter()
    folders["centralized"] = out / "centralized"
    with environment({"LEARNLOOP_HOME": str(out / "centralized-home")}):  # its scratch
        train_examples(everything, frozenset(), control, model, learn, keep=folders["centralized"])
    seconds["centralized"] = time.perf_counter() - began
    say(f"centralized: trained in {seconds['centralized']:.0f} s")
    shutil.rmtree(out / "centralized-home", ignore_errors=True)
    return folders, seconds


def federate(
    config: SimulateConfig, learn: LearnConfig, model: Any, rule: str, like: Path, say: Say
) -> tuple[Path, dict[str, Any]]:
    """R simulated rounds with ``rule``; the final adapter as a folder (its config
    copied from ``like``, an adapter trained with the same settings) and results.json."""
    from learnloop.learning.federated.settings import FederationSettings
    from learnloop.learning.federated.simulation import simulate_rounds

    out = Path(config.out) / f"federated-{rule}"
    settings = FederationSettings(
        name=f"simulate-{rule}", rounds=config.rounds, min_nodes=config.nodes,
        aggregation=rule, adopt=False, learn=json.dumps(learn.to_dict()),
    )  # fmt: skip
    began = time.perf_counter()
    results = simulate_rounds(out, Path(config.out) / "nodes", config.nodes, settings, model.path)
    folder = out / "adapter"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(like / "adapter_config.json", folder / "adapter_config.json")
    shutil.copyfile(results["final_adapter"], folder / "adapter_model.safetensors")
    results["seconds"] = round(time.perf_counter() - began, 1)
    say(f"federated ({rule}): {config.rounds} rounds in {results['seconds']:.0f} s")
    return folder, results


def eval_rows(config: SimulateConfig) -> list[Example]:
    task = LabelTask(config.instruction, label_words(config.labels), "task_accuracy")
    rows = task.read(Path(config.eval))
    if 0 < config.eval_limit < len(rows):
        rows = random.Random(config.seed).sample(rows, config.eval_limit)
    return rows


def run_simulate(
    config: SimulateConfig, learn: LearnConfig, model_spec: str | None, say: Say
) -> dict[str, Any]:
    """The whole measurement; writes and returns OUT/results.json."""
    from learnloop.learning.models import resolve_model
    from learnloop.storage.errors import UsageError

    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; give a new --out folder")
    labels = label_words(config.labels)
    train = LabelTask(config.instruction, labels, "task_accuracy").read(Path(config.train))
    rows = eval_rows(config)
    if len(train) < config.nodes * config.interactions:
        raise UsageError(f"{config.train} has {len(train)} rows, fewer than --nodes x "
                         f"--interactions ({config.nodes * config.interactions})")  # fmt: skip
    model = resolve_model(model_spec)
    learn = replace(learn, seed=config.seed)  # every node's fresh adapter starts alike
    parts = split_non_iid(train, labels, config.nodes, config.interactions,
                          config.home_share, config.seed)  # fmt: skip
    began = time.perf_counter()
    tallies = collect_feedback(config, learn, parts, model_spec, say)
    feedback_seconds = time.perf_counter() - began
    folders, seconds = train_alone(config, learn, model, say)
    federated = {}
    for rule in config.rules:
        ruled = replace(learn, lora_freeze_a=True) if rule == "ffa" else learn
        folder, federated[rule] = federate(config, ruled, model, rule, folders["node0"], say)
        folders[f"federated-{rule}"] = folder
    scores = score_adapters(model.path, {"base": None, **folders}, rows, config.instruction,
                            label_words(config.labels), learn.eval_max_new_tokens, say)  # fmt: skip
    results = summary(config, learn, parts, tallies, scores, federated, seconds)
    results["feedback_seconds"] = round(feedback_seconds, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def summary(
    config: SimulateConfig, learn: LearnConfig, parts: list[list[Example]],
    tallies: list[dict[str, Any]], scores: dict[str, dict[str, Any]],
    federated: dict[str, dict[str, Any]], seconds: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    keys = ("accuracy", "macro_f1", "exact_format")
    local = [scores[f"node{k}"] for k in range(config.nodes)]
    rules = {
        rule: {k: scores[f"federated-{rule}"][k] for k in keys}
        | {
            "bytes_per_round": [r["bytes_to_nodes"] + r["bytes_from_nodes"]
                                for r in result["rounds"]],
            "truncation_error": [r["truncation_error"] for r in result["rounds"]],
            "seconds": result["seconds"],
        }
        for rule, result in federated.items()
    }  # fmt: skip
    return {
        "config": asdict(config),
        "learn_config": learn.to_dict(),
        "split": [{label: sum(r.label == label for r in part)
                   for label in label_words(config.labels)} for part in parts],
        "feedback": tallies,
        "base": {k: scores["base"][k] for k in keys},
        "federated": rules[config.rules[0]] | {"rule": config.rules[0]},
        "rules": rules,
        "local": {k: round(sum(s[k] for s in local) / len(local), 4) for k in keys}
        | {"nodes": [{k: s[k] for k in keys} for s in local]},
        "centralized": {k: scores["centralized"][k] for k in keys},
        "bytes_per_round": rules[config.rules[0]]["bytes_per_round"],
        "train_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }  # fmt: skip


def simulate_table(results: dict[str, Any]) -> str:
    """results.json as a table: each way of training, its scores."""
    rows = [("base", results["base"]), ("local (mean)", results["local"]),
            ("centralized", results["centralized"])]  # fmt: skip
    rows += [(f"federated {rule}", r) for rule, r in results["rules"].items()]
    lines = [f"{'':18} {'accuracy':>8} {'macro-F1':>8} {'format':>7}"]
    for name, r in rows:
        scores = f"{r['accuracy']:8.3f} {r['macro_f1']:8.3f} {r['exact_format']:7.3f}"
        lines.append(f"{name:18} {scores}")
    for rule, r in results["rules"].items():
        sent = ", ".join(f"{b / 1e6:.1f}" for b in r["bytes_per_round"])
        lines.append(f"{rule}: MB per round {sent}; {r['seconds']:.0f} s")
    return "\n".join(lines)
