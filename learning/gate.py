"""The promotion gate: does the candidate beat the active version without breaking things?

Pure: it reads the numbers ``learning/evaluate.py`` measured for both versions on the
same data and the thresholds in :class:`~learning.config.LearnConfig`, and says promote or
reject, always with the reasons and the numbers.

Rules, in order:

1. ``--gate false`` promotes without looking (the reason says so).
2. The candidate must *win*: strictly better on ``--gate-metric`` (preference accuracy
   by default), or equal there and better on the next measured metric of
   :data:`WIN_METRICS`, and so on. Held-out feedback and ``--eval-file`` rows never
   train the candidate, so this is a fair test.
3. With neither held-out feedback nor task rows there is nothing to judge by: rejected,
   unless ``--promote-without-heldout true``.
4. Nothing may get worse beyond its threshold: control-set accuracy by at most
   ``--control-max-drop`` and the good control answers' log-probability per token by at
   most ``--control-max-logp-drop``, both measured against the base model (the fixed
   reference for general ability); task accuracy by at most ``--task-max-drop`` against
   the active version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from learnloop.learning.config import LearnConfig

# Compared in this order after --gate-metric; a tie moves on to the next measured one.
# The mean log-prob margin comes last: it breaks ties that small held-out sets produce
# (both versions at 1.000) without ever outranking a real win or loss.
WIN_METRICS = (
    "preference_accuracy",
    "correction_match",
    "task_accuracy",
    "task_macro_f1",
    "preference_margin",
)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": self.reasons}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _wins(
    cand: dict[str, Any], act: dict[str, Any], config: LearnConfig
) -> tuple[bool | None, str]:
    """(won, reason); won is None when nothing was measured to judge by."""
    order = [config.gate_metric, *(m for m in WIN_METRICS if m != config.gate_metric)]
    usable = [m for m in order if cand.get(m) is not None and act.get(m) is not None]
    if not usable:
        return None, "no held-out feedback or task rows to judge the candidate by"
    ties: list[str] = []
    for metric in usable:
        c, a = cand[metric], act[metric]
        text = f"{metric} {_fmt(c)} vs {_fmt(a)} for the active version"
        if c != a:
            prefix = f"ties on {', '.join(ties)}; " if ties else ""
            return (True, f"{prefix}wins on {text}") if c > a else (False, f"does not win: {text}")
        ties.append(f"{metric} {_fmt(c)}")
    return False, f"does not win: ties on {', '.join(ties)}"


def _control(
    cand: dict[str, Any], act: dict[str, Any], base: dict[str, Any], config: LearnConfig
) -> list[str]:
    """The ways the candidate breaks the control set (empty when it does not)."""
    broken = []
    ca, ba = cand.get("control_accuracy"), base.get("control_accuracy")
    if ca is not None and ba is not None and ca < ba - config.control_max_drop:
        broken.append(
            f"control accuracy drops from {_fmt(ba)} (base) to {_fmt(ca)} "
            f"(allowed: {config.control_max_drop})"
        )
    cl, bl = cand.get("control_logp_per_token"), base.get("control_logp_per_token")
    if cl is not None and bl is not None and cl < bl - config.control_max_logp_drop:
        broken.append(
            f"control log-prob per token drops from {_fmt(bl)} (base) to {_fmt(cl)} "
            f"(allowed: {config.control_max_logp_drop})"
        )
    ct, at = cand.get("task_accuracy"), act.get("task_accuracy")
    if ct is not None and at is not None and ct < at - config.task_max_drop:
        broken.append(
            f"task accuracy drops from {_fmt(at)} to {_fmt(ct)} (allowed: {config.task_max_drop})"
        )
    return broken


def decide(result: dict[str, Any] | None, config: LearnConfig) -> Decision:
    """Promote or reject a candidate from the measured ``result`` (see evaluate.compare)."""
    if not config.gate:
        return Decision(True, ["gate off (--gate false): promoted without comparison"])
    if result is None:
        return Decision(False, ["the candidate was not measured"])
    cand, act = result["candidate"], result["active"]
    won, reason = _wins(cand, act, config)
    # The control set is held against the base model, not the active version: with a
    # dozen prompts one lucky version would otherwise raise the bar for all that follow
    # (measured: v2 at 0.833 vs the base's 0.667 rejected two better candidates at 0.667).
    broken = _control(cand, act, result.get("base_control") or act, config)
    reasons = [reason, *broken]
    if won is None:
        if config.promote_without_heldout and not broken:
            return Decision(True, [*reasons, "promoted anyway (--promote-without-heldout)"])
        return Decision(False, [*reasons, "not promoted blindly"] if not broken else reasons)
    if not broken:
        reasons.append("control set holds")
    return Decision(bool(won) and not broken, reasons)
