"""The bench on a tool task: rows ``{"text", "answer", "calls"?}`` (learning/tasks.py).

What changes from a labelled task (agent/bench/simulated_user.py) is written once here:

- the chat and the judge run with the task's tools (``--tools``), so every answer is a
  trajectory that executed the real tools;
- an answer is correct when its final text contains the row's answer as a whole word or
  number (learning/tasks.py :func:`answers`);
- in ``correct`` mode a miss is corrected with the demonstration trajectory: the row's
  ``calls`` executed with the real tools, then the answer (a row without calls is
  corrected with the answer as text);
- the scores add ``tool_use`` (the share of answers whose trajectory called the row's
  expected tool), ``attempted`` (answers whose first step tried a call) and
  ``well_formed`` (of those, the share whose calls all parsed); ``macro_f1`` is None
  (there are no labels) and ``exact_format`` is the share whose final answer is the
  answer alone;
- the gate judges candidates on the set-aside rows as a tool task, by task accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnloop.learning import chat_format
from learnloop.learning.tasks import ToolExample, answers, read_tool_task, task_message
from learnloop.learning.toolbox import Toolbox
from learnloop.storage.records import Message


@dataclass(frozen=True)
class ToolTask:
    instruction: str
    toolbox: Toolbox
    specs: str  # the --tools specs, comma-separated, for the gate (LearnConfig.tools)

    def read(self, path: Path) -> list[ToolExample]:
        return read_tool_task(path)

    def message(self, row: ToolExample) -> str:
        return task_message(self.instruction, row.text)

    def judge(self, answer: Any, row: ToolExample) -> bool:
        return answers(answer.answer, row.answer)

    def correction(self, row: ToolExample) -> tuple[str, list[Message] | None]:
        """The demonstration: the row's calls run with the real tools, then the answer."""
        if not row.calls:
            return row.answer, None
        calls = [chat_format.tool_call(c["name"], c.get("arguments", {})) for c in row.calls]
        steps: list[Message] = [{"role": "assistant", "content": None, "tool_calls": calls}]
        for call in calls:
            result = self.toolbox.run(call["function"]["name"], call["function"]["arguments"])
            steps.append({"role": "tool", "tool_call_id": call["id"], "content": result.content})
        steps.append({"role": "assistant", "content": row.answer})
        return row.answer, steps

    def score(self, given: list[Any], rows: list[ToolExample]) -> dict[str, Any]:
        n = len(rows)
        right = sum(answers(a.answer, r.answer) for a, r in zip(given, rows, strict=True))
        exact = sum(
            a.answer.strip().rstrip(".").strip() == r.answer
            for a, r in zip(given, rows, strict=True)
        )
        used = sum(
            bool(r.calls) and r.calls[0]["name"] in called(a.steps)
            for a, r in zip(given, rows, strict=True)
        )
        tried = [a for a in given if attempted(a.steps)]
        return {
            "answers": n,
            "accuracy": round(right / n, 4),
            "macro_f1": None,
            "exact_format": round(exact / n, 4),
            "tool_use": round(used / n, 4),
            "attempted": round(len(tried) / n, 4),
            "well_formed": round(sum(well_formed(a.steps) for a in tried) / len(tried), 4)
            if tried
            else None,
        }

    def gate_file(self, rows: list[ToolExample], path: Path) -> None:
        with path.open("w") as f:
            for row in rows:
                f.write(
                    json.dumps({"text": row.text, "answer": row.answer, "calls": row.calls}) + "\n"
                )

    def gate_settings(self) -> dict[str, Any]:
        return {"tools": self.specs, "gate_metric": "task_accuracy"}


def _first(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    return steps[0] if steps else None


def called(steps: list[dict[str, Any]]) -> list[str]:
    return [s["name"] for s in steps if s["type"] == "tool"]


def attempted(steps: list[dict[str, Any]]) -> bool:
    """Whether the trajectory's first step tried a call (well-formed or not)."""
    first = _first(steps)
    return bool(first and (first.get("tool_calls") or first.get("malformed")))


def well_formed(steps: list[dict[str, Any]]) -> bool:
    first = _first(steps)
    return bool(first and first.get("tool_calls") and not first.get("malformed"))
