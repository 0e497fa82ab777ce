"""The bench on a labelled task: rows ``{"text", "label"}`` (learning/tasks.py).

The simulated user judges an answer correct when it names exactly one label and that is
the gold one; a miss in ``correct`` mode is corrected with the gold label. The scores are
accuracy, macro-F1, the share in the exact one-word format, and the labels predicted.
The tool task (agent/bench/tool_task.py) has the same methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from learnloop.learning.tasks import (
    Example,
    exact_format,
    is_correct,
    macro_f1,
    named_labels,
    read_labelled,
    task_message,
)


def score(answers: list[str], rows: list[Example], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and exact-format share of ``answers`` to ``rows``."""
    predictions = []
    for answer in answers:
        named = named_labels(answer, labels)
        predictions.append(named[0] if len(named) == 1 else None)
    golds = [r.label for r in rows]
    n = len(rows)
    return {
        "answers": n,
        "accuracy": round(sum(p == g for p, g in zip(predictions, golds, strict=True)) / n, 4),
        "macro_f1": round(macro_f1(golds, predictions, labels), 4),
        "exact_format": round(sum(exact_format(a, labels) for a in answers) / n, 4),
        "predicted": {label: predictions.count(label) for label in labels}
        | {"none": predictions.count(None)},
    }


class LabelTask:
    """A labelled task: ``{"text", "label"}`` rows."""

    def __init__(self, instruction: str, labels: list[str], gate_metric: str) -> None:
        self.instruction = instruction
        self.labels = labels
        self.gate_metric = gate_metric

    def read(self, path: Path) -> list[Example]:
        return read_labelled(path, self.labels)

    def message(self, row: Example) -> str:
        return task_message(self.instruction, row.text)

    def judge(self, answer: Any, row: Example) -> bool:
        return is_correct(answer.answer, row.label, self.labels)

    def correction(self, row: Example) -> tuple[str, list[dict[str, Any]] | None]:
        return row.label, None

    def score(self, given: list[Any], rows: list[Example]) -> dict[str, Any]:
        return score([a.answer for a in given], rows, self.labels)

    def gate_file(self, rows: list[Example], path: Path) -> None:
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps({"text": row.text, "label": row.label}) + "\n")

    def gate_settings(self) -> dict[str, Any]:
        return {"eval_labels": ",".join(self.labels), "gate_metric": self.gate_metric}
