"""Task data: reading it, turning a row into a chat message, judging an answer.

One definition serves the gate's task accuracy (``--eval-file``) and ``learnloop bench``,
so the benchmark's simulated user and the gate judge answers the same way. Two kinds of
task:

- *labelled* rows ``{"text", "label"}``: an answer *names* a label when the label occurs
  in it as a whole word (any case); it is *correct* when it names exactly one label and
  that label is the gold one; it has the *exact format* when, stripped of case,
  whitespace and end punctuation, it is a label word and nothing else;
- *tool* rows ``{"text", "answer", "calls"?}``: a trajectory is *correct* when its final
  answer contains ``answer`` as a whole word or number (any case; a number's thousands
  separators ignored); ``calls`` are the tool calls that solve the row, as a teacher
  would demonstrate them (``[{"name", "arguments": {...}}]``).
"""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from learnloop.storage.errors import UsageError


class TaskFileError(UsageError):
    """A labelled file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int


MAX_LINE_CHARS = 1_000_000  # a labelled row is a text and a label, not a megabyte


def read_labelled(path: Path, labels: list[str] | None = None) -> list[Example]:
    """Every row of a JSONL file of ``{"text", "label"}`` objects (other keys ignored).

    With ``labels`` given, a row whose label is not one of them is an error. Anything
    else that is not such a file (missing, a folder, a device such as /dev/zero, binary
    or unreadable, a line too long to be a row) is a TaskFileError naming the file."""
    _check_regular_file(path)
    known = {label.lower() for label in labels} if labels else None
    rows: list[Example] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(_lines(lines, path), start=1):
                if line.strip():
                    rows.append(_parse(line, f"{path} line {number}", number, known))
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not rows:
        raise TaskFileError(f"{path}: no rows")
    return rows


def _check_regular_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(mode):
        raise TaskFileError(f"{path} is a folder; give a JSONL file of text and label rows")
    if not stat.S_ISREG(mode):
        raise TaskFileError(f"{path} is not a regular file; give a JSONL file")


def _lines(lines: TextIO, path: Path) -> Iterator[str]:
    """The file's lines, refusing one too long to be a row before reading it whole (a
    file of zeros or a binary has no line breaks)."""
    while line := lines.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise TaskFileError(
                f"{path}: a line is longer than {MAX_LINE_CHARS:,} characters; "
                "is it a JSONL file of text and label rows?"
            )
        yield line


def string_fields(line: str, where: str, keys: tuple[str, ...]) -> dict[str, str]:
    """One JSON line as an object whose ``keys`` hold non-empty strings; otherwise a
    TaskFileError naming ``where`` (the file and line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{where}: not valid JSON ({exc.msg})") from exc
    if not isinstance(row, dict):
        raise TaskFileError(f"{where}: expected a JSON object with {', '.join(keys)}")
    for key in keys:
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise TaskFileError(f'{where}: "{key}" is missing or not a non-empty string')
    return {key: row[key] for key in keys}


def _parse(line: str, where: str, number: int, known: set[str] | None) -> Example:
    row = string_fields(line, where, ("text", "label"))
    label = row["label"].strip().lower()
    if known is not None and label not in known:
        raise TaskFileError(
            f"{where}: unknown label {row['label']!r} (expected one of {', '.join(sorted(known))})"
        )
    return Example(text=row["text"].strip(), label=label, line=number)


@dataclass(frozen=True)
class ToolExample:
    text: str
    answer: str
    calls: list[dict[str, Any]]  # [{"name", "arguments": {...}}]; may be empty
    line: int


def is_tool_task(path: Path) -> bool:
    """Whether the file's first row is a tool row (has "answer", not "label")."""
    _check_regular_file(path)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in _lines(lines, path):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and "answer" in row and "label" not in row
    return False


def read_tool_task(path: Path) -> list[ToolExample]:
    """Every row of a JSONL file of ``{"text", "answer", "calls"?}`` objects; anything
    else is a TaskFileError naming the file and line (as :func:`read_labelled`)."""
    _check_regular_file(path)
    rows: list[ToolExample] = []
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(_lines(lines, path), start=1):
                if line.strip():
                    rows.append(_parse_tool_row(line, f"{path} line {number}", number))
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not rows:
        raise TaskFileError(f"{path}: no rows")
    return rows


def _parse_tool_row(line: str, where: str, number: int) -> ToolExample:
    row = string_fields(line, where, ("text", "answer"))
    calls = json.loads(line).get("calls") or []
    if not isinstance(calls, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and isinstance(c.get("arguments", {}), dict)
        for c in calls
    ):
        raise TaskFileError(f'{where}: "calls" must be a list of {{"name", "arguments"}} objects')
    return ToolExample(row["text"].strip(), row["answer"].strip(), calls, number)


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def answers(final: str, answer: str) -> bool:
    """Whether a final answer gives ``answer`` as a whole word or number (see above)."""
    text = _THOUSANDS.sub("", final.lower())
    wanted = re.escape(answer.strip().lower())
    return re.search(rf"(?<![\w.-]){wanted}(?![\w]|\.\d)", text) is not None


def labels_of(rows: list[Example]) -> list[str]:
    return sorted({r.label for r in rows})


def task_message(instruction: str, text: str) -> str:
    """The user message for one row: the instruction, a blank line, the text."""
    return f"{instruction.strip()}\n\n{text}" if instruction.strip() else text


def label_words(text: str) -> list[str]:
    """Comma-separated label words (``--labels``, ``--eval-labels``), lower case."""
    return [w.strip().lower() for w in text.split(",") if w.strip()]


def named_labels(answer: str, labels: list[str]) -> list[str]:
    lowered = answer.lower()
    return [label for label in labels if re.search(rf"\b{re.escape(label)}\b", lowered)]


def is_correct(answer: str, gold: str, labels: list[str]) -> bool:
    return named_labels(answer, labels) == [gold]


def exact_format(answer: str, labels: list[str]) -> bool:
    return answer.strip().strip(".!").strip().lower() in labels


def macro_f1(golds: list[str], predictions: list[str | None], labels: list[str]) -> float:
    """Mean F1 over ``labels``; a prediction of None (no single label) is wrong for all."""
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(golds, predictions, strict=True))
        fp = sum(g != label and p == label for g, p in zip(golds, predictions, strict=True))
        fn = sum(g == label and p != label for g, p in zip(golds, predictions, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
