"""``learnloop bench``: a simulated user teaches the real agent a labelled task.

The user sends one training text per interaction (the instruction, a blank line, the
text) to the agent, exactly as a person would in a chat: the answer comes from the
LangGraph agent and is logged as a turn, the rating goes into the feedback table, and
the trigger (learning/triggers.py) starts a learning cycle in the background every
``--cycle-every`` interactions (one interaction: a text sent, rated, and in thumbs mode
regenerated and rated again after a miss). The cycle's gate decides, and the next answer
comes from whatever version is active then. Nothing goes around those parts.

The user judges an answer correct when it names exactly one label and that is the gold
one (learning/tasks.py). It gives a thumbs-up when correct, a thumbs-down otherwise,
and then either the gold label as a correction (``correct`` mode), or up to ``--regen``
regenerations, each rated the same way, stopping at the first correct one (``thumbs``).

Measurement: the base model and, after each cycle, the active version answer every
eval text greedily, each in a fresh thread that never gets feedback, so eval turns never
train anything. ``--gate-rows`` rows of the (shuffled) training file are set aside
before the interactions start and become the gate's labelled ``--eval-file``: the gate
judges candidates on task accuracy there, never on the eval split.

Invariant: the bench writes only under ``--out`` (its data root is ``OUT/home``).
The bench waits for each cycle to finish before the next interaction, so that on a
small machine training and chatting do not share the cores and each cycle's numbers
stand on their own; a person could go on chatting meanwhile.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from learnloop.agent.bench.config import BenchConfig, user_name
from learnloop.agent.bench.label_task import LabelTask
from learnloop.learning.config import LearnConfig
from learnloop.learning.tasks import (
    Example,
    TaskFileError,
)
from learnloop.learning.toolbox import NO_TOOLS
from learnloop.learning.trainer_output import training_seconds

Say = Callable[[str], None]


# Training defaults for the bench: many short examples; each cycle trains the active
# adapter further on the new feedback and a replay (learn's default start; --set
# start=fresh retrains from scratch on all feedback so far), within 10 minutes of training
# over 600 interactions on 2 cores.
# Measured on the snapshot of 300 `correct` interactions (150 dev texts): SFT 1 epoch at
# 2e-4 on q/k/v/o gave 0.72 accuracy (nearly always "neutral"); 6e-4 gave 0.82; adding the
# MLP projections gave 0.89, in 173 s. 1e-3 learned faster (0.906 after 300 interactions)
# but its continual steps lost control prompts (8 of 12 -> 3) and the gate stopped there,
# where 6e-4 went on to 0.943; 1e-3 fresh with 6e-4 steps after it stopped at 0.920
# (docs/benchmarks.md, "The LoRA recipe"). 1.5 epochs per step at 6e-4 reached 0.952
# (macro-F1 0.946) after 450 interactions and 0.929 after 300, against 0.922 and 0.895
# at one epoch. Batches of rows of one length (sft_group_by_length: the rows here are 62
# to 137 tokens, 19 % of a mixed batch padding) made its steps 4-9 % faster, and that run
# reached 0.960 (macro-F1 0.953) in 9.5 minutes of training (the thumbs and tool figures
# in docs/benchmarks.md were measured before it was a default here). SFT followed by
# DPO on the same corrections (the `auto` method) cost about 2 s per pair on top, which 4
# cycles cannot afford, so both modes train SFT alone (see MODE_LEARN for thumbs mode).
# The DPO rate is for `--set method=auto|dpo`: like SFT, DPO needs a LoRA-sized rate (the
# 5e-5 default barely moves a rank-16 adapter in one epoch).
BENCH_LEARN: dict[str, object] = {
    "sft_epochs": 1.5,
    "sft_group_by_length": True,
    "sft_learning_rate": 6e-4,
    "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    "dpo_epochs": 1.0,
    "dpo_learning_rate": 2e-4,
    "kto_epochs": 1.0,
    "held_out_share": 0.1,
    "max_length": 256,
    "gate_max_new_tokens": 32,
}


# What the gate must win on, per mode. Thumbs feedback on an imbalanced task (60% of
# these texts are neutral) pulls towards the commonest label, and accuracy rewards that:
# measured, a v1 that answered "neutral" to everything won on accuracy (0.61 vs 0.47) and,
# once active, never said anything else, so no right answer was left to learn from.
# Macro-F1 rejects such a version (0.25 vs the base's 0.35).
GATE_METRIC = {"correct": "task_accuracy", "thumbs": "task_macro_f1"}


# Per mode. In `correct` mode every miss brings the one-word label, which is the form to
# learn; a cut-off 👍 trimmed to its first sentence ("The sentence is generally considered
# positive.") would teach a second, longer form. In `thumbs` mode those sentences are the
# only positive examples (dropping them taught v1 to say "neutral" to everything).
# Thumbs mode trains SFT alone too: its DPO pairs are lopsided (the base model says
# "positive" to most texts, so nearly every pair rejects "positive": 7 of 146 chose it),
# and `auto` (SFT, then DPO at 2e-4) learned never to say positive (bench 0.598), where
# SFT alone on the same feedback measured 0.878 on the dev split. Balancing the pairs by
# what they reject (dpo_balance) did not mend it: the rejected answers are sentences, the
# chosen labels stayed lopsided (4 of 52 pairs chose "positive"), and the gate refused
# every SFT + DPO candidate, where SFT alone reached 0.931 (docs/benchmarks.md).
# Thumbs mode trains a liked answer as the label it names (liked_as_label): trained as
# said, "The sentence is generally considered positive." stayed a second form (exact
# format 0.61 after 600 interactions); as the label, v1 answered 0.864 with exact format
# 1.000 after 150 (docs/benchmarks.md).
MODE_LEARN: dict[str, dict[str, object]] = {
    "correct": {"method": "sft", "cut_off_sentences": False},
    "thumbs": {"method": "sft", "cut_off_sentences": True, "liked_as_label": True},
}


# A tool task's rows are longer: the tools' schemas in the system prompt (~200 tokens for
# one tool), the question, a call, its result and the answer; and the gate's answers are
# trajectories whose first step is a call of about 40 tokens. It has no label words, so a
# liked answer trains as said.
TOOL_ROOM = {"max_length": 512, "eval_max_new_tokens": 64}
TOOL_LEARN: dict[str, object] = {**TOOL_ROOM, "eval_labels": "", "liked_as_label": False}


def learn_settings(
    mode: str, overrides: dict[str, object], tools: bool = False, labels: str = ""
) -> dict[str, object]:
    """The bench's LearnConfig values for a feedback mode (and a tool task, or a labelled
    one's ``--labels``), then the user's --set."""
    task = TOOL_LEARN if tools else {"eval_labels": labels} if labels else {}
    return {**BENCH_LEARN, **MODE_LEARN[mode], **task, **overrides}


@dataclass
class Tally:
    up: int = 0
    down: int = 0
    corrections: int = 0
    regenerations: int = 0
    correct_first_try: int = 0


@dataclass
class Data:
    interactions: list[Example]
    eval: list[Example]
    gate: list[Example]


def task_of(config: BenchConfig) -> Any:
    """The bench's task: a tool task with --tools (agent/bench/tool_task.py), else a
    labelled one; a tools file that does not load is one clear line here."""
    if not config.tools.strip():
        return LabelTask(config.instruction, config.label_list, GATE_METRIC[config.feedback])
    from learnloop.agent.bench.tool_task import ToolTask
    from learnloop.learning.toolbox import load_tools

    specs = [t.strip() for t in config.tools.split(",") if t.strip()]
    return ToolTask(config.instruction, load_tools(specs), ",".join(specs))


def load_data(config: BenchConfig, task: Any) -> Data:
    """Read and check both files (errors name the file and line); split off the gate rows."""
    train = task.read(Path(config.train))
    evaluation = task.read(Path(config.eval))
    if len(train) <= config.gate_rows:
        raise TaskFileError(
            f"{config.train}: {len(train)} rows, but --gate-rows {config.gate_rows} are set "
            "aside for the gate; give more rows or a smaller --gate-rows"
        )
    # The file may be sorted (this one is, by label): shuffle before setting rows aside.
    random.Random(config.seed).shuffle(train)
    gate, pool = train[: config.gate_rows], train[config.gate_rows :]
    # More interactions than texts: the user goes through them again, in the same order.
    sent = [pool[i % len(pool)] for i in range(config.interactions)]
    if 0 < config.eval_limit < len(evaluation):  # a quick look: a sample, not the head
        evaluation = random.Random(config.seed).sample(evaluation, config.eval_limit)
    return Data(interactions=sent, eval=evaluation, gate=gate)


@dataclass
class Job:
    """One task the user teaches: its rows, the learn settings whose gate judges it, and
    (once the bench runs) the agents that answer it: ``chat`` samples as a person's chat
    does, ``judge`` answers the eval rows greedily. Two jobs share one model."""

    task: Any  # LabelTask or agent/bench/tool_task.py ToolTask
    data: Data
    learn: LearnConfig
    answer_tokens: int
    chat: Any = None
    judge: Any = None


class Bench:
    """One benchmark run; see the module docstring."""

    def __init__(self, config: BenchConfig, jobs: list[Job], model_spec: str | None) -> None:
        self.config = config
        self.jobs = jobs  # the first task, and the second after --switch-at
        self.model_spec = model_spec
        self.tally = Tally()

    def start(self) -> Any:
        """Load the model once; give every job its chat and judge agents."""
        from learnloop.agent.config import GenerationConfig
        from learnloop.agent.runtime import Agent, load_agent
        from learnloop.storage.store import Store

        store, backend = Store(), None
        for job in self.jobs:
            toolbox = getattr(job.task, "toolbox", NO_TOOLS)
            chat_settings = GenerationConfig(
                max_new_tokens=job.answer_tokens,
                temperature=self.config.temperature,
                seed=self.config.seed,
            )
            if backend is None:
                job.chat = load_agent(store, self.model_spec, chat_settings, toolbox)
                backend = job.chat.backend
            else:
                job.chat = Agent(store, backend, chat_settings, toolbox=toolbox)
            greedy = GenerationConfig(max_new_tokens=job.answer_tokens, temperature=0)
            job.judge = Agent(store, backend, greedy, toolbox=toolbox)  # same model, greedy
        return store

    def run(self, say: Say) -> dict[str, Any]:
        from learnloop.learning.triggers import TriggerConfig

        started = time.perf_counter()
        store = self.start()
        # due whenever anything new was rated; asked every --cycle-every interactions
        trigger = TriggerConfig(learn_after=1, learn_every_minutes=0)
        sent = [(job, row) for job in self.jobs for row in job.data.interactions]
        base = self.measure_all(say, "base")
        cycles: list[dict[str, Any]] = []
        last = base
        for done, (job, row) in enumerate(sent, start=1):
            self.interact(job, row, user_name(done, self.config.users))
            due = done % self.config.cycle_every == 0
            cycle = self.maybe_learn(job, trigger, say) if due else None
            if cycle is not None:
                last = self.after_cycle(last, say)
                cycles.append(
                    {"interactions": done, **cycle, "active_version": last["version"]}
                    | scores_of(last)
                )
            if done % 25 == 0:
                say(f"{done}/{len(sent)} interactions · {self.tally}")
            store.release()
        store.release()
        forgotten = self.forget(store, say) if self.config.forget else None
        return {
            "base": base,
            "cycles": cycles,
            "final": {"version": last["version"]} | scores_of(last),
            "forget": forgotten,
            "feedback": asdict(self.tally),
            "interactions": len(sent),
            "train_seconds": round(sum(c["train_seconds"] for c in cycles), 1),
            "energy_wh": round(sum(c.get("energy_wh") or 0.0 for c in cycles), 3),
            "wall_seconds": round(time.perf_counter() - started, 1),
        }

    def forget(self, store: Any, say: Say) -> dict[str, Any]:
        """``learnloop forget --user`` on the bench's data root, with the learn settings
        of the task taught last, and the scores of what is active afterwards."""
        from learnloop.agent.service import LocalService

        job = self.jobs[-1]
        service = LocalService(store, self.model_spec, learn=job.learn)
        say(f"forgetting {self.config.forget}")
        done = service.forget(self.config.forget, who="bench")
        say(f"forgot {self.config.forget} in {done['seconds']} s; {done['active']} is active")
        return done | {"after": scores_of(self.measure_all(say, done["active"]))}

    def interact(self, job: Job, row: Example, user: str) -> None:
        """One user message, the rating, and a correction or regenerations after a miss."""
        answer = job.chat.ask(job.task.message(row), user=user)
        right = self.rate(job, answer, row, user)
        self.tally.correct_first_try += right
        if right:
            return
        if self.config.feedback == "correct":
            return
        for _ in range(self.config.regen):
            self.tally.regenerations += 1
            again = job.chat.ask("", regen_of=answer.turn_id, user=user)
            if self.rate(job, again, row, user):
                return

    def rate(self, job: Job, answer: Any, row: Any, user: str) -> bool:
        store, turn_id = job.chat.store, answer.turn_id
        if job.task.judge(answer, row):
            store.add_feedback(turn_id, "up", user_name=user)
            self.tally.up += 1
            return True
        if self.config.feedback == "correct":
            text, steps = job.task.correction(row)
            store.add_feedback(
                turn_id, "down", correction=text, correction_messages=steps, user_name=user
            )
            self.tally.corrections += 1
        else:
            store.add_feedback(turn_id, "down", user_name=user)
        self.tally.down += 1
        return False

    def maybe_learn(self, job: Job, trigger: Any, say: Say) -> dict[str, Any] | None:
        """Ask the trigger; when it starts a cycle (judged by the gate on ``job``'s task,
        the one being taught), wait for it and read its outcome."""
        from learnloop.learning.triggers import maybe_start

        store = job.chat.store
        before = len(store.runs())
        due, child = maybe_start(store, trigger, self.model_spec, job.learn, "bench")
        if child is None:
            return None
        say(f"learning cycle started ({due.reason})")
        child.wait()
        runs = store.runs()[before:]
        if not runs:
            say("no cycle ran: see runs/background.log")
            return None
        first, *then = [self.outcome(store, run, say) for run in runs]
        if not then:
            return first
        # --start both: the fresh run after the continual one; the cycle cost both
        costs = ("train_seconds", "cpu_seconds", "energy_wh")
        return first | {k: round(first[k] + then[0][k], 3) for k in costs} | {"then": then[0]}

    def outcome(self, store: Any, run: Any, say: Say) -> dict[str, Any]:
        """What learning run ``run`` made, and what it cost."""
        if run.status != "succeeded" or run.version_id is None:
            raise RuntimeError(f"learning run {run.id} {run.status}: {run.error}")
        version = store.get_version(run.version_id)
        metrics, gate = version.metrics, version.gate or {}
        say(f"{version.id} {version.status}: " + "; ".join(gate.get("reasons", [])))
        return {
            "version": version.id,
            "promoted": version.status == "promoted",
            "reasons": gate.get("reasons", []),
            "method": version.method,
            "examples": {
                "sft": version.sft_count,
                "dpo": version.dpo_count,
                "kto": version.kto_count,
            },
            "feedback": asdict(self.tally),
            "train_seconds": round(training_seconds(metrics), 1),
            "gate_seconds": metrics.get("gate_seconds"),
            "cpu_seconds": metrics.get("cpu_seconds") or 0.0,  # the trainer's, gate included
            "energy_wh": metrics.get("energy_wh") or 0.0,
            "started_from": version.started_from,
            "kl": gate.get("kl"),
            "peak_rss_mb": metrics.get("peak_rss_mb"),
            "gate": {side: _gate_numbers(gate.get(side)) for side in ("candidate", "active")},
        }

    def after_cycle(self, last: dict[str, Any], say: Say) -> dict[str, Any]:
        """Score the active version (reloaded the way a chat reloads it)."""
        chat = self.jobs[0].chat
        chat.sync_version()
        active = chat.backend.version
        if active == last["version"]:
            return last  # same weights, greedy answers: the same scores
        return self.measure_all(say, active)

    def measure_all(self, say: Say, version: str) -> dict[str, Any]:
        """The first task's scores, and the second's under ``second`` when there is one."""
        first, *rest = [self.measure(job, say, version) for job in self.jobs]
        return first | ({"second": rest[0]} if rest else {})

    def measure(self, job: Job, say: Say, version: str) -> dict[str, Any]:
        job.chat.sync_version()
        rows = job.data.eval
        answers = []
        for done, row in enumerate(rows, start=1):
            answers.append(job.judge.ask(job.task.message(row)))
            job.judge.store.release()
            if done % 100 == 0 and done < len(rows):  # 477 texts take about 8 minutes
                say(f"{version}: {done}/{len(rows)} eval texts answered")
        result = {"version": job.chat.backend.version, **job.task.score(answers, rows)}
        said = ", ".join(
            f"{k.replace('_', ' ')} {result[k]:.3f}"
            for k in (
                "accuracy",
                "macro_f1",
                "exact_format",
                "tool_use",
                "attempted",
                "well_formed",
            )
            if result.get(k) is not None
        )
        say(f"{version}: {said} on {len(rows)} eval texts")
        return result


SCORE_KEYS = (
    "answers",
    "accuracy",
    "macro_f1",
    "exact_format",
    "predicted",
    "tool_use",
    "attempted",
    "well_formed",
)


def score_keys(result: dict[str, Any]) -> list[str]:
    return [k for k in SCORE_KEYS if k in result]


def scores_of(result: dict[str, Any]) -> dict[str, Any]:
    """A measurement's scores (and the second task's, under ``second``)."""
    kept = {k: result[k] for k in score_keys(result)}
    if "second" in result:
        kept["second"] = {k: result["second"][k] for k in score_keys(result["second"])}
    return kept


def _gate_numbers(side: dict[str, Any] | None) -> dict[str, Any] | None:
    if side is None:
        return None
    keep = (
        "task_accuracy",
        "task_macro_f1",
        "preference_accuracy",
        "correction_match",
        "control_accuracy",
        "control_logp_per_token",
    )
    return {k: side.get(k) for k in keep}


def control_check(results: dict[str, Any], learn: LearnConfig) -> dict[str, Any] | None:
    """The final version's control-set numbers against the base's, with the gate's limits."""
    cycles = results["cycles"]
    final = results["final"]["version"]
    base = next((c["gate"]["active"] for c in cycles if c["gate"]["active"]), None)
    mine = next((c["gate"]["candidate"] for c in cycles if c["version"] == final), None)
    if base is None or mine is None:
        return None
    held = (
        mine["control_accuracy"] >= base["control_accuracy"] - learn.control_max_drop
        and mine["control_logp_per_token"]
        >= base["control_logp_per_token"] - learn.control_max_logp_drop
    )
    return {
        "base_accuracy": base["control_accuracy"],
        "final_accuracy": mine["control_accuracy"],
        "base_logp_per_token": base["control_logp_per_token"],
        "final_logp_per_token": mine["control_logp_per_token"],
        "within_threshold": held,
    }


