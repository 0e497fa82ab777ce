"""Pure dataset builders: stored feedback in, TRL's documented dataset shapes out.

Input is the latest feedback on each rated turn (:class:`FeedbackExample`); nothing here
reads or writes anything. Output rows use TRL's *conversational* format:

- SFT, prompt-completion: ``{"prompt": [messages], "completion": [assistant message]}``,
  from answers given a thumbs-up and from corrections (the better answer to that prompt).
  Of a thumbs-up answer that the token limit cut off, only its complete sentences are a
  target (none, if it has none): the rating endorses what it says, but training on the
  cut would teach the model to stop mid-sentence;
- DPO, preference: ``{"prompt": [messages], "chosen": [...], "rejected": [...]}``, from a
  correction vs. the answer it corrects, and from a thumbs-up answer vs. a thumbs-down
  answer to the same prompt (the same messages seen, e.g. ``/regen`` siblings; a cut-off
  chosen answer trimmed as for SFT);
- KTO, unpaired preference: ``{"prompt": [messages], "completion": [assistant message],
  "label": bool}``, every thumbs-up (True) and thumbs-down (False) answer alone, and a
  correction as a desirable completion: feedback that never forms a pair still counts.

A turn that called tools is a trajectory, and so is each row built from it: the
completion (``chosen``, ``rejected``) is every assistant step with its ``tool_calls``, and
every ``tool`` result, to the final answer, and the row has a ``tools`` column with the
schemas the turn was offered (TRL's tool format; the trainer computes the loss on the
assistant steps only: learning/chat_format.py :func:`training_ids`). A correction is a
corrected trajectory (the steps a person fixed or added) or a better final answer, which
replaces only the last message. A row of a turn without tools has no ``tools`` column.

Every row remembers the feedback ids it came from, so the snapshot can record them.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from learnloop.learning.chat_format import first_step
from learnloop.learning.tasks import named_labels
from learnloop.storage.records import FeedbackExample, Message

GIST_WORDS = 3  # how many first words of an answer tell its kind (a label)

Row = dict[str, Any]


@dataclass(frozen=True)
class Datasets:
    sft: list[Row] = field(default_factory=list)
    dpo: list[Row] = field(default_factory=list)
    sft_feedback: list[int] = field(default_factory=list)  # feedback ids behind sft rows
    dpo_feedback: list[int] = field(default_factory=list)
    kto: list[Row] = field(default_factory=list)
    kto_feedback: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to train on. KTO rows alone do not count: KTO needs both good and bad
        answers, and a good answer is also an SFT row."""
        return not self.sft and not self.dpo

    @property
    def method(self) -> str:
        return "+".join(name for name in ("sft", "dpo", "kto") if getattr(self, name))

    def content_hash(self) -> str:
        blob = json.dumps(
            {"sft": self.sft, "dpo": self.dpo, "kto": self.kto}, sort_keys=True
        ).encode()
        return hashlib.sha256(blob).hexdigest()


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def said(ex: FeedbackExample, final: str | None = None) -> list[Message]:
    """The turn's trajectory (one assistant message for a turn without tools), with
    ``final`` in place of its final answer when given."""
    steps = ex.trajectory or _assistant(ex.answer)
    return steps if final is None else [*steps[:-1], *_assistant(final)]


def corrected(ex: FeedbackExample) -> list[Message] | None:
    """What the correction says the turn should have been (None: no correction)."""
    if ex.correction_messages:
        return ex.correction_messages
    return said(ex, ex.correction) if ex.correction else None


def changed(ex: FeedbackExample) -> list[Message] | None:
    """The correction when it says something else than the turn did (a pair to learn)."""
    fixed = corrected(ex)
    return fixed if fixed and not _same(fixed, said(ex)) else None


def _same(a: list[Message], b: list[Message]) -> bool:
    def key(messages: list[Message]) -> str:
        return json.dumps([{**m, "content": (m.get("content") or "").strip()} for m in messages])

    return key(a) == key(b)


def _row(ex: FeedbackExample, **columns: Any) -> Row:
    """A row on ``ex``'s prompt; ``tools`` when the turn was offered any."""
    row: Row = {"prompt": ex.messages, **columns}
    if ex.tools:
        row["tools"] = ex.tools
    return row


