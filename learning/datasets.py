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

Every row remembers the feedback ids it came from, so the snapshot can record them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from learnloop.storage.records import FeedbackExample, Message

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


def build_sft(
    examples: list[FeedbackExample], cut_off_sentences: bool = True
) -> tuple[list[Row], list[int]]:
    rows, ids = [], []
    for ex in examples:
        target = ex.correction or endorsed(ex, cut_off_sentences)
        if target:
            rows.append({"prompt": ex.messages, "completion": _assistant(target)})
            ids.append(ex.feedback_id)
    return rows, ids


def build_dpo(
    examples: list[FeedbackExample], cut_off_sentences: bool = True
) -> tuple[list[Row], list[int]]:
    rows: list[Row] = []
    ids: list[int] = []
    for ex in examples:
        if ex.correction and ex.correction.strip() != ex.answer.strip():
            rows.append(
                {
                    "prompt": ex.messages,
                    "chosen": _assistant(ex.correction),
                    "rejected": _assistant(ex.answer),
                }
            )
            ids.append(ex.feedback_id)
    by_prompt: dict[str, list[FeedbackExample]] = defaultdict(list)
    for ex in examples:
        by_prompt[_prompt_key(ex.messages)].append(ex)
    for group in by_prompt.values():
        ups = [e for e in group if e.rating == "up"]
        downs = [e for e in group if e.rating == "down"]
        for up in ups:
            # relative to the rejected answer even a cut one is better: kept whole if need be
            chosen = endorsed(up, cut_off_sentences) or up.answer
            for down in downs:
                if up.answer.strip() == down.answer.strip():
                    continue
                rows.append(
                    {
                        "prompt": up.messages,
                        "chosen": _assistant(chosen),
                        "rejected": _assistant(down.answer),
                    }
                )
                ids.extend([up.feedback_id, down.feedback_id])
    return rows, ids


def build_kto(examples: list[FeedbackExample]) -> tuple[list[Row], list[int]]:
    rows: list[Row] = []
    ids: list[int] = []
    for ex in examples:
        rows.append(
            {"prompt": ex.messages, "completion": _assistant(ex.answer), "label": ex.rating == "up"}
        )
        ids.append(ex.feedback_id)
        if ex.correction and ex.correction.strip() != ex.answer.strip():
            rows.append(
                {"prompt": ex.messages, "completion": _assistant(ex.correction), "label": True}
            )
            ids.append(ex.feedback_id)
    return rows, ids


def build_datasets(examples: list[FeedbackExample], cut_off_sentences: bool = True) -> Datasets:
    sft, sft_ids = build_sft(examples, cut_off_sentences)
    dpo, dpo_ids = build_dpo(examples, cut_off_sentences)
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
