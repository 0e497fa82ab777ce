"""Quality control between stored feedback and the dataset builders: pure functions.

Applied in this order, each step counted in a :class:`QualityReport`:

1. contradictions: a turn rated more than once counts once, with its latest rating (the
   store already returns only the latest row; here the turns whose earlier feedback
   disagreed are counted so the report can say so);
2. duplicates: examples whose prompts are equal after normalisation (case, punctuation,
   whitespace: "near-duplicates" in the plain sense) and that teach the same thing (same
   rating and same target answer after normalisation) collapse to the newest one;
3. the per-user cap: when two or more *real* users gave feedback (the names of API keys:
   people a server tells apart), no one of them may supply more than ``max_user_share`` of
   the examples; the oldest surplus of that user is dropped. The operator (``local``: the
   CLI, the REPL and the web page on loopback are one person) and names given by hand are
   never capped: one person typing in two places is not two users to balance.

The train / held-out split is by thread (a hash of the thread id), so feedback from a
held-out conversation never leaks into training.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field

from learnloop.storage.records import FeedbackExample, Message

_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class QualityReport:
    examples_in: int = 0
    contradictions: int = 0  # turns whose earlier feedback disagreed with the latest
    duplicates_collapsed: int = 0
    capped: dict[str, int] = field(default_factory=dict)  # user -> examples dropped
    examples_out: int = 0
    per_user: dict[str, int] = field(default_factory=dict)
    up: int = 0
    down: int = 0
    corrections: int = 0
    cut_off: int = 0  # thumbs-up answers cut off by the token limit: SFT keeps whole sentences

    @property
    def up_share(self) -> float | None:
        rated = self.up + self.down
        return self.up / rated if rated else None


def normalise(text: str) -> str:
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def prompt_key(messages: list[Message]) -> str:
    """Messages compared by what they say: their text (normalised) and their calls."""
    return "\x1e".join(
        f"{m['role']}:{normalise(m.get('content') or '')}"
        + (json.dumps(m["tool_calls"], sort_keys=True) if m.get("tool_calls") else "")
        for m in messages
    )


def _teaches(ex: FeedbackExample) -> tuple[str, str, str]:
    if ex.correction_messages:
        return (prompt_key(ex.messages), "fix", prompt_key(ex.correction_messages))
    target = ex.correction if ex.correction else ex.answer
    return (prompt_key(ex.messages), ex.rating if not ex.correction else "fix", normalise(target))


def collapse_duplicates(examples: list[FeedbackExample]) -> list[FeedbackExample]:
    """Keep the newest example of each (normalised prompt, rating, normalised target)."""
    newest: dict[tuple[str, str, str], FeedbackExample] = {}
    for ex in examples:  # oldest first, so later ones win
        newest[_teaches(ex)] = ex
    kept = {id(ex) for ex in newest.values()}
    return [ex for ex in examples if id(ex) in kept]


def cap_users(
    examples: list[FeedbackExample], max_share: float, real_users: frozenset[str]
) -> tuple[list[FeedbackExample], dict[str, int]]:
    """Drop the oldest examples of any real user above ``max_share`` of all examples (only
    with 2+ real users among them)."""
    kept = list(examples)
    dropped: dict[str, int] = {}
    while True:
        counts = Counter(ex.user_name for ex in kept if ex.user_name in real_users)
        if len(counts) < 2:
            return kept, dropped
        user, n = counts.most_common(1)[0]
        others = len(kept) - n
        allowed = int(max_share * others / (1 - max_share)) if max_share < 1 else n
        if n <= max(allowed, 1):
            return kept, dropped
        surplus = n - max(allowed, 1)
        theirs = [ex for ex in kept if ex.user_name == user][:surplus]  # oldest first
        gone = {id(ex) for ex in theirs}
        kept = [ex for ex in kept if id(ex) not in gone]
        dropped[user] = dropped.get(user, 0) + surplus


def clean(
    examples: list[FeedbackExample],
    *,
    max_user_share: float = 0.5,
    real_users: frozenset[str] = frozenset(),
) -> tuple[list[FeedbackExample], QualityReport]:
    """Apply the quality steps to the latest feedback per turn; report what each did."""
    deduped = collapse_duplicates(examples)
    kept, capped = cap_users(deduped, max_user_share, real_users)
    report = QualityReport(
        examples_in=len(examples),
        contradictions=sum(1 for ex in examples if ex.conflicts),
        duplicates_collapsed=len(examples) - len(deduped),
        capped=capped,
        examples_out=len(kept),
        per_user=dict(Counter(ex.user_name for ex in kept)),
        up=sum(1 for ex in kept if ex.rating == "up"),
        down=sum(1 for ex in kept if ex.rating == "down"),
        corrections=sum(1 for ex in kept if ex.correction),
        cut_off=sum(1 for ex in kept if ex.rating == "up" and ex.truncated and not ex.correction),
    )
    return kept, report


def is_held_out(thread_id: str, share: float) -> bool:
    """Whether a thread belongs to the held-out part (stable for a given thread id)."""
    bucket = int(hashlib.sha256(thread_id.encode()).hexdigest()[:8], 16) % 1000
    return bucket < share * 1000


def split_by_thread(
    examples: list[FeedbackExample], share: float
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """(train, held_out): every example of a thread lands on the same side."""
    train = [ex for ex in examples if not is_held_out(ex.thread_id, share)]
    held = [ex for ex in examples if is_held_out(ex.thread_id, share)]
    return train, held