def _prompt_key(messages: list[Message]) -> str:
    return json.dumps(messages, sort_keys=True)


# A sentence ends at . ! or ? followed by a space or the end of the text ("2.5" goes on).
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def complete_part(answer: str) -> str:
    """The complete sentences of an answer the token limit cut off ('' when there are none).

    Measured on the sentiment bench: the base model answers a positive sentence with "The
    sentence is generally positive. The sentence conveys that ..." up to the limit. Those
    thumbs-ups were the only positive examples thumbs feedback gave; dropping them whole
    taught v1 to answer "neutral" to everything."""
    ends = [m.end() for m in _SENTENCE_END.finditer(answer)]
    return answer[: ends[-1]].strip() if ends else ""


def endorsed(ex: FeedbackExample, cut_off_sentences: bool = True) -> str:
    """The good answer a thumbs-up stands for, complete ('' for a thumbs-down, and for a
    cut-off answer without a complete sentence or when ``cut_off_sentences`` is off)."""
    if ex.rating != "up":
        return ""
    if not ex.truncated:
        return ex.answer
    return complete_part(ex.answer) if cut_off_sentences else ""


def liked(ex: FeedbackExample, cut_off_sentences: bool = True) -> list[Message] | None:
    """The trajectory a thumbs-up stands for (see :func:`endorsed`; a turn that ended
    with calls for its caller to run stands whole), or None."""
    if ex.rating == "up" and not ex.truncated and said(ex)[-1].get("tool_calls"):
        return said(ex)
    if not endorsed(ex, cut_off_sentences):
        return None
    return said(ex, complete_part(ex.answer) if ex.truncated else None)


def as_labels(examples: list[FeedbackExample], labels: list[str]) -> list[FeedbackExample]:
    """Pure: on a labelled task, a thumbs-up on an answer that names exactly one label
    (and no tools) stands for that label word alone, the form the task asks for; the
    rest unchanged. A 👍 on "The sentence is generally considered positive." says the
    label is right, not that the sentence is the answer wanted: trained as said, thumbs
    kept both forms (a bench's exact format stayed at 0.61)."""
    out = []
    for ex in examples:
        named = named_labels(ex.answer, labels)
        if ex.rating == "up" and not ex.correction and not ex.tools and len(named) == 1:
            ex = replace(ex, answer=named[0], truncated=False, trajectory=[])
        out.append(ex)
    return out


def build_sft(
    examples: list[FeedbackExample], cut_off_sentences: bool = True
) -> tuple[list[Row], list[int]]:
    rows, ids = [], []
    for ex in examples:
        target = corrected(ex) or liked(ex, cut_off_sentences)
        if target:
            rows.append(_row(ex, completion=target))
            ids.append(ex.feedback_id)
    return rows, ids


def build_dpo(
    examples: list[FeedbackExample], cut_off_sentences: bool = True, balance: bool = False
) -> tuple[list[Row], list[int]]:
    """Preference pairs (and the feedback rows they came from). ``balance``: see
    :func:`balanced`."""
    pairs: list[tuple[Row, list[int]]] = []
    for ex in examples:
        fixed = changed(ex)
        if fixed:
            pairs.append((_row(ex, chosen=fixed, rejected=said(ex)), [ex.feedback_id]))
    by_prompt: dict[str, list[FeedbackExample]] = defaultdict(list)
    for ex in examples:
        by_prompt[_prompt_key(ex.messages)].append(ex)
    for group in by_prompt.values():
        ups = [e for e in group if e.rating == "up"]
        downs = [e for e in group if e.rating == "down"]
        for up in ups:
            # relative to the rejected answer even a cut one is better: kept whole if need be
            chosen = liked(up, cut_off_sentences) or said(up)
            for down in downs:
                if _same(said(up), said(down)):
                    continue
                row = _row(up, chosen=chosen, rejected=said(down))
                pairs.append((row, [up.feedback_id, down.feedback_id]))
    if balance:
        pairs = balanced(pairs)
    return [row for row, _ in pairs], [i for _, ids in pairs for i in ids]


