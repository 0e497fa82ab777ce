"""Text tables for ``learnloop bench`` results (the README pastes them)."""

from __future__ import annotations

from typing import Any

GOALS = {
    "correct": {"accuracy": 0.88, "macro_f1": 0.85, "exact_format": 0.95},
    "thumbs": {"accuracy": 0.80},
}
TOOL_GOALS = {"correct": {"accuracy": 0.90}, "thumbs": {}}  # a tool task (--tools)


def _score(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def bench_table(results: dict[str, Any]) -> str:
    """Markdown: one row for the base and one per cycle, then the goals. A tool task has
    no labels, so no macro-F1; its rows say how often the expected tool was called, how
    often the first step tried a call, and how many of those calls were well-formed."""
    tools = bool(results["config"].get("tools"))
    keys = (
        ["accuracy", "exact_format", "tool_use", "attempted", "well_formed"]
        if tools
        else ["accuracy", "macro_f1", "exact_format"]
    )
    names = {"macro_f1": "macro-F1", "exact_format": "exact format", "tool_use": "tool use",
             "attempted": "tried a call", "well_formed": "well-formed calls"}  # fmt: skip
    heads = " | ".join(names.get(k, k) for k in keys)
    second = "second" in results["base"]  # a job change (--switch-at): both tasks measured
    if second:
        heads += " | 2nd task accuracy"
    lines = [
        f"| after | interactions | version | gate | active | {heads} | train s | CPU s | Wh "
        "| peak RSS MB |",
        "| --- | ---: | --- | --- | --- | "
        + "---: | " * (len(keys) + second)
        + "---: | ---: | ---: | ---: |",
    ]

    def scores_of(point: dict[str, Any]) -> str:
        scores = [_score(point.get(k)) for k in keys]
        if second:
            scores.append(_score(point["second"].get("accuracy")))
        return " | ".join(scores)

    lines.append(f"| base | 0 | - | - | base | {scores_of(results['base'])} | - | - | - | - |")
    for n, c in enumerate(results["cycles"], start=1):
        version, verdict = c["version"], "promoted" if c["promoted"] else "rejected"
        if c.get("then"):  # --start both: continual, then fresh
            then = c["then"]
            version += f", {then['version']}"
            verdict += ", " + ("promoted" if then["promoted"] else "rejected")
        scores = scores_of(c)
        lines.append(
            f"| cycle {n} | {c['interactions']} | {version} | {verdict} "
            f"| {c['active_version']} | {scores} "
            f"| {c['train_seconds']:.0f} | {_score(c.get('cpu_seconds'), 0)} "
            f"| {_score(c.get('energy_wh'), 2)} | {c['peak_rss_mb']:.0f} |"
        )
    lines.append("")
    lines.append(goals_text(results))
    return "\n".join(lines)


def goals_text(results: dict[str, Any]) -> str:
    config, final = results["config"], results["final"]
    parts = []
    goals = TOOL_GOALS if config.get("tools") else GOALS
    for key, goal in goals[config["feedback"]].items():
        ok = final[key] >= goal
        parts.append(f"{key} {final[key]:.3f} (goal ≥ {goal}: {'met' if ok else 'MISSED'})")
    if "second" in final:
        parts.append(f"second task accuracy {final['second']['accuracy']:.3f}")
    minutes = results["train_seconds"] / 60
    parts.append(f"training {minutes:.1f} min (goal ≤ 30: {'met' if minutes <= 30 else 'MISSED'})")
    control = results.get("control")
    if control:
        held = "holds" if control["within_threshold"] else "BROKEN"
        parts.append(
            f"control set {held} (accuracy {control['base_accuracy']:.3f} → "
            f"{control['final_accuracy']:.3f})"
        )
    return "final " + final["version"] + ": " + "; ".join(parts)
