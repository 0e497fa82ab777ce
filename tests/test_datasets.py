"""The dataset builders: feedback examples in, TRL's conversational dataset shapes out.

Invariants tested here (pure functions, no database):

- a thumbs-up answer becomes one SFT prompt-completion row; a thumbs-down without a
  correction becomes nothing on its own;
- a correction becomes an SFT row (the correction as completion) and a DPO pair
  chosen=correction, rejected=answer, unless it is the answer itself;
- a thumbs-up and a thumbs-down answer to the same prompt (same messages) make a DPO pair
  chosen=up, rejected=down; different prompts or identical answers make none;
- the feedback ids recorded for each dataset are exactly those behind its rows;
- ``content_hash`` is stable for equal data and changes with any row;
- ``empty`` and ``why_empty`` tell no feedback apart from unusable feedback;
- every row passes TRL's own conversational-format check and loads into a
  ``datasets.Dataset`` with exactly the columns TRL's trainers expect.
"""

from __future__ import annotations

from typing import Any

import pytest
from datasets import Dataset
from trl.data_utils import is_conversational

from learnloop.learning.config import LearnConfig
from learnloop.learning.datasets import (
    Datasets,
    as_labels,
    build_datasets,
    build_dpo,
    build_sft,
    why_empty,
)
from learnloop.storage.errors import UsageError
from learnloop.storage.records import FeedbackExample, Message

SYSTEM: Message = {"role": "system", "content": "You are helpful."}


def prompt(question: str) -> list[Message]:
    return [SYSTEM, {"role": "user", "content": question}]


def assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


_next_id = iter(range(1, 10_000))


def example(
    rating: str,
    answer: str,
    *,
    question: str = "What colour is the sky?",
    correction: str | None = None,
    feedback_id: int | None = None,
    turn_id: int | None = None,
    truncated: bool = False,
) -> FeedbackExample:
    fid = feedback_id if feedback_id is not None else next(_next_id)
    return FeedbackExample(
        feedback_id=fid,
        turn_id=turn_id if turn_id is not None else fid + 100,
        thread_id="t1",
        messages=prompt(question),
        answer=answer,
        rating=rating,
        correction=correction,
        user_name="local",
        truncated=truncated,
    )


class TestThumbsAndCorrectionsBecomeSftRows:
    def test_a_thumbs_up_becomes_one_sft_row(self) -> None:
        ex = example("up", "Blue.")
        data = build_datasets([ex])
        assert data.sft == [
            {"prompt": prompt("What colour is the sky?"), "completion": assistant("Blue.")}
        ]
        assert data.dpo == []
        assert data.sft_feedback == [ex.feedback_id]
        assert not data.empty

    def test_a_cut_off_thumbs_up_is_no_sft_target_but_still_a_good_kto_answer(self) -> None:
        cut = example("up", "The sky is blue because of", truncated=True)
        data = build_datasets([cut])
        assert data.sft == [] and data.empty
        assert [row["label"] for row in data.kto] == [True]
        assert "1 thumbs-up answer(s) were cut off by the token limit" in why_empty([cut])

    def test_a_cut_off_thumbs_up_trains_on_its_complete_sentences(self) -> None:
        up = example("up", "The sky is blue. It looks blue because of the 2.5 km", truncated=True)
        down = example("down", "Green.")
        data = build_datasets([up, down])
        trimmed = assistant("The sky is blue.")
        assert data.sft == [{"prompt": prompt("What colour is the sky?"), "completion": trimmed}]
        assert [row["chosen"] for row in data.dpo] == [trimmed]
        # --cut-off-sentences false: no SFT target; the pair keeps the whole answer
        strict = build_datasets([up, down], cut_off_sentences=False)
        assert strict.sft == [] and [r["chosen"] for r in strict.dpo] == [assistant(up.answer)]
        # a complete answer is kept whole, decimals and all
        whole = example("up", "It is 2.5 km. Mostly blue")
        assert build_datasets([whole]).sft[0]["completion"] == assistant(whole.answer)

    def test_a_correction_of_a_cut_off_answer_is_still_an_sft_target(self) -> None:
        fixed = example("down", "The sky is blue because of", correction="Blue.", truncated=True)
        assert build_datasets([fixed]).sft == [
            {"prompt": prompt("What colour is the sky?"), "completion": assistant("Blue.")}
        ]

    def test_a_thumbs_down_without_correction_becomes_nothing(self) -> None:
        data = build_datasets([example("down", "Green.")])
        assert data.sft == [] and data.dpo == []
        assert data.sft_feedback == [] and data.dpo_feedback == []
        assert data.empty

    def test_a_correction_becomes_an_sft_row_and_a_dpo_pair(self) -> None:
        ex = example("down", "Green.", correction="Blue.")
        data = build_datasets([ex])
        p = prompt("What colour is the sky?")
        assert data.sft == [{"prompt": p, "completion": assistant("Blue.")}]
        assert data.dpo == [
            {"prompt": p, "chosen": assistant("Blue."), "rejected": assistant("Green.")}
        ]
        assert data.sft_feedback == [ex.feedback_id]
        assert data.dpo_feedback == [ex.feedback_id]

    def test_a_correction_identical_to_the_answer_makes_no_dpo_pair(self) -> None:
        ex = example("down", "Blue.", correction="Blue.")
        data = build_datasets([ex])
        assert data.dpo == []
        assert data.dpo_feedback == []
        assert data.sft == [
            {"prompt": prompt("What colour is the sky?"), "completion": assistant("Blue.")}
        ]

    def test_a_correction_differing_only_in_surrounding_whitespace_makes_no_dpo_pair(
        self,
    ) -> None:
        data = build_datasets([example("down", "Blue.", correction="  Blue.\n")])
        assert data.dpo == []

    def test_the_builders_keep_the_input_order(self) -> None:
        a = example("up", "A.", question="qa")
        b = example("down", "wrong", question="qb", correction="B.")
        c = example("up", "C.", question="qc")
        rows, ids = build_sft([a, b, c])
        assert [r["completion"][0]["content"] for r in rows] == ["A.", "B.", "C."]
        assert ids == [a.feedback_id, b.feedback_id, c.feedback_id]


