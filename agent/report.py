"""Human-readable and JSON views of stored records for the CLI and the server (no SQL, no
printing): the server's JSON is the CLI's ``--json``, so either can render the other's."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from learnloop.storage.forgetting import ForgetRecord
from learnloop.storage.records import Activation, Run, Status, ThreadSummary, Turn, Version

if TYPE_CHECKING:
    from learnloop.agent.runtime import Answer


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def turn_dict(turn: Turn) -> dict[str, Any]:
    log = turn.log
    return {
        "turn_id": turn.id,
        "thread_id": log.thread_id,
        "created_at": turn.created_at,
        "user_message": log.user_message,
        "answer": log.answer,
        "version": log.version,
        "regen_of": log.regen_of,
        "interrupted": log.interrupted,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_ms": log.total_ms,
        "steps": [step_view(step) for step in log.steps],
        "feedback": [
            {
                "id": f.id,
                "rating": f.rating,
                "correction": f.correction,
                "comment": f.comment,
                "user": f.user_name,
                "created_at": f.created_at,
                "used_by": f.used_by,
                "kept_aside": f.kept_aside,
                "correction_messages": f.correction_messages,
            }
            for f in turn.feedback
        ],
    }


def step_view(step: dict[str, Any]) -> dict[str, Any]:
    """One step of a trajectory for people and clients: what was said and done, with its
    timing, without the rendered prompt (``learnloop export`` has everything)."""
    keep: tuple[str, ...] = ("type", "content", "tool_calls", "malformed", "version", "total_ms")
    if step["type"] == "tool":
        keep = ("type", "tool_call_id", "name", "arguments", "content", "error", "ms")
    return {k: step.get(k) for k in keep}


def call_line(name: str, arguments: str) -> str:
    """A tool call as a person reads it: ``calculate({"expression": "2 * 3"})``."""
    return f"{name}({arguments})"


def step_lines(steps: list[dict[str, Any]], width: int = 70) -> list[str]:
    """The tool calls and results of a trajectory, one line each (``learnloop log``, the
    REPL): ``→ call`` as the model made it, ``← result`` as the tool gave it."""
    lines = []
    for step in steps:
        if step["type"] == "model":
            for call in step.get("tool_calls") or []:
                fn = call["function"]
                lines.append(f"→ {_short(call_line(fn['name'], fn['arguments']), width)}")
            for bad in step.get("malformed") or []:
                lines.append(f"✗ malformed call ({bad['why']}): {_short(bad['text'], width)}")
        else:
            mark = "✗" if step.get("error") else "←"
            lines.append(f"{mark} {_short(step['content'], width)}")
    return lines


def when(value: datetime | str) -> datetime:
    """A time from a record (datetime) or from its JSON form (ISO 8601 text)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def to_json(value: Any) -> str:
    """The CLI's ``--json`` text: times in ISO 8601, as the server's JSON has them."""

    def encode(o: Any) -> Any:
        return o.isoformat() if isinstance(o, datetime | date) else str(o)

    return json.dumps(value, indent=2, default=encode)


def feedback_mark(turn: dict[str, Any]) -> str:
    latest = turn["feedback"][-1] if turn["feedback"] else None
    if latest is None:
        return "  "
    mark = "👍" if latest["rating"] == "up" else "👎"
    return mark + (" ✎" if latest["correction"] else "")


def turns_text(turns: list[dict[str, Any]]) -> str:
    """``learnloop log`` from its JSON (:func:`turn_dict`, or ``GET /v1/log``)."""
    if not turns:
        return 'no turns yet: `learnloop ask "..."` or `learnloop chat`'
    lines = []
    for t in turns:
        regen = f" (regen of {t['regen_of']})" if t["regen_of"] else ""
        lines.append(
            f"#{t['turn_id']} thread {t['thread_id']} · {t['version']}{regen} "
            f"· {when(t['created_at']):%Y-%m-%d %H:%M} {feedback_mark(t)}"
        )
        lines.append(f"   you: {_short(t['user_message'])}")
        lines.extend(f"   {line}" for line in step_lines(t.get("steps") or [], 65))
        lines.append(f"   bot: {_short(t['answer'])}")
        latest = t["feedback"][-1] if t["feedback"] else None
        if latest and latest["correction"]:
            lines.append(f"   fix: {_short(latest['correction'])}")
        if latest and latest.get("used_by"):
            lines.append(f"   use: {feedback_use(latest)}")
    return "\n".join(lines)