def gist(text: str) -> str:
    """An answer's first words, lower case, without punctuation: a labelled task's label,
    and what tells kinds of answers apart."""
    return " ".join(w.strip(string.punctuation) for w in text.lower().split()[:GIST_WORDS])


def balanced(pairs: list[tuple[Row, list[int]]]) -> list[tuple[Row, list[int]]]:
    """At most as many pairs rejecting one kind of answer (its :func:`gist`) as reject the
    next most rejected kind, the newest kept. Unbalanced pairs teach a model to avoid
    whatever it said most often: in a thumbs bench 139 of 146 pairs rejected "positive"
    (the base's habit) and DPO learned never to say it."""
    groups: dict[str, list[int]] = defaultdict(list)
    for n, (row, _) in enumerate(pairs):
        groups[gist(first_step(row["rejected"]))].append(n)
    sizes = sorted((len(g) for g in groups.values()), reverse=True)
    cap = sizes[1] if len(sizes) > 1 else sizes[0] if sizes else 0
    kept = {n for g in groups.values() for n in g[-cap:]}
    return [pair for n, pair in enumerate(pairs) if n in kept]


def build_kto(examples: list[FeedbackExample]) -> tuple[list[Row], list[int]]:
    rows: list[Row] = []
    ids: list[int] = []
    for ex in examples:
        rows.append(_row(ex, completion=said(ex), label=ex.rating == "up"))
        ids.append(ex.feedback_id)
        fixed = changed(ex)
        if fixed:
            rows.append(_row(ex, completion=fixed, label=True))
            ids.append(ex.feedback_id)
    return rows, ids


def build_datasets(
    examples: list[FeedbackExample], cut_off_sentences: bool = True, balance: bool = False
) -> Datasets:
    sft, sft_ids = build_sft(examples, cut_off_sentences)
    dpo, dpo_ids = build_dpo(examples, cut_off_sentences, balance)
    kto, kto_ids = build_kto(examples)
    return Datasets(sft, dpo, sft_ids, dpo_ids, kto, kto_ids)


def choose_method(data: Datasets, method: str, min_pairs: int) -> Datasets:
    """Keep the datasets the method trains on (auto: SFT, then DPO when there are at least
    ``min_pairs`` pairs, else KTO when both good and bad thumbs exist); raise ValueError
    with the reason when the chosen method has nothing to train on."""
    kto_usable = {row["label"] for row in data.kto} == {True, False}
    if method == "auto":
        use_dpo = len(data.dpo) >= min_pairs
        use_kto = not use_dpo and kto_usable
        if not data.sft and not use_dpo and not use_kto:
            use_dpo = bool(data.dpo)  # a few pairs beat nothing
        keep = {"sft": True, "dpo": use_dpo, "kto": use_kto}
    else:
        keep = {name: name == method for name in ("sft", "dpo", "kto")}
        if method == "kto" and not kto_usable:
            raise ValueError("KTO needs both thumbs-up and thumbs-down answers")
        if not getattr(data, method):
            raise ValueError(f"there is no {method.upper()} data in the feedback so far")
    return Datasets(
        sft=data.sft if keep["sft"] else [],
        dpo=data.dpo if keep["dpo"] else [],
        sft_feedback=data.sft_feedback if keep["sft"] else [],
        dpo_feedback=data.dpo_feedback if keep["dpo"] else [],
        kto=data.kto if keep["kto"] else [],
        kto_feedback=data.kto_feedback if keep["kto"] else [],
    )


def why_empty(examples: list[FeedbackExample], cut_off_sentences: bool = True) -> str:
    """A sentence saying why ``examples`` build no training data."""
    if not examples:
        return "there is no feedback yet: rate answers with /up, /down or /fix first"
    downs = sum(1 for e in examples if e.rating == "down" and not e.correction)
    cut = sum(
        1
        for e in examples
        if e.rating == "up" and not endorsed(e, cut_off_sentences) and not e.correction
    )
    cut_text = f" ({cut} thumbs-up answer(s) were cut off by the token limit)" if cut else ""
    return (
        f"the {len(examples)} rated answer(s) make no training example: {downs} thumbs-down "
        f"without a correction and no complete thumbs-up answer to pair them with{cut_text}; "
        "add a correction (/fix or --correction) or a thumbs-up"
    )