class TestUpAndDownAnswersToTheSamePromptMakeDpoPairs:
    def test_regen_siblings_rated_up_and_down_make_a_pair(self) -> None:
        up = example("up", "Blue.")
        down = example("down", "Green.")
        data = build_datasets([down, up])
        assert data.dpo == [
            {
                "prompt": prompt("What colour is the sky?"),
                "chosen": assistant("Blue."),
                "rejected": assistant("Green."),
            }
        ]
        assert sorted(data.dpo_feedback) == sorted([up.feedback_id, down.feedback_id])
        # The thumbs-up answer is also an SFT row; the thumbs-down one is not.
        assert data.sft == [
            {"prompt": prompt("What colour is the sky?"), "completion": assistant("Blue.")}
        ]
        assert data.sft_feedback == [up.feedback_id]

    def test_different_prompts_make_no_pair(self) -> None:
        data = build_datasets(
            [example("up", "Blue.", question="sky?"), example("down", "Red.", question="grass?")]
        )
        assert data.dpo == []
        assert data.dpo_feedback == []

    def test_identical_answers_make_no_pair(self) -> None:
        data = build_datasets([example("up", "Blue."), example("down", " Blue. ")])
        assert data.dpo == []
        assert data.dpo_feedback == []

    def test_every_up_is_paired_with_every_down(self) -> None:
        ups = [example("up", "Blue."), example("up", "Sky blue.")]
        downs = [example("down", "Green."), example("down", "Red.")]
        rows, ids = build_dpo([*ups, *downs])
        pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows}
        assert pairs == {
            ("Blue.", "Green."),
            ("Blue.", "Red."),
            ("Sky blue.", "Green."),
            ("Sky blue.", "Red."),
        }
        assert len(rows) == 4
        assert set(ids) == {e.feedback_id for e in ups + downs}

    def test_a_corrected_down_pairs_with_its_correction_and_with_an_up_sibling(self) -> None:
        up = example("up", "Blue.")
        down = example("down", "Green.", correction="Blue, on a clear day.")
        rows, ids = build_dpo([up, down])
        pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows}
        assert pairs == {("Blue, on a clear day.", "Green."), ("Blue.", "Green.")}
        assert set(ids) == {up.feedback_id, down.feedback_id}

    def test_balanced_pairs_reject_no_label_more_than_the_next_most_rejected(self) -> None:
        """As in the thumbs bench: the base says "positive" to most texts, so most pairs
        reject it; balanced, it is rejected no more often than "neutral" is."""
        rows = []
        for n in range(6):
            q = f"Text {n}: sentiment?"
            rows += [
                example("up", "negative", question=q),
                example("down", "Positive.", question=q),
            ]
        for n in range(2):
            q = f"Other {n}: sentiment?"
            rows += [example("up", "positive", question=q), example("down", "neutral", question=q)]
        rows += [
            example("up", "neutral", question="Last"),
            example("down", "negative", question="Last"),
        ]
        unbalanced, _ = build_dpo(rows)
        kept, ids = build_dpo(rows, balance=True)
        rejected = [r["rejected"][0]["content"] for r in kept]
        assert len(unbalanced) == 9
        assert sorted(rejected) == ["Positive.", "Positive.", "negative", "neutral", "neutral"]
        assert len(ids) == 2 * len(kept)  # each pair's two feedback rows, no others
        newest = [
            r["prompt"][-1]["content"] for r in kept if r["rejected"][0]["content"] == "Positive."
        ]
        assert newest == ["Text 4: sentiment?", "Text 5: sentiment?"]  # the newest kept