def feedback_use(feedback: dict[str, Any]) -> str:
    """What learning did with a feedback item, in words (its JSON: :func:`turn_dict`)."""
    version = feedback["used_by"]
    if feedback["kept_aside"]:
        return f"kept aside to test {version}, not trained on (it judges new versions)"
    return f"learned by {version}"


def thread_summary(t: ThreadSummary) -> dict[str, Any]:
    """One thread in ``GET /v1/threads``: ids, times, its title (the one it was given,
    else its first message's start; ``renamed`` says which)."""
    return {
        "id": t.id,
        "created_at": t.created_at,
        "last_at": t.last_at,
        "title": t.title or " ".join(t.first_message.split())[:80],
        "renamed": t.title is not None,
        "turns": t.turns,
    }


def history_data(rows: list[Activation], forgets: list[ForgetRecord]) -> list[dict[str, Any]]:
    """``learnloop history --json``: every switch of the active version and every forget
    (``version`` None, the counts under ``forget``), oldest first."""
    switches = [
        {"version": a.version_id, "who": a.who, "why": a.why, "at": a.created_at} for a in rows
    ]
    forgotten = [
        {
            "version": None,
            "who": f.who,
            "why": f"forgot {f.user}: {f.turns_deleted} turns, {f.feedback_deleted} feedback "
            f"rows; retired {', '.join(f.versions_retired) or 'no version'}",
            "at": f.created_at,
            "forget": {
                "user": f.user,
                "turns_deleted": f.turns_deleted,
                "feedback_deleted": f.feedback_deleted,
                "versions_retired": f.versions_retired,
                "replacement": f.replacement,
            },
        }
        for f in forgets
    ]
    return sorted([*switches, *forgotten], key=lambda e: e["at"])


def history_text(data: list[dict[str, Any]]) -> str:
    return (
        "\n".join(
            f"{when(a['at']):%Y-%m-%d %H:%M:%S}  {a['version'] or '-':6} {a['who']:16} {a['why']}"
            for a in data
        )
        or "no switches yet: the base model has always been active"
    )


