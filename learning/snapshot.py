"""A learning run's frozen inputs: what the cycle hands the trainer child, as files.

``runs/run-N/`` receives the training datasets (``sft.jsonl``, ``dpo.jsonl``,
``kto.jsonl``), the gate's inputs (held-out pairs and corrections, the control set, the
labelled task rows of ``--eval-file``), the
quality report and ``request.json`` tying them together. The store records which
feedback rows went into which dataset ('heldout' included) and a content hash.

The split is by thread: feedback from a held-out thread is only ever used to judge the
candidate, never to train it. Nothing is held out when the gate is off, when all feedback
sits in held-out threads, or when the held-out part would give fewer than
``--min-heldout`` items to judge by (a first handful of feedback all teaches): the gate
then judges the candidate by what it was taught (``taught_fixes``, ``taught_liked``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from learnloop.learning import control_cache
from learnloop.learning.chat_format import first_step
from learnloop.learning.config import LearnConfig
from learnloop.learning.datasets import (
    Datasets,
    as_labels,
    build_datasets,
    build_dpo,
    choose_method,
    corrected,
    liked,
    why_empty,
)
from learnloop.learning.models import ResolvedModel
from learnloop.learning.quality import QualityReport, clean, split_by_thread
from learnloop.learning.replay import continual
from learnloop.learning.tasks import (
    TaskFileError,
    is_tool_task,
    labels_of,
    read_labelled,
    read_tool_task,
    task_message,
)
from learnloop.storage.errors import Unprocessable
from learnloop.storage.records import FeedbackExample
from learnloop.storage.store import BASE_VERSION, Store


class NothingToLearn(Unprocessable):
    """No cycle ran: the message says why."""

    kind = "nothing_to_learn"
    api_prefix = "nothing to learn: "


@dataclass(frozen=True)
class Snapshot:
    data: Datasets
    quality: QualityReport
    heldout_pairs: list[dict[str, Any]]
    heldout_fixes: list[dict[str, Any]]
    heldout_ids: list[int]
    upto: int  # the newest feedback id considered
    taught_fixes: list[dict[str, Any]] = field(default_factory=list)  # corrections trained on
    taught_liked: list[dict[str, Any]] = field(default_factory=list)  # liked answers trained on
    sft_corrections: list[int] = field(default_factory=list)  # data.sft rows from corrections


def default_control_set() -> list[dict[str, str]]:
    shipped = resources.files("learnloop.learning").joinpath("control.jsonl")
    text = shipped.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def control_set(store: Store) -> list[dict[str, str]]:
    """The shipped control prompts plus the users' own."""
    return default_control_set() + [asdict(c) for c in store.control_prompts()]


def fixes_of(examples: list[FeedbackExample]) -> list[dict[str, Any]]:
    """The corrections as the gate scores them: the corrected trajectory (its first step
    is what a greedy answer must now give), with the tools the turn was offered."""
    rows = []
    for e in examples:
        fixed = corrected(e) if e.correction else None
        if fixed:
            rows.append({"prompt": e.messages, "completion": fixed, **_tools(e)})
    return rows


def _tools(e: FeedbackExample) -> dict[str, Any]:
    return {"tools": e.tools} if e.tools else {}


def liked_of(examples: list[FeedbackExample], cut_off_sentences: bool) -> list[dict[str, Any]]:
    """The thumbs-up answers (without a correction) as the gate scores them."""
    return [
        {"prompt": e.messages, "answer": first_step(target), **_tools(e)}
        for e in examples
        if not e.correction and (target := liked(e, cut_off_sentences))
    ]


