"""What a continual cycle learns from: the feedback new since the adapter it starts from,
plus a bounded replay of older feedback (``learn --start active``).

Pure. A cycle that trains the active version's adapter further must not train on all
feedback again (its cost would grow with every cycle) nor on the new rows alone (what the
adapter learned before would fade: the new rows may all be of one kind). So it takes every
row newer than the adapter's own snapshot and at most ``replay`` older ones, chosen in
turn from each group of a kind (a correction, a thumbs-up, a thumbs-down) and what it
says (the correction's or the answer's first words: a labelled task's label), the
smallest groups first, so that every kind and label stays represented however few rows
are replayed. Rows that say what no other row of their kind says (free answers, the
results of a tool task) form one group per kind: as a group each, hundreds of them would
crowd the labels out of the replay (measured: after a job change from sentiment to
arithmetic, 11 of 150 replayed rows were sentiment).

Invariant: the result depends only on the rows, ``since``, ``replay`` and ``seed``.
"""

from __future__ import annotations

import random
from collections import defaultdict

from learnloop.learning.datasets import gist
from learnloop.storage.records import FeedbackExample


def continual(
    train: list[FeedbackExample], since: int, replay: int, seed: int, max_new: int = 0
) -> list[FeedbackExample]:
    """The rows of ``train`` newer than feedback id ``since`` (the newest ``max_new`` of
    them when that is not 0: the rest join the older rows), and at most ``replay`` of the
    others, in feedback order. The cap keeps a cycle's cost bounded when cycles the gate
    rejected let new feedback pile up (each trains on everything since the active
    version): measured, one rejection grew the next cycle from 261 rows to 397."""
    new = sorted((e for e in train if e.feedback_id > since), key=lambda e: e.feedback_id)
    old = [e for e in train if e.feedback_id <= since]
    if max_new and len(new) > max_new:
        old, new = old + new[:-max_new], new[-max_new:]
    return sorted([*new, *replayed(old, replay, seed)], key=lambda e: e.feedback_id)


def replayed(old: list[FeedbackExample], replay: int, seed: int) -> list[FeedbackExample]:
    """At most ``replay`` of ``old``: one from each group in turn, smallest group first,
    each group's rows in a seeded random order; the rows alone in saying what they say
    are one group per kind."""
    said: dict[tuple[str, str], list[FeedbackExample]] = defaultdict(list)
    for e in old:
        said[group(e)].append(e)
    groups: dict[tuple[str, str], list[FeedbackExample]] = defaultdict(list)
    for (kind, words), rows in said.items():
        groups[(kind, words) if len(rows) > 1 else (kind, "")].extend(rows)
    rng = random.Random(seed)
    queues = [rows for _, rows in sorted(groups.items(), key=lambda kv: (len(kv[1]), kv[0]))]
    for rows in queues:
        rng.shuffle(rows)
    chosen: list[FeedbackExample] = []
    while len(chosen) < replay and any(queues):
        for rows in queues:
            if rows and len(chosen) < replay:
                chosen.append(rows.pop())
    return chosen


def group(e: FeedbackExample) -> tuple[str, str]:
    """(kind, what it says): a correction by its text, a thumb by the answer rated."""
    kind, text = ("correction", e.correction) if e.correction else (e.rating, e.answer)
    return kind, gist(text)
