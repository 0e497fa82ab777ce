"""The bench on a labelled task: rows ``{"text", "label"}`` (learning/tasks.py).

The simulated user judges an answer correct when it names exactly one label and that is
the gold one; a miss in ``correct`` mode is corrected with the gold label. The scores are
accuracy, macro-F1, the share in the exact one-word format, and the labels predicted.
The tool task (agent/bench/tool_task.py) has the same methods.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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


def score_adapters(
    model_path: str, adapters: dict[str, Path | None], rows: list[Example],
    instruction: str, labels: list[str], max_new_tokens: int,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """:func:`score` of greedy answers to ``rows`` from the base with each adapter (None:
    the base alone), by transformers in fp32 (the gate's engine), the base loaded once."""
    from peft import PeftModel

    from learnloop.learning.evaluate import greedy
    from learnloop.learning.trainer import load_base, quiet_libraries

    quiet_libraries()  # no weight-loading bar per adapter
    base, tokenizer = load_base(Path(model_path))
    prompts = [[{"role": "user", "content": task_message(instruction, r.text)}] for r in rows]
    scores = {}
    for name, folder in adapters.items():
        model: Any = base if folder is None else PeftModel.from_pretrained(base, str(folder))
        model.eval()
        answers = []
        for n, prompt in enumerate(prompts, start=1):
            answers.append(greedy(model, tokenizer, prompt, max_new_tokens))
            if n % 100 == 0:
                say(f"  {name}: {n}/{len(prompts)} answered")
        scores[name] = score(answers, rows, labels)
        if folder is not None:
            base = model.unload()  # the LoRA layers out again: the next adapter starts clean
        say(f"{name}: accuracy {scores[name]['accuracy']:.3f}, "
            f"macro-F1 {scores[name]['macro_f1']:.3f}")  # fmt: skip
    return scores


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
