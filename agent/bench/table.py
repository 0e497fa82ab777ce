"""Text tables for ``learnloop bench`` results (the README pastes them)."""

from __future__ import annotations

from typing import Any

GOALS = {
    "correct": {"accuracy": 0.88, "macro_f1": 0.85, "exact_format": 0.95},
    "thumbs": {"accuracy": 0.80},
}


def bench_table(results: dict[str, Any]) -> str:
    """Markdown: one row for the base and one per cycle, then the goals."""
    lines = [
        "| after | interactions | version | gate | active | accuracy | macro-F1 | exact format "
        "| train s | peak RSS MB |",
        "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = results["base"]
    lines.append(
        f"| base | 0 | - | - | base | {base['accuracy']:.3f} | {base['macro_f1']:.3f} "
        f"| {base['exact_format']:.3f} | - | - |"
    )
    for n, c in enumerate(results["cycles"], start=1):
        verdict = "promoted" if c["promoted"] else "rejected"
        lines.append(
            f"| cycle {n} | {c['interactions']} | {c['version']} | {verdict} "
            f"| {c['active_version']} | {c['accuracy']:.3f} | {c['macro_f1']:.3f} "
            f"| {c['exact_format']:.3f} | {c['train_seconds']:.0f} | {c['peak_rss_mb']:.0f} |"
        )
    lines.append("")
    lines.append(goals_text(results))
    return "\n".join(lines)


def goals_text(results: dict[str, Any]) -> str:
    config, final = results["config"], results["final"]
    parts = []
    for key, goal in GOALS[config["feedback"]].items():
        ok = final[key] >= goal
        parts.append(f"{key} {final[key]:.3f} (goal ≥ {goal}: {'met' if ok else 'MISSED'})")
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
