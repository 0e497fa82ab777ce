"""Quality control before training: duplicates collapse, the per-user cap, contradictions
counted, up/down balance reported, and a thread-level train / held-out split."""

from __future__ import annotations

import pytest

from learnloop.learning.datasets import Datasets, build_datasets, build_kto, choose_method
from learnloop.learning.quality import clean, is_held_out, split_by_thread
from learnloop.storage.records import FeedbackExample

_ids = iter(range(1, 10_000))


def ex(
    prompt: str,
    answer: str = "a",
    rating: str = "up",
    *,
    user: str = "ann",
    thread: str = "t1",
    correction: str | None = None,
    conflicts: int = 0,
) -> FeedbackExample:
    n = next(_ids)
    return FeedbackExample(
        feedback_id=n,
        turn_id=n,
        thread_id=thread,
        messages=[{"role": "user", "content": prompt}],
        answer=answer,
        rating=rating,
        correction=correction,
        user_name=user,
        conflicts=conflicts,
    )


class TestDuplicates:
    def test_near_duplicate_prompts_teaching_the_same_thing_collapse_to_the_newest(self) -> None:
        old, new = ex("What is 2+2?", "Four."), ex("what is 2 + 2", "four")
        kept, report = clean([old, new])
        assert kept == [new] and report.duplicates_collapsed == 1

    def test_same_prompt_with_different_ratings_is_kept_for_pairs(self) -> None:
        up, down = ex("Hi", "Hello!", "up"), ex("Hi", "Go away.", "down")
        kept, report = clean([up, down])
        assert kept == [up, down] and report.duplicates_collapsed == 0

    def test_different_prompts_are_kept(self) -> None:
        kept, _ = clean([ex("Capital of France?"), ex("Capital of Spain?")])
        assert len(kept) == 2


KEYS = frozenset({"loud", "quiet"})  # the names of API keys: the users a server tells apart


class TestUserCap:
    def test_a_single_user_is_never_capped(self) -> None:
        examples = [ex(f"q{i}") for i in range(10)]
        kept, report = clean(examples, max_user_share=0.3)
        assert kept == examples and report.capped == {}

    def test_no_user_supplies_more_than_the_share_and_their_oldest_go_first(self) -> None:
        loud = [ex(f"loud {i}", user="loud") for i in range(8)]
        quiet = [ex(f"quiet {i}", user="quiet") for i in range(2)]
        kept, report = clean(loud + quiet, max_user_share=0.5, real_users=KEYS)
        assert report.capped == {"loud": 6}
        assert [e for e in kept if e.user_name == "loud"] == loud[-2:]
        assert report.per_user == {"loud": 2, "quiet": 2}

    def test_only_real_users_are_capped_one_person_in_two_places_is_not(self) -> None:
        """Seen: the web page recorded feedback as `local`, the CLI as `$USER`: the cap
        then dropped most of one person's feedback."""
        mine = [ex(f"cli {i}", user="local") for i in range(8)]
        also_mine = [ex(f"web {i}", user="ann") for i in range(2)]
        kept, report = clean(mine + also_mine, max_user_share=0.5, real_users=KEYS)
        assert report.capped == {} and len(kept) == 10
        keyed = [ex(f"q {i}", user="loud") for i in range(8)]
        _, report = clean(keyed + mine, max_user_share=0.5, real_users=KEYS)
        assert report.capped == {}  # one real user: nobody to balance against


class TestReport:
    def test_counts_contradictions_balance_and_corrections(self) -> None:
        examples = [
            ex("a", rating="up"),
            ex("b", rating="down", conflicts=1),
            ex("c", rating="down", correction="better"),
            ex("d", rating="up"),
        ]
        _, report = clean(examples)
        assert (report.up, report.down, report.corrections) == (2, 2, 1)
        assert report.contradictions == 1 and report.up_share == 0.5


class TestSplit:
    def test_a_thread_is_entirely_on_one_side(self) -> None:
        examples = [ex(f"q{i}", thread=f"thread-{i % 10}") for i in range(100)]
        train, held = split_by_thread(examples, 0.3)
        assert len(train) + len(held) == 100 and held and train
        assert not {e.thread_id for e in train} & {e.thread_id for e in held}

    def test_the_split_is_stable_and_roughly_the_share(self) -> None:
        threads = [f"t{i}" for i in range(2000)]
        held = [t for t in threads if is_held_out(t, 0.2)]
        assert held == [t for t in threads if is_held_out(t, 0.2)]
        assert 0.15 < len(held) / len(threads) < 0.25
        assert not any(is_held_out(t, 0.0) for t in threads)


