"""Two versions side by side on the control prompts: what a learning cycle changed.

The gate stores each version's greedy answers to the control prompts (table
``control_answers``); :func:`compare_data` lines two such lists up by prompt, as
``GET /v1/versions/compare`` and ``learnloop versions compare --json`` return them, and
:func:`compare_text` prints that for a terminal. Pure functions: no store, no model.
"""

from __future__ import annotations

from typing import Any


def _side(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if answer is None else {"answer": answer["answer"], "correct": answer["correct"]}


def compare_data(
    a: str,
    a_answers: list[dict[str, Any]],
    b: str,
    b_answers: list[dict[str, Any]],
    expected: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"a": {version, correct, answered}, "b": ..., "prompts": [...], "counts": ...}``.

    One entry per prompt either version answered, in ``a``'s order then ``b``'s new ones
    (the control set may have grown between them); a side that did not answer a prompt
    is None. ``differs``: the two answers' texts differ (or one is missing). ``counts``:
    prompts, differ, fixed (wrong in ``a``, correct in ``b``), broken (the reverse).
    ``expected``: prompt -> what a correct answer contains, where known."""
    by_a = {x["prompt"]: x for x in a_answers}
    by_b = {x["prompt"]: x for x in b_answers}
    order = list(by_a) + [p for p in by_b if p not in by_a]
    prompts = []
    for prompt in order:
        left, right = by_a.get(prompt), by_b.get(prompt)
        same = left is not None and right is not None and left["answer"] == right["answer"]
        prompts.append(
            {
                "prompt": prompt,
                "expect": (expected or {}).get(prompt),
                "a": _side(left),
                "b": _side(right),
                "differs": not same,
            }
        )
    both = [(by_a[p], by_b[p]) for p in order if p in by_a and p in by_b]
    return {
        "a": {"version": a, "correct": _correct(a_answers), "answered": len(a_answers)},
        "b": {"version": b, "correct": _correct(b_answers), "answered": len(b_answers)},
        "prompts": prompts,
        "counts": {
            "prompts": len(prompts),
            "differ": sum(1 for p in prompts if p["differs"]),
            "fixed": sum(1 for x, y in both if not x["correct"] and y["correct"]),
            "broken": sum(1 for x, y in both if x["correct"] and not y["correct"]),
        },
    }


def _correct(answers: list[dict[str, Any]]) -> int:
    return sum(1 for x in answers if x["correct"])


def compare_text(data: dict[str, Any]) -> str:
    """``learnloop versions compare A B``: a headline, then each prompt whose answers
    differ with both answers (``✓`` correct, ``✗`` not)."""
    a, b, counts = data["a"], data["b"], data["counts"]
    lines = [
        f"{a['version']}: {a['correct']} of {a['answered']} control prompts correct; "
        f"{b['version']}: {b['correct']} of {b['answered']}",
        f"{counts['differ']} of {counts['prompts']} answers differ "
        f"({counts['fixed']} now correct, {counts['broken']} no longer correct)",
    ]
    for p in data["prompts"]:
        if not p["differs"]:
            continue
        lines.append("")
        lines.append(
            f"prompt: {p['prompt']}" + (f"  (expects {p['expect']!r})" if p["expect"] else "")
        )
        for key in ("a", "b"):
            side = p[key]
            version = data[key]["version"]
            if side is None:
                lines.append(f"  {version:8} (not asked)")
            else:
                mark = "✓" if side["correct"] else "✗"
                lines.append(f"  {version:8} {mark} {' '.join(side['answer'].split())}")
    return "\n".join(lines)
