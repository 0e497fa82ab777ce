"""The promotion gate: does the candidate beat the active version without breaking things?

Pure: it reads the numbers ``learning/evaluate.py`` measured for both versions on the
same data and the thresholds in :class:`~learning.config.LearnConfig`, and says promote or
reject, always with the reasons, the numbers, and a one-line ``summary`` in plain words
for the person who gave the feedback.

Rules, in order:

1. ``--gate false`` promotes without looking (the reason says so).
2. With kept-aside evidence (held-out feedback, at least ``--min-heldout`` items, or
   ``--eval-file`` rows) the candidate must *win* there: strictly better on
   ``--gate-metric`` (preference accuracy by default), or equal there and better on the
   next measured metric of :data:`WIN_METRICS`, and so on; the mean log-prob margin
   counts only when it moves by ``--gate-min-margin`` or more (on a couple of pairs it is
   noise). That evidence never trained the candidate, so this is a fair test.
3. Without it (a first handful of feedback, all of which trained) the candidate is
   judged by what it was taught: it must give more of the trained corrections than the
   active version does (or all of them) and keep the liked answers about as likely (a
   drop of at most ``--control-max-logp-drop`` per token, as for the control answers),
   and improve on one of the two: more corrections given, or the liked answers more
   likely by ``--taught-min-gain``.
4. With nothing at all to judge by: rejected, unless ``--promote-without-heldout true``
   (the cycle refuses to train in that case before anything runs: learning/cycle.py).
5. Nothing may get worse beyond its threshold: control-set accuracy by at most
   ``--control-max-drop`` and the good control answers' log-probability per token by at
   most ``--control-max-logp-drop``, both measured against the base model (the fixed
   reference for general ability); task accuracy by at most ``--task-max-drop`` against
   the active version; with ``--gate-max-kl``, the control set's next-token distributions
   by at most that much (mean KL per token) from the active version's: forgetting.
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
NOTHING = "no held-out feedback, task rows or taught feedback to judge the candidate by"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    summary: str = ""  # one line in plain words: "promoted: ..." / "not promoted: ..."

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": self.reasons, "summary": self.summary}


@dataclass(frozen=True)
class Verdict:
    """One part of the judgement: won (None: nothing to judge by), why, in plain words."""

    won: bool | None
    reason: str
    plain: str


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _of(share: float, n: int) -> str:
    return f"{round(share * n)} of {n}"


def _plain(metric: str, cand: dict[str, Any], act: dict[str, Any]) -> str:
    c, a = cand[metric], act[metric]
    if metric == "preference_accuracy":
        n = cand["heldout_pairs"]
        return f"prefers the better answer in {_of(c, n)} kept-aside pairs (before: {_of(a, n)})"
    if metric == "correction_match":
        n = cand["heldout_corrections"]
        return f"gives {_of(c, n)} kept-aside corrections (before: {_of(a, n)})"
    if metric == "task_accuracy":
        return f"answers {c:.0%} of {cand['task_rows']} test rows right (before: {a:.0%})"
    if metric == "task_macro_f1":
        return f"test rows' macro-F1 {c:.2f} (before: {a:.2f})"
    return f"prefers the better kept-aside answers by {c - a:+.2f} nats more"


def _differs(metric: str, c: float, a: float, config: LearnConfig) -> bool:
    if metric == "preference_margin":
        return abs(c - a) >= config.gate_min_margin
    return c != a


def held_out(cand: dict[str, Any], act: dict[str, Any], config: LearnConfig) -> Verdict:
    """The kept-aside evidence (held-out feedback, task rows); won None when there is none."""
    order = [config.gate_metric, *(m for m in WIN_METRICS if m != config.gate_metric)]
    usable = [m for m in order if cand.get(m) is not None and act.get(m) is not None]
    if not usable:
        return Verdict(None, "no held-out feedback or task rows to judge the candidate by", "")
    kept = sum(cand.get(k) or 0 for k in ("heldout_pairs", "heldout_corrections", "task_rows"))
    head = f"judged on {kept} kept-aside items it was not trained on: "
    ties: list[str] = []
    for metric in usable:
        c, a = cand[metric], act[metric]
        text = f"{metric} {_fmt(c)} vs {_fmt(a)} for the active version"
        if _differs(metric, c, a, config):
            prefix = f"ties on {', '.join(ties)}; " if ties else ""
            won = c > a
            reason = f"{prefix}wins on {text}" if won else f"does not win: {text}"
            return Verdict(won, reason, head + _plain(metric, cand, act))
        ties.append(f"{metric} {_fmt(c)}")
    return Verdict(
        False,
        f"does not win: ties on {', '.join(ties)}",
        head + "no better than the active version",
    )


def taught(cand: dict[str, Any], act: dict[str, Any], config: LearnConfig) -> Verdict:
    """What it was taught: the trained corrections and liked answers."""
    n, liked = cand.get("taught_corrections") or 0, cand.get("taught_liked") or 0
    if not n and not liked:
        return Verdict(None, NOTHING, "")
    parts, reasons, ok, better = [], [], True, False
    if n:
        c, a = cand["taught_corrected"], act["taught_corrected"]
        parts.append(f"{c} of {n} corrections now answered (before: {a})")
        reasons.append(f"taught corrections answered: {c} of {n} vs {a} for the active version")
        ok, better = c >= a and (c > a or c == n), c > a
    if liked:  # more likely by the minimum, or (learned before) not less likely than the
        # control set's answers may become: the same bound on log-prob per token
        gain = cand["taught_liked_logp"] - act["taught_liked_logp"]
        learned, kept = gain >= config.taught_min_gain, gain >= -config.control_max_logp_drop
        said = "more likely" if learned else "as likely as before" if kept else "less likely"
        parts.append(f"liked answers {said}")
        reasons.append(
            f"liked answers' log-prob per token {_fmt(cand['taught_liked_logp'])} vs "
            f"{_fmt(act['taught_liked_logp'])} (a gain counts from +{config.taught_min_gain})"
        )
        ok, better = ok and kept, better or learned
    won = ok and better
    reason = "wins on what it was taught: " if won else "does not win on what it was taught: "
    return Verdict(
        won, reason + "; ".join(reasons), "judged on what it was taught: " + ", ".join(parts)
    )


def _control(
    cand: dict[str, Any],
    act: dict[str, Any],
    base: dict[str, Any],
    config: LearnConfig,
    result_kl: dict[str, float | None] | None = None,
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
    kl = (result_kl or {}).get("control")
    if config.gate_max_kl and kl is not None and kl > config.gate_max_kl:
        broken.append(
            f"on the control set it moved {kl:.3f} nats per token from the active version "
            f"(KL; allowed: {config.gate_max_kl})"
        )
    ct, at = cand.get("task_accuracy"), act.get("task_accuracy")
    if ct is not None and at is not None and ct < at - config.task_max_drop:
        broken.append(
            f"task accuracy drops from {_fmt(at)} to {_fmt(ct)} (allowed: {config.task_max_drop})"
        )
    return broken


def _general(cand: dict[str, Any], base: dict[str, Any], broken: list[str]) -> str:
    """The control set in plain words."""
    n, ca, ba = (
        cand.get("control_prompts") or 0,
        cand.get("control_accuracy"),
        base.get("control_accuracy"),
    )
    if not n or ca is None:
        return ""
    count = f"{_of(ca, n)} right, the base model {_of(ba, n)}" if ba is not None else _of(ca, n)
    if broken:
        return f"but worse at general questions ({count})"
    return f"general questions hold ({count})"


def decide(result: dict[str, Any] | None, config: LearnConfig) -> Decision:
    """Promote or reject a candidate from the measured ``result`` (see evaluate.compare)."""
    if not config.gate:
        reason = "gate off (--gate false): promoted without comparison"
        return Decision(True, [reason], "promoted without a check (the gate is off)")
    if result is None:
        return Decision(False, ["the candidate was not measured"], "not promoted: not measured")
    cand, act = result["candidate"], result["active"]
    verdict = held_out(cand, act, config)
    if verdict.won is None:
        verdict = taught(cand, act, config)
    # The control set is held against the base model, not the active version: with a
    # dozen prompts one lucky version would otherwise raise the bar for all that follow
    # (measured: v2 at 0.833 vs the base's 0.667 rejected two better candidates at 0.667).
    base = result.get("base_control") or act
    broken = _control(cand, act, base, config, result.get("kl"))
    general = _general(cand, base, broken)
    reasons = [verdict.reason, *broken]
    if verdict.won is None:
        if config.promote_without_heldout and not broken:
            reasons.append("promoted anyway (--promote-without-heldout)")
            return Decision(True, reasons, _line(True, "nothing to judge it by", general))
        if not broken:
            reasons.append("not promoted blindly")
        return Decision(False, reasons, _line(False, "nothing to judge it by", general))
    if not broken:
        reasons.append("control set holds")
    promote = bool(verdict.won) and not broken
    return Decision(promote, reasons, _line(promote, verdict.plain, general))


def _line(promote: bool, plain: str, general: str) -> str:
    said = "; ".join(part for part in (plain, general) if part)
    return f"{'promoted' if promote else 'not promoted'}: {said}"
