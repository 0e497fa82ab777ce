"""The trainer child's input: ``request.json`` and the JSON-lines files it names.

Reading and checking happen before any heavy import, so a bad run folder fails in a
fraction of a second with one clear line (exit status 2). The shapes are TRL's
conversational dataset formats; see ``learning/trainer.py`` for the whole contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learnloop.learning.config import LearnConfig

REQUEST_FILE = "request.json"

SFT_KEYS = ("prompt", "completion")
DPO_KEYS = ("prompt", "chosen", "rejected")
KTO_KEYS = ("prompt", "completion", "label")

Row = dict[str, Any]


class TrainerError(Exception):
    """A problem with the run folder or request, reported as one line (exit status 2)."""


@dataclass(frozen=True)
class Request:
    base_model: Path
    config: LearnConfig
    sft: list[Row]
    dpo: list[Row]
    kto: list[Row]
    gate: dict[str, Any] | None  # what learning/evaluate.py needs, or None: no gate
    sft_corrections: list[int] = field(default_factory=list)  # SFT rows that are corrections
    start_adapter: Path | None = None  # the adapter to train further (None: a fresh one)
    # LoRA weights loaded into the fresh adapter before training (a federated round's
    # global adapter); with ``train`` false the adapter is only saved and measured
    start_weights: Path | None = None
    train: bool = True


# --- reading the request (no heavy imports: bad input fails fast) -----------------------


def read_request(run_dir: Path) -> Request:
    path = run_dir / REQUEST_FILE
    if not path.is_file():
        raise TrainerError(f"no {REQUEST_FILE} in {run_dir}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainerError(f"{REQUEST_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("base_model"), str):
        raise TrainerError(f'{REQUEST_FILE} must be an object with a "base_model" path')
    base_model = Path(raw["base_model"])
    if not (base_model / "config.json").is_file():
        raise TrainerError(f"base model {base_model} is not a checkpoint folder (no config.json)")
    config_values = raw.get("config") or {}
    if not isinstance(config_values, dict):
        raise TrainerError(f'{REQUEST_FILE}: "config" must be an object of learn settings')
    try:
        config = LearnConfig(**config_values)
    except (TypeError, ValueError) as exc:  # an unknown setting; one out of its bounds
        raise TrainerError(f"{REQUEST_FILE} config: {exc}") from exc
    sft = read_rows(run_dir, raw.get("sft"), SFT_KEYS)
    dpo = read_rows(run_dir, raw.get("dpo"), DPO_KEYS)
    kto = read_rows(run_dir, raw.get("kto"), KTO_KEYS)
    train = raw.get("train", True)
    if not isinstance(train, bool):
        raise TrainerError(f'{REQUEST_FILE}: "train" must be true or false')
    if train and not sft and not dpo and not kto:
        raise TrainerError("no training rows: the SFT, DPO and KTO files are all missing or empty")
    gate = raw.get("gate")
    if gate is not None and not isinstance(gate, dict):
        raise TrainerError(f'{REQUEST_FILE}: "gate" must be an object or null')
    fixes = raw.get("sft_corrections") or []
    if not isinstance(fixes, list) or not all(
        isinstance(i, int) and 0 <= i < len(sft) for i in fixes
    ):
        raise TrainerError(f'{REQUEST_FILE}: "sft_corrections" must list SFT row numbers')
    start = raw.get("start_adapter")
    if start is not None and not (isinstance(start, str) and Path(start).is_dir()):
        raise TrainerError(f'{REQUEST_FILE}: "start_adapter" {start!r} is not an adapter folder')
    weights = raw.get("start_weights")
    if weights is not None and not (isinstance(weights, str) and (run_dir / weights).is_file()):
        raise TrainerError(f'{REQUEST_FILE}: "start_weights" {weights!r} is not a file of the run')
    if not train and start is None and weights is None:
        raise TrainerError(f'{REQUEST_FILE}: "train": false needs a start adapter or weights')
    return Request(
        base_model,
        config,
        sft,
        dpo,
        kto,
        gate,
        fixes,
        Path(start) if start else None,
        run_dir / weights if weights else None,
        train,
    )


def read_rows(run_dir: Path, name: object, keys: tuple[str, ...]) -> list[Row]:
    """Rows of one JSON-lines file; a missing name or file means no rows."""
    if name is None:
        return []
    if not isinstance(name, str):
        raise TrainerError(f"{REQUEST_FILE}: dataset file names must be strings, got {name!r}")
    path = run_dir / name
    if not path.is_file():
        return []
    rows: list[Row] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                rows.append(parse_row(line, keys, f"{name} line {number}"))
    return rows


def parse_row(line: str, keys: tuple[str, ...], where: str) -> Row:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TrainerError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise TrainerError(f"{where}: expected a JSON object")
    for key in keys:
        if key == "label":
            if not isinstance(row.get(key), bool):
                raise TrainerError(f"{where}: 'label' must be true or false")
        else:
            check_messages(row.get(key), f"{where}: {key!r}")
    # TRL infers the dataset type from the columns, so stray columns are dropped; a
    # ``tools`` column (the schemas a trajectory's turn was offered) is TRL's own.
    kept = {key: row[key] for key in keys}
    if row.get("tools") is not None:
        if not isinstance(row["tools"], list) or not all(_is_schema(t) for t in row["tools"]):
            raise TrainerError(f"{where}: 'tools' must be a list of function schemas")
        kept["tools"] = row["tools"]
    return kept


def _is_schema(tool: object) -> bool:
    return (
        isinstance(tool, dict)
        and tool.get("type") == "function"
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
    )


def check_messages(value: object, where: str) -> None:
    """A non-empty list of messages in OpenAI's shape (storage/records.py): each with a
    string ``role`` and ``content``, except an assistant message that calls tools (its
    content may be null) and a tool result, which names its call."""
    if not isinstance(value, list) or not value:
        raise TrainerError(f"{where} must be a non-empty list of messages")
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise TrainerError(f'{where} holds a message without a string "role"')
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list)
            and all(
                isinstance(c, dict)
                and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str)
                and isinstance(c["function"].get("arguments"), str)
                for c in calls
            )
        ):
            raise TrainerError(f"{where} holds tool_calls that are not OpenAI's shape")
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and calls):
            raise TrainerError(f'{where} holds a message without string "content"')