def job_of(config: BenchConfig, learn: LearnConfig, gate_file: Path) -> Job:
    """A task's job: its rows read and checked (errors name the file and line), its gate
    rows written to ``gate_file`` and named in its learn settings."""
    task = task_of(config)
    data = load_data(config, task)
    gate_file.parent.mkdir(parents=True, exist_ok=True)
    task.gate_file(data.gate, gate_file)
    if data.gate:
        gate: dict[str, Any] = {"eval_file": str(gate_file), "eval_instruction": config.instruction}
        learn = replace(learn, **gate, **task.gate_settings())
    else:
        learn = replace(learn, gate_metric="correction_match")
    return Job(task, data, learn, config.answer_tokens)


def run_bench(
    config: BenchConfig, learn: LearnConfig, model_spec: str | None, say: Say
) -> dict[str, Any]:
    """Check the inputs, run the bench in ``OUT/home``, write results.json and the plot."""
    from learnloop.agent.bench.curve import plot_learning_curve
    from learnloop.storage.errors import UsageError

    out = Path(config.out)
    if (out / "results.json").exists() or (out / "home").exists():
        raise UsageError(f"{out} holds an earlier bench run; give a new --out folder")
    second = config.second()
    first = replace(config, interactions=config.switch_at, switch_at=0) if second else config
    jobs = [job_of(first, learn, out / "gate-rows.jsonl")]
    if second is not None:
        if second.tools.strip():  # TOOL_LEARN: the first task's labels go, its room grows
            room = {k: max(getattr(learn, k), v) for k, v in TOOL_ROOM.items()}
            learn = replace(learn, **{**TOOL_LEARN, **room})
        jobs.append(job_of(second, learn, out / "gate-rows-2.jsonl"))
    os.environ["LEARNLOOP_HOME"] = str(out / "home")
    results = Bench(config, jobs, model_spec).run(say)
    results = {"config": asdict(config), "learn_config": jobs[0].learn.to_dict(), **results}
    results["control"] = control_check(results, jobs[0].learn)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_learning_curve(results, out / "learning_curve.png")
    return results