def losses(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training loss by step across the run's stages (steps numbered on from stage to
    stage, so SFT then DPO reads as one curve)."""
    out: list[dict[str, Any]] = []
    offset, stage, last_step = 0, None, 0
    for e in events:
        if e.get("loss") is None:
            continue
        if e["stage"] != stage:
            offset, stage = offset + last_step, e["stage"]
        last_step = int(e.get("step") or 0)
        out.append({"step": offset + last_step, "loss": e["loss"], "stage": stage})
    return out


def run_data(
    run: Run, events: list[dict[str, Any]], gate: dict[str, Any] | None, version: str | None
) -> dict[str, Any]:
    """A learning run's state and progress (``GET /v1/learn/{run}``) from its record, its
    progress events and its version's gate results."""
    last = events[-1] if events else {}
    return {
        "run": run.id,
        "status": run.status,
        "stage": last.get("stage", "prepare"),
        "step": last.get("step"),
        "total": last.get("total"),
        "loss": last.get("loss"),
        "losses": losses(events),
        "version": version,
        "promoted": None if gate is None else bool(gate.get("promote")),
        "reasons": (gate or {}).get("reasons", []),
        "summary": (gate or {}).get("summary"),
        "error": run.error,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def versions_data(
    versions: list[Version], active: str, users: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """``learnloop versions --json``; ``users``: version id -> whose turns and feedback
    trained it."""
    return [
        {"id": "base", "parent": None, "active": active == "base"},
        *[
            {
                "id": v.id,
                "parent": v.parent,
                "created_at": v.created_at,
                "method": v.method,
                "base_model": v.base_model,
                "sft_examples": v.sft_count,
                "dpo_pairs": v.dpo_count,
                "kto_rows": v.kto_count,
                "status": v.status,
                "gate": v.gate,
                "metrics": v.metrics,
                "adapter_path": v.adapter_path,
                "base_fingerprint": v.base_fingerprint,
                "removed_at": v.removed_at,  # `versions rm` deleted its files (None: kept)
                "retired_why": v.retired_why,  # a forget retired it (None: never)
                "started_from": v.started_from,  # the adapter it trained on (None: fresh)
                "lineage": v.lineage,  # a federated round's adapter (None: trained here)
                "users": users.get(v.id, []),
                "active": v.id == active,
            }
            for v in versions
        ],
    ]


def status_data(
    s: Status, model: str, data_root: str, progress: dict[str, Any] | None
) -> dict[str, Any]:
    """``learnloop status --json``; ``progress`` is the running cycle's latest event."""
    running = s.running_run
    return {
        "model": model,
        "data_root": data_root,
        "active_version": s.active_version,
        "versions": s.versions,
        "threads": s.threads,
        "turns": s.turns,
        "feedback": s.feedback,
        "feedback_up": s.feedback_up,
        "feedback_down": s.feedback_down,
        "corrections": s.corrections,
        "unlearned_feedback": s.unlearned_feedback,
        "running_run": running,
        "learning": {"run": running, **(progress or {"stage": "prepare"})} if running else None,
    }


def status_text(data: dict[str, Any]) -> str:
    running = data["running_run"]
    shown = {**data, "learning": running_text(running, data["learning"]) if running else "idle"}
    return "\n".join(f"{k.replace('_', ' '):>20}: {v}" for k, v in shown.items())


def _metric(v: dict[str, Any]) -> str:
    parts = []
    for stage in ("sft", "dpo", "kto"):
        m = (v.get("metrics") or {}).get(stage)
        if m and m.get("train_loss") is not None:
            parts.append(f"{stage} loss {m['train_loss']:.3f}")
    return ", ".join(parts) or "-"


def cost_text(metrics: dict[str, Any]) -> str | None:
    """What a version's cycle cost: its trainer's CPU time and the energy estimate."""
    if metrics.get("cpu_seconds") is None:
        return None  # trained before costs were recorded
    return f"cost: {metrics['cpu_seconds']:.0f} CPU-s, ~{metrics['energy_wh']:.2f} Wh"


def versions_text(data: list[dict[str, Any]]) -> str:
    """``learnloop versions`` from its JSON (:func:`versions_data`, or ``GET /v1/versions``)."""
    lines = [
        f"{'':2}{'version':8} {'parent':7} {'created':16} {'status':9} {'method':12} "
        f"{'sft':>4} {'dpo':>4} {'kto':>4}  metrics"
    ]
    for v in data:
        star = "*" if v["active"] else " "
        if v["id"] == "base":
            lines.append(f"{star:2}{'base':8} {'-':7}")
            continue
        lines.append(
            f"{star:2}{v['id']:8} {v['parent']:7} "
            f"{when(v['created_at']):%Y-%m-%d %H:%M} {v['status']:9} {v['method']:12} "
            f"{v['sft_examples']:>4} {v['dpo_pairs']:>4} {v['kto_rows']:>4}  {_metric(v)}"
        )
        if v.get("retired_why"):
            lines.append(f"{'':11}retired: {v['retired_why']}")
        elif v.get("removed_at"):
            lines.append(f"{'':11}files removed {when(v['removed_at']):%Y-%m-%d %H:%M}")
        if v.get("users"):
            lines.append(f"{'':11}trained on feedback of: {', '.join(v['users'])}")
        if v.get("lineage"):
            lines.append(f"{'':11}{lineage_text(v['lineage'])}")
        cost = cost_text(v.get("metrics") or {})
        started = f", trained further from {v['started_from']}" if v.get("started_from") else ""
        if cost:
            lines.append(f"{'':11}{cost}{started}")
        for reason in (v.get("gate") or {}).get("reasons", []):
            lines.append(f"{'':11}gate: {reason}")
    return "\n".join(lines)


def lineage_text(lineage: dict[str, Any]) -> str:
    """A federated version's origin in one line."""
    nodes = lineage.get("nodes") or []
    return (
        f"federated: round {lineage.get('round')} of federation {lineage.get('federation')}, "
        f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {lineage.get('aggregation')}, "
        f"{lineage.get('examples')} examples"
    )


def cycle_summary(result: Any) -> str:
    """What a finished learning cycle did, in two or three lines: a CycleResult, or its
    JSON (through a server, which does not report the held-out count)."""
    r = result if isinstance(result, dict) else result.to_dict()
    verdict = "promoted" if r["promoted"] else "rejected by the gate"
    summary = r.get("summary") or (r.get("gate") or {}).get("summary") or verdict
    active = ", now active" if r["promoted"] else f"; {r['parent']} stays active"
    heldout = r.get("heldout")
    kept = f"; {heldout} kept aside to test it, not trained on" if heldout else ""
    seconds = f"{r['seconds']:.0f} s" if r.get("seconds") is not None else "time unknown"
    lines = [
        f"version {r['version']} {summary}",
        f"  ({r['method']}: {r['sft_examples']} SFT examples, {r['dpo_pairs']} DPO pairs, "
        f"{r['kto_rows']} KTO rows{kept}; {seconds}{active})",
    ]
    lines += capped_lines(r.get("quality") or {})
    lines += [f"  gate: {reason}" for reason in r["reasons"]]
    if r.get("then"):  # --start both: the fresh run, gated against what the first left
        lines += ["then a fresh adapter on all feedback:", cycle_summary(r["then"])]
    return "\n".join(lines)


def capped_lines(quality: dict[str, Any]) -> list[str]:
    """What the per-user cap left out, one line per user (learning/quality.py)."""
    return [
        f"  not used: {n} of {user}'s oldest feedback items (one user may give at most "
        "--max-user-share of them)"
        for user, n in (quality.get("capped") or {}).items()
    ]


def answer_footer(answer: dict[str, Any]) -> str:
    """The line after a streamed ``learnloop ask`` answer (on stderr)."""
    return (
        f"[turn {answer['turn_id']} · thread {answer['thread_id']} · version {answer['version']}]"
    )


def feedback_text(data: dict[str, Any]) -> str:
    text = f"feedback {data['feedback_id']} recorded for turn {data['turn_id']}: {data['rating']}"
    learning = data["learning_started"]
    return text + (f"\nlearning started in the background ({learning})" if learning else "")


def switched_text(data: dict[str, Any]) -> str:
    return f"active version: {data['active']} (was {data['previous']})"


def running_text(run_id: int, progress: dict[str, Any] | None) -> str:
    """One line on a running cycle from its latest progress event: stage, step, loss."""
    if progress is None:
        return f"run {run_id} is preparing"
    text = f"run {run_id} · {progress['stage']}"
    if progress.get("total"):
        text += f" step {progress['step']}/{progress['total']}"
    if progress.get("loss") is not None:
        text += f" · loss {progress['loss']:.3f}"
    return text


def keys_text(data: list[dict[str, Any]]) -> str:
    """``learnloop keys list``: names and dates, never the keys."""
    lines = []
    for k in data:
        revoked = k["revoked_at"]
        state = f"  revoked {when(revoked):%Y-%m-%d %H:%M:%S}" if revoked else "  valid"
        role = k.get("role", "user")
        created = f"created {when(k['created_at']):%Y-%m-%d %H:%M:%S}"
        lines.append(f"{k['name']:24} {role:5}  {created}{state}")
    return "\n".join(lines) or "no API keys: `learnloop keys create NAME` makes one"


def cycle_view(view: dict[str, Any], versions: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished run as ``learn --json`` prints it through a server: the run's view and
    its version's record, under the names CycleResult.to_dict() uses."""
    v = next(x for x in versions if x["id"] == view["version"])
    seconds = None
    if view.get("started_at") and view.get("finished_at"):
        delta = datetime.fromisoformat(view["finished_at"]) - datetime.fromisoformat(
            view["started_at"]
        )
        seconds = round(delta.total_seconds(), 2)
    return {
        **view,
        "run_id": view["run"],
        "parent": v["parent"],
        "method": v["method"],
        "sft_examples": v["sft_examples"],
        "dpo_pairs": v["dpo_pairs"],
        "kto_rows": v["kto_rows"],
        "metrics": v["metrics"],
        "gate": v["gate"],
        "adapter_path": v["adapter_path"],
        "seconds": seconds,
    }


def thread_view(thread_id: str, history: list[Turn], every: list[Turn]) -> dict[str, Any]:
    """``GET /v1/threads/{id}``: the history's turns, each with ``answers``: all the
    answers to its user message (``every`` turn of the thread grouped by the turn they
    regenerate), oldest first."""
    answers: dict[int, list[dict[str, Any]]] = {}
    for turn in every:
        answers.setdefault(turn.log.regen_of or turn.id, []).append(turn_dict(turn))
    turns = [
        {**turn_dict(t), "answers": answers.get(t.log.regen_of or t.id, [turn_dict(t)])}
        for t in history
    ]
    return {"id": thread_id, "turns": turns}


def answer_data(answer: Answer) -> dict[str, Any]:
    """``learnloop ask --json``: the turn's ids, the answer and the version."""
    data: dict[str, Any] = {
        "turn_id": answer.turn_id,
        "thread_id": answer.thread_id,
        "answer": answer.answer,
        "version": answer.version,
    }
    if answer.interrupted:
        data["interrupted"] = True
    if answer.trimmed:  # earlier messages left out so that the prompt fitted the model
        data["trimmed"] = answer.trimmed
    if answer.stopped_by:  # "paragraph": it ended at its first paragraph; "stop"
        data["stopped_by"] = answer.stopped_by
    if answer.steps:  # it called tools: each call and result (agent/report.py)
        data["steps"] = [step_view(step) for step in answer.steps]
    if answer.tool_calls:  # the caller's own tools, for it to run
        data["tool_calls"] = answer.tool_calls
    return data