class TestKto:
    def test_every_rating_is_an_unpaired_row_and_corrections_are_desirable(self) -> None:
        rows, ids = build_kto(
            [
                ex("a", "good", "up"),
                ex("b", "bad", "down"),
                ex("c", "meh", "down", correction="ok"),
            ]
        )
        assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
            ("good", True),
            ("bad", False),
            ("meh", False),
            ("ok", True),
        ]
        assert set(rows[0]) == {"prompt", "completion", "label"} and len(ids) == 4


class TestChooseMethod:
    @staticmethod
    def data(pairs: int, ups: int = 1, downs: int = 1) -> Datasets:
        examples = [ex(f"up {i}", "good", "up") for i in range(ups)]
        examples += [ex(f"down {i}", "bad", "down") for i in range(downs)]
        examples += [ex(f"fix {i}", "bad", "down", correction="good") for i in range(pairs)]
        return build_datasets(examples)

    def test_auto_uses_dpo_with_enough_pairs(self) -> None:
        assert choose_method(self.data(pairs=4), "auto", 4).method == "sft+dpo"

    def test_auto_falls_back_to_kto_with_too_few_pairs(self) -> None:
        chosen = choose_method(self.data(pairs=1), "auto", 4)
        assert chosen.method == "sft+kto" and not chosen.dpo_feedback

    def test_auto_keeps_sft_alone_without_bad_answers(self) -> None:
        assert choose_method(self.data(pairs=0, downs=0), "auto", 4).method == "sft"

    def test_explicit_method_without_its_data_says_why(self) -> None:
        with pytest.raises(ValueError, match="no DPO data"):
            choose_method(self.data(pairs=0), "dpo", 4)
        with pytest.raises(ValueError, match="both thumbs-up and thumbs-down"):
            choose_method(self.data(pairs=0, downs=0), "kto", 4)
        assert choose_method(self.data(pairs=2), "kto", 4).method == "kto"


class TestSnapshotSplit:
    def test_the_gate_off_holds_nothing_out(self) -> None:
        from learnloop.learning.config import LearnConfig
        from learnloop.learning.snapshot import build_snapshot

        examples = [
            ex(f"q{i}", rating="down", correction="b", thread=f"thread-{i}") for i in range(40)
        ]
        gated = build_snapshot(examples, LearnConfig(held_out_share=0.5))
        assert 0 < len(gated.heldout_ids) < 40
        assert len(gated.data.sft) == 40 - len(gated.heldout_ids)
        ungated = build_snapshot(examples, LearnConfig(held_out_share=0.5, gate=False))
        assert ungated.heldout_ids == [] and len(ungated.data.sft) == 40

    def test_too_little_to_hold_out_all_teaches_and_is_judged_by_what_it_taught(self) -> None:
        """Seen: a web-page correction, told it "will be learned from", was held out and
        never trained on; the gate then had two pairs to judge by."""
        from learnloop.learning.config import LearnConfig
        from learnloop.learning.snapshot import build_snapshot

        examples = [
            ex(f"q{i}", rating="down", correction="b", thread=f"thread-{i}") for i in range(10)
        ] + [ex("liked", thread="thread-liked")]
        snap = build_snapshot(examples, LearnConfig(held_out_share=0.5, min_heldout=9))
        assert snap.heldout_ids == [] and len(snap.data.sft) == 11
        assert len(snap.taught_fixes) == 10 and snap.taught_liked[0]["answer"] == "a"
        held = build_snapshot(examples, LearnConfig(held_out_share=0.5, min_heldout=2))
        assert held.heldout_ids and held.taught_fixes == []

    def test_feedback_all_in_held_out_threads_trains_rather_than_nothing(self) -> None:
        from learnloop.learning.config import LearnConfig
        from learnloop.learning.snapshot import build_snapshot

        held = next(f"t{i}" for i in range(1000) if is_held_out(f"t{i}", 0.2))
        snap = build_snapshot([ex("q", thread=held)], LearnConfig())
        assert snap.heldout_ids == [] and len(snap.data.sft) == 1
