"""The bench's learning curve: accuracy (and macro-F1, exact format) against interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def curve_points(results: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(interactions, scores) for the base model and after every cycle."""
    return [(0, results["base"])] + [(c["interactions"], c) for c in results["cycles"]]


def plot_learning_curve(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    points = curve_points(results)
    xs = [x for x, _ in points]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    tools = bool(results["config"].get("tools"))
    lines = [("accuracy", "accuracy", "o-")]
    if tools:
        lines += [
            ("tool_use", "called the expected tool", "s--"),
            ("attempted", "tried a call", "d-."),
            ("well_formed", "well-formed calls (of those tried)", "^:"),
        ]
    else:
        lines += [("macro_f1", "macro-F1", "s--"), ("exact_format", "exact one-word format", "^:")]
    for key, label, style in lines:
        ys = [p.get(key) for _, p in points]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=label)
    switch = results["config"].get("switch_at")
    if switch:  # a job change: the second task's accuracy, and where the user switched
        ys = [p["second"].get("accuracy") for _, p in points]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], "o-", label="2nd task accuracy")
        ax.axvline(switch, color="grey", linestyle=":", label="the job changes")
    for x, cycle in zip(xs[1:], results["cycles"], strict=True):
        mark = "promoted" if cycle["promoted"] else "rejected"
        ax.annotate(
            f"{cycle['version']} {mark}",
            (x, cycle["accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
    config = results["config"]
    mode = config["feedback"] + (f", --regen {config['regen']}" if config["regen"] else "")
    ax.set(
        xlabel="interactions (texts the simulated user sent)",
        ylabel="score on the eval split",
        ylim=(0, 1.05),
        title=f"learnloop bench{' (tool task)' if tools else ''}: {mode} feedback, "
        f"{results['base']['answers']} eval texts",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
