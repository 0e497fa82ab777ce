"""Typed records going into and out of the store. Plain frozen dataclasses, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# One message shape through every layer, OpenAI's and TRL's: {"role": "system" | "user" |
# "assistant" | "tool", "content": str | None}, plus "tool_calls" ([{"id", "type":
# "function", "function": {"name", "arguments": JSON string}}]) on an assistant message
# that calls tools (its content may then be None) and "tool_call_id" on a tool result.
Message = dict[str, Any]


# Who gives feedback when nobody says: the operator. The CLI, the REPL and the web page on
# loopback are one person, so the per-user cap (learning/quality.py) never splits them.
LOCAL_USER = "local"


@dataclass(frozen=True)
class TurnLog:
    """One answered message, as the agent logs it (the trajectory of a turn)."""

    thread_id: str
    user_message: str
    messages: list[Message]
    prompt: str
    answer: str
    version: str
    model: str
    settings: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    first_token_ms: float | None
    total_ms: float
    nodes: list[str]
    regen_of: int | None = None
    interrupted: bool = False
    truncated: bool = False  # the answer hit the token limit: cut off, not finished
    # Every step of a turn that called tools, in order (empty: one model call, whose
    # prompt, version and timings are the fields above):
    #   {"type": "model", "prompt", "output" (the raw text), "content", "tool_calls",
    #    "malformed", "version", "prompt_tokens", "completion_tokens", "first_token_ms",
    #    "total_ms", "node"}
    #   {"type": "tool", "tool_call_id", "name", "arguments", "content", "error", "ms"}
    steps: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # the schemas offered
    user_name: str = LOCAL_USER  # who asked: the API key's name, the CLI's --user, else local

    @property
    def trajectory(self) -> list[Message]:
        """What the turn added after ``messages``: every assistant step (with its calls)
        and tool result, in order, to the final answer (the last message)."""
        return trajectory_of(self.steps, self.answer)


def trajectory_of(steps: list[dict[str, Any]], answer: str) -> list[Message]:
    """The messages of ``steps`` (see :class:`TurnLog`) ending with the answer: the last
    model step when it said ``answer`` (its final text, or calls a caller runs, beside
    what text it wrote), else ``answer`` as a message of its own (a step cap or time cap
    ended the turn and said so)."""
    out: list[Message] = []
    for step in steps:
        if step["type"] == "model":
            message: Message = {"role": "assistant", "content": step.get("content")}
            if step.get("tool_calls"):
                message["tool_calls"] = step["tool_calls"]
            out.append(message)
        else:
            out.append(
                {"role": "tool", "tool_call_id": step["tool_call_id"], "content": step["content"]}
            )
    if not out or out[-1]["role"] == "tool" or (out[-1].get("content") or "") != answer:
        out.append({"role": "assistant", "content": answer})
    return out


@dataclass(frozen=True)
class FeedbackRow:
    id: int
    turn_id: int
    rating: str
    correction: str | None
    comment: str | None
    user_name: str
    created_at: datetime
    correction_messages: list[Message] | None = None  # a corrected trajectory, if one
    # the version the latest cycle that used this row made (None: not used yet), and
    # whether that cycle kept it aside to test the version rather than training on it
    used_by: str | None = None
    kept_aside: bool = False


@dataclass(frozen=True)
class Turn:
    id: int
    created_at: datetime
    log: TurnLog
    feedback: list[FeedbackRow] = field(default_factory=list)

    @property
    def latest_feedback(self) -> FeedbackRow | None:
        return self.feedback[-1] if self.feedback else None


@dataclass(frozen=True)
class ThreadSummary:
    id: str
    created_at: datetime
    first_message: str
    turns: int  # answers in its history: a regeneration replaces the turn it redoes
    last_at: datetime
    title: str | None = None  # the title its owner gave it (None: never renamed)


@dataclass(frozen=True)
class FeedbackExample:
    """The latest feedback on one turn, joined with what the turn saw and said: the unit
    the dataset builders work on."""

    feedback_id: int
    turn_id: int
    thread_id: str
    messages: list[Message]
    answer: str
    rating: str
    correction: str | None
    user_name: str
    conflicts: int = 0  # earlier feedback rows on this turn that said something else
    truncated: bool = False  # the answer was cut off by the token limit
    # what the turn added after ``messages`` (TurnLog.trajectory; one assistant message
    # for a turn without tools), the tool schemas it was offered, and a corrected
    # trajectory when the correction was one (``correction`` is then its final text)
    trajectory: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    correction_messages: list[Message] | None = None


@dataclass(frozen=True)
class Version:
    """A published model version. ``parent`` is the version the gate measured it against
    (the one active when its run was prepared); ``adapter_path`` is absolute wherever
    the data root is now (the store saves it relative to the root); ``checksum`` is the
    sha256 of the adapter folder when it was published (learning/adapters.py), None for
    a version published before checksums until its first load records one.
    ``base_fingerprint`` identifies the base it was trained on whatever its folder is
    called (None for versions published before: their ``base_model`` name decides); a
    version whose files were removed keeps its row, with ``removed_at``; one retired by a
    forget (storage/forgetting.py) has its files removed too, and ``retired_why``."""

    id: str
    parent: str
    run_id: int
    method: str
    base_model: str
    adapter_path: str
    sft_count: int
    dpo_count: int
    metrics: dict[str, Any]
    created_at: datetime
    kto_count: int = 0
    status: str = "promoted"  # or "rejected" by the gate
    gate: dict[str, Any] | None = None  # measured numbers, decision and reasons
    checksum: str | None = None
    base_fingerprint: str | None = None  # the base's weights (learning/models.py); None: older
    removed_at: datetime | None = None  # when `versions rm` deleted its adapter files
    retired_why: str | None = None  # retired by a forget: trained on a forgotten user's rows
    started_from: str | None = None  # the version whose adapter it trained on (None: fresh)
    lineage: dict[str, Any] | None = None  # a federated round's adapter: run, round, nodes, rule


@dataclass(frozen=True)
class ControlPrompt:
    """A prompt with a known good answer that a new version must not get worse on."""

    prompt: str
    answer: str
    expect: str  # a greedy answer counts as correct when it contains this


@dataclass(frozen=True)
class SnapshotRecord:
    """What the store records of a run's frozen inputs: which feedback rows went into
    which dataset ('heldout' included), the newest feedback id considered, the dataset
    sizes, a content hash and the quality report."""

    content_hash: str
    upto: int
    rows: dict[str, list[int]]
    counts: dict[str, int]
    quality: dict[str, Any] | None = None


@dataclass(frozen=True)
class Run:
    """A learning run; ``run_dir`` is absolute wherever the data root is now."""

    id: int
    status: str
    method: str
    config: dict[str, Any]
    run_dir: str
    pid: int | None
    snapshot_id: int | None
    version_id: str | None
    metrics: dict[str, Any] | None
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    active_at_start: str | None = None  # active when the run was prepared (None: older runs)


@dataclass(frozen=True)
class Activation:
    """One switch of the active version: who made it and why."""

    id: int
    version_id: str
    who: str
    why: str
    created_at: datetime


@dataclass(frozen=True)
class Status:
    active_version: str
    turns: int
    threads: int
    feedback: int
    feedback_up: int
    feedback_down: int
    corrections: int
    unlearned_feedback: int
    versions: int
    running_run: int | None


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored: its user's name, role and dates, never the key itself.

    ``role``: "user" sees and rates only its own threads and may not switch versions,
    learn or manage keys; "admin" may do all that the operator may."""

    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    role: str = "user"