def split(
    cleaned: list[FeedbackExample], config: LearnConfig
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """(train, held out). Held-out feedback only serves the gate: without a gate, or with
    too little of it to judge by (fewer than ``min_heldout`` items that are corrections or
    in a pair), all of it trains."""
    train, held = split_by_thread(cleaned, config.held_out_share if config.gate else 0.0)
    paired = build_dpo(held, config.cut_off_sentences)[1]
    judging = set(paired) | {e.feedback_id for e in held if e.correction}
    if not train or len(judging) < config.min_heldout:
        return cleaned, []
    return train, held


def build_snapshot(
    examples: list[FeedbackExample],
    config: LearnConfig,
    real_users: frozenset[str] = frozenset(),
    since: int | None = None,
) -> Snapshot:
    """Pure: clean, split by thread, build the datasets the method trains on.
    ``real_users`` are the names the per-user cap balances (learning/quality.py). With
    ``since`` (a cycle that starts from an adapter whose snapshot considered feedback up to
    that id) it trains on the newer rows and a replay of older ones (learning/replay.py);
    the held-out split is the same either way."""
    cleaned, quality = clean(examples, max_user_share=config.max_user_share, real_users=real_users)
    if config.liked_as_label:
        cleaned = as_labels(cleaned, config.label_words)
    train, held = split(cleaned, config)
    if since is not None:
        train = continual(train, since, config.replay, config.seed, config.max_new)
        if not train:
            raise NothingToLearn(
                "no feedback to train the active version's adapter on: none is newer than "
                "its own and --replay is 0; give more feedback, or `--start fresh`"
            )
    built = build_datasets(train, config.cut_off_sentences, config.dpo_balance)
    if built.empty:
        raise NothingToLearn(why_empty(train, config.cut_off_sentences))
    try:
        data = choose_method(built, config.method, config.min_pairs)
    except ValueError as exc:
        raise NothingToLearn(f"nothing to train with --method {config.method}: {exc}") from exc
    pairs, _ = build_dpo(held, config.cut_off_sentences)
    return Snapshot(
        data=data,
        quality=quality,
        heldout_pairs=pairs,
        heldout_fixes=fixes_of(held),
        heldout_ids=[e.feedback_id for e in held],
        upto=max(e.feedback_id for e in examples),
        sft_corrections=[i for i, row in enumerate(data.sft) if row in fixes_of(train)],
        taught_fixes=[] if held else fixes_of(train),
        taught_liked=[] if held else liked_of(train, config.cut_off_sentences),
    )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def task_rows(config: LearnConfig) -> list[dict[str, Any]]:
    """The gate's task rows as chat prompts (raises TaskFileError on a bad file): labelled
    rows, or a tool task's rows with the answer and the tool expected."""
    if not (config.gate and config.eval_file):
        return []
    path = Path(config.eval_file).expanduser()
    if is_tool_task(path):
        if not config.tools.strip():
            raise TaskFileError(
                f"{path} is a tool task (rows of text and answer): give the tools its "
                "answers need with --tools"
            )
        return [
            {
                "prompt": [
                    {"role": "user", "content": task_message(config.eval_instruction, t.text)}
                ],
                "answer": t.answer,
                "tool": t.calls[0]["name"] if t.calls else None,
            }
            for t in read_tool_task(path)[: config.eval_limit]
        ]
    given = config.label_words
    examples = read_labelled(path, given or None)
    examples = examples[: config.eval_limit]
    labels = given or labels_of(examples)
    return [
        {
            "prompt": [{"role": "user", "content": task_message(config.eval_instruction, e.text)}],
            "label": e.label,
            "labels": labels,
        }
        for e in examples
    ]


def measured_against(store: Store, model: ResolvedModel, active: str) -> tuple[str, str | None]:
    """The version a candidate is measured against while ``active`` is active, and its
    adapter folder: ``active`` itself, or the base when ``active`` was trained on another
    base model. It becomes the candidate's parent."""
    if active == BASE_VERSION:
        return BASE_VERSION, None
    version = store.get_version(active)
    if not model.trained(version):
        return BASE_VERSION, None  # trained on another base: compare with this base
    return active, version.adapter_path


@dataclass(frozen=True)
class Start:
    """The adapter a ``--start active`` cycle trains further: ``version``'s, in
    ``adapter``, whose own snapshot considered feedback up to id ``since``."""

    version: str
    adapter: str
    since: int


@dataclass(frozen=True)
class Given:
    """Weights a run starts from that no version of this data root holds: a federated
    round's global adapter (learning/federated/node.py). ``weights`` is a safetensors file
    of LoRA tensors in PEFT's names, copied into the run folder; ``train`` false: nothing
    trains, the adapter is gated and published as given; ``lineage`` is recorded with the
    version (round, nodes, aggregation)."""

    weights: Path
    train: bool
    lineage: dict[str, Any]


START_WEIGHTS_FILE = "start_weights.safetensors"


def start_from(
    store: Store, model: ResolvedModel, config: LearnConfig, active: str
) -> Start | None:
    """Where a cycle starts while ``active`` is active: None for a fresh adapter (``--start
    fresh``, the base model active, or a version of another base or without its files).
    A ``--start both`` cycle's first run starts here too; its second is fresh."""
    if config.start == "fresh" or active == BASE_VERSION:
        return None
    version = store.get_version(active)
    since = store.trained_upto(active)
    if not model.trained(version) or version.removed_at is not None or since is None:
        return None
    return Start(active, version.adapter_path, since)


def gate_request(
    store: Store,
    model: ResolvedModel,
    config: LearnConfig,
    active: str,
    control: list[dict[str, str]],
) -> dict[str, Any] | None:
    """What the trainer needs to measure the candidate against ``active`` (the version
    the caller read when it prepared the run), with the control scores known already."""
    if not config.gate:
        return None
    against, adapter = measured_against(store, model, active)
    return {
        "active_version": against,
        "active_adapter": adapter,
        "active_control": control_cache.known(control_cache.key(against, model, config, control)),
        "base_control": control_cache.known(
            control_cache.key(BASE_VERSION, model, config, control)
        ),
        "max_new_tokens": config.gate_max_new_tokens,
        "pairs": "heldout_pairs.jsonl",
        "fixes": "heldout_fixes.jsonl",
        "taught_fixes": "taught_fixes.jsonl",
        "taught_liked": "taught_liked.jsonl",
        "control": "control.jsonl",
        "task": "task.jsonl",
        "task_max_new_tokens": config.eval_max_new_tokens,
        "tools": [t.strip() for t in config.tools.split(",") if t.strip()],
    }


def write_snapshot(
    run_dir: Path,
    snap: Snapshot,
    model: ResolvedModel,
    config: LearnConfig,
    gate: dict[str, Any] | None,
    control: list[dict[str, str]],
    task: list[dict[str, Any]],
    start: Start | None = None,
    given: Given | None = None,
) -> None:
    data = snap.data
    if given is not None:
        shutil.copyfile(given.weights, run_dir / START_WEIGHTS_FILE)
    for name, rows in (
        ("sft", data.sft),
        ("dpo", data.dpo),
        ("kto", data.kto),
        ("heldout_pairs", snap.heldout_pairs),
        ("heldout_fixes", snap.heldout_fixes),
        ("taught_fixes", snap.taught_fixes),
        ("taught_liked", snap.taught_liked),
        ("control", control),
        ("task", task),
    ):
        _write_jsonl(run_dir / f"{name}.jsonl", rows)
    write_json(run_dir / "quality.json", asdict(snap.quality))
    write_json(
        run_dir / "request.json",
        {
            "base_model": model.path,
            "config": config.to_dict(),
            "sft": "sft.jsonl",
            "dpo": "dpo.jsonl",
            "kto": "kto.jsonl",
            "sft_corrections": snap.sft_corrections,
            "gate": gate,
            "start_adapter": start.adapter if start else None,
            "started_from": start.version if start else None,
            "start_weights": START_WEIGHTS_FILE if given else None,
            "train": given.train if given else True,
            "lineage": given.lineage if given else None,
        },
    )