class TestLikedAsLabel:
    def test_a_liked_answer_naming_one_label_trains_as_that_word(self) -> None:
        """On a labelled task a 👍 says the label is right; the sentence around it, cut
        off or not, is not the form the task asks for."""
        labels = ["positive", "negative", "neutral"]
        q = "Profits rose. Sentiment?"
        rows = [
            example("up", "The sentence is generally considered Positive. It", truncated=True),
            example("down", "It is negative.", question=q),
            example("up", "Positive, I think.", question=q),
            example("up", "Positive or negative?", question="Both?"),  # two labels: as said
            example("down", "neutral", question="Fixed?", correction="negative"),
        ]
        data = build_datasets(as_labels(rows, labels))
        targets = [r["completion"][0]["content"] for r in data.sft]
        assert targets == ["positive", "positive", "Positive or negative?", "negative"]
        pair = next(r for r in data.dpo if r["prompt"][-1]["content"] == q)
        assert (pair["chosen"], pair["rejected"]) == (
            assistant("positive"),
            assistant("It is negative."),
        )
        assert rows[0].answer.startswith("The sentence")  # the feedback itself is unchanged

    def test_it_needs_the_tasks_labels(self) -> None:
        with pytest.raises(UsageError, match="liked_as_label needs the task's labels"):
            LearnConfig(liked_as_label=True)


class TestFeedbackIdsAndContentHash:
    def test_the_recorded_feedback_ids_are_the_ones_behind_each_datasets_rows(self) -> None:
        up = example("up", "Blue.", question="sky?")
        down = example("down", "Green.", question="sky?")
        fixed = example("down", "4", question="2+3?", correction="5")
        ignored = example("down", "no", question="other?")
        data = build_datasets([up, down, fixed, ignored])

        assert data.sft_feedback == [up.feedback_id, fixed.feedback_id]
        assert len(data.sft) == len(data.sft_feedback)
        assert set(data.dpo_feedback) == {up.feedback_id, down.feedback_id, fixed.feedback_id}
        assert len(data.dpo) == 2
        assert ignored.feedback_id not in data.sft_feedback + data.dpo_feedback

    def test_content_hash_is_stable_for_equal_data(self) -> None:
        examples = [example("up", "Blue."), example("down", "Green.", correction="Blue!")]
        first = build_datasets(examples).content_hash()
        again = build_datasets(list(examples)).content_hash()
        assert first == again
        assert len(first) == 64
        # The hash is over the rows, not over which feedback rows produced them.
        renumbered = [example(e.rating, e.answer, correction=e.correction) for e in examples]
        assert build_datasets(renumbered).content_hash() == first

    def test_content_hash_changes_when_a_row_changes(self) -> None:
        base = build_datasets([example("up", "Blue.")]).content_hash()
        assert build_datasets([example("up", "Blue!")]).content_hash() != base
        assert build_datasets([example("up", "Blue.", question="sky??")]).content_hash() != base
        assert (
            build_datasets([example("up", "Blue."), example("down", "Green.")]).content_hash()
            != base
        )
        assert Datasets().content_hash() != base


class TestEmptyDatasetsExplainThemselves:
    def test_no_feedback_at_all(self) -> None:
        data = build_datasets([])
        assert data.empty
        assert "no feedback yet" in why_empty([])

    def test_only_thumbs_down_without_corrections(self) -> None:
        examples = [example("down", "Green."), example("down", "Red.", question="grass?")]
        assert build_datasets(examples).empty
        reason = why_empty(examples)
        assert "2 rated answer(s)" in reason
        assert "2 thumbs-down without a correction" in reason
        assert "correction" in reason and "thumbs-up" in reason
        assert "no feedback yet" not in reason

    @pytest.mark.parametrize(
        "examples",
        [
            [example("up", "Blue.")],
            [example("down", "Green.", correction="Blue.")],
        ],
    )
    def test_usable_feedback_is_not_empty(self, examples: list[FeedbackExample]) -> None:
        assert not build_datasets(examples).empty


def _is_message_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and set(m) == {"role", "content"} for m in value)
    )


class TestRowsPassTrlsOwnFormatChecks:
    @pytest.fixture
    def data(self) -> Datasets:
        return build_datasets(
            [
                example("up", "Blue.", question="sky?"),
                example("down", "Green.", question="sky?"),
                example("down", "4", question="2+3?", correction="5"),
                example("up", "Paris.", question="capital of France?"),
            ]
        )

    def test_sft_rows_are_conversational_prompt_completion(self, data: Datasets) -> None:
        assert data.sft
        for row in data.sft:
            assert is_conversational(row)
            assert set(row) == {"prompt", "completion"}
            assert _is_message_list(row["prompt"]) and _is_message_list(row["completion"])
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["completion"]] == ["assistant"]
        dataset = Dataset.from_list(data.sft)
        assert dataset.column_names == ["prompt", "completion"]
        assert len(dataset) == len(data.sft)

    def test_dpo_rows_are_conversational_preference_pairs(self, data: Datasets) -> None:
        assert data.dpo
        for row in data.dpo:
            assert is_conversational(row)
            assert set(row) == {"prompt", "chosen", "rejected"}
            for key in ("prompt", "chosen", "rejected"):
                assert _is_message_list(row[key])
                assert is_conversational({key: row[key]})
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["chosen"]] == ["assistant"]
            assert [m["role"] for m in row["rejected"]] == ["assistant"]
        dataset = Dataset.from_list(data.dpo)
        assert dataset.column_names == ["prompt", "chosen", "rejected"]
        assert len(dataset) == len(data.dpo)
