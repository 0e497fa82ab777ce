"""The promotion gate: candidates are measured against the active version on held-out
feedback and the control set, and promoted only when they win without breaking it.

``decide`` is pure and tested with numbers; the plumbing (held-out split by thread, both
versions measured in the trainer child, the decision, reasons and control answers
recorded, a rejected version left inactive) runs for real on the tiny model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from learnloop.agent.config import GenerationConfig
from learnloop.agent.runtime import Agent
from learnloop.agent.transformers_engine import TransformersBackend
from learnloop.learning.config import LearnConfig
from learnloop.learning.cycle import run_cycle
from learnloop.learning.gate import NOTHING, decide
from learnloop.learning.models import resolve_model
from learnloop.learning.quality import is_held_out
from learnloop.learning.snapshot import default_control_set
from learnloop.storage.records import ControlPrompt
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli, run_json


def side(
    pref: float | None = 0.5, fix: float | None = None, acc: float = 0.8, logp: float = -2.0
) -> dict:
    return {
        "heldout_pairs": 4,
        "preference_accuracy": pref,
        "heldout_corrections": 4,
        "correction_match": fix,
        "control_prompts": 10,
        "control_accuracy": acc,
        "control_logp_per_token": logp,
        "task_rows": 0,
    }


def result(candidate: dict, active: dict) -> dict:
    return {"active_version": "base", "candidate": candidate, "active": active}


class TestDecide:
    def test_a_win_on_held_out_preferences_with_a_steady_control_set_promotes(self) -> None:
        d = decide(result(side(pref=0.75), side(pref=0.5)), LearnConfig())
        assert d.promote
        assert d.reasons == [
            "wins on preference_accuracy 0.750 vs 0.500 for the active version",
            "control set holds",
        ]

    def test_a_tie_is_not_a_win_unless_the_other_metric_improves(self) -> None:
        assert not decide(result(side(pref=0.5), side(pref=0.5)), LearnConfig()).promote
        tie_then_win = decide(
            result(side(pref=0.5, fix=1.0), side(pref=0.5, fix=0.0)), LearnConfig()
        )
        assert tie_then_win.promote and "ties on preference_accuracy" in tie_then_win.reasons[0]

    def test_breaking_the_control_set_rejects_even_a_winner(self) -> None:
        d = decide(result(side(pref=1.0, acc=0.5), side(pref=0.0, acc=0.9)), LearnConfig())
        assert not d.promote
        assert "control accuracy drops from 0.900 (base) to 0.500 (allowed: 0.1)" in d.reasons
        loose = LearnConfig(control_max_drop=0.5)
        assert decide(result(side(pref=1.0, acc=0.5), side(pref=0.0, acc=0.9)), loose).promote
        d = decide(result(side(pref=1.0, logp=-3.0), side(pref=0.0, logp=-2.0)), LearnConfig())
        assert not d.promote and "log-prob per token drops" in d.reasons[1]

    def test_drifting_too_far_from_the_active_version_rejects_when_bounded(self) -> None:
        drifted = {**result(side(pref=1.0), side(pref=0.0)), "kl": {"control": 0.4}}
        assert decide(drifted, LearnConfig()).promote  # measured, not bounded by default
        d = decide(drifted, LearnConfig(gate_max_kl=0.1))
        assert not d.promote
        assert "moved 0.400 nats per token from the active version (KL; allowed: 0.1)" in (
            " ".join(d.reasons)
        )
        assert decide(drifted, LearnConfig(gate_max_kl=0.5)).promote

    def test_the_control_set_is_held_against_the_base_not_a_lucky_active_version(self) -> None:
        lucky = result(side(pref=1.0, acc=0.67), side(pref=0.5, acc=0.83))
        lucky["base_control"] = {"control_accuracy": 0.67, "control_logp_per_token": -2.0}
        assert decide(lucky, LearnConfig()).promote
        lucky["base_control"]["control_accuracy"] = 0.83
        assert not decide(lucky, LearnConfig()).promote

    def test_no_held_out_data_does_not_promote_blindly_unless_asked(self) -> None:
        empty = result(side(pref=None), side(pref=None))
        d = decide(empty, LearnConfig())
        assert not d.promote
        assert d.reasons[0] == NOTHING
        assert d.summary.startswith("not promoted: nothing to judge it by")
        assert decide(empty, LearnConfig(promote_without_heldout=True)).promote

    def test_the_configured_metric_comes_first(self) -> None:
        config = LearnConfig(gate_metric="correction_match")
        d = decide(result(side(pref=0.0, fix=1.0), side(pref=1.0, fix=0.5)), config)
        assert d.promote and d.reasons[0].startswith("wins on correction_match")

    def test_the_log_prob_margin_breaks_a_tie_that_small_held_out_sets_produce(self) -> None:
        cand, act = side(pref=1.0), side(pref=1.0)
        cand["preference_margin"], act["preference_margin"] = 4.5, 3.0
        d = decide(result(cand, act), LearnConfig())
        assert d.promote
        assert d.reasons[0] == (
            "ties on preference_accuracy 1.000; "
            "wins on preference_margin 4.500 vs 3.000 for the active version"
        )
        assert not decide(result(act, cand), LearnConfig()).promote

    def test_a_margin_that_moves_less_than_the_minimum_is_noise_not_a_win(self) -> None:
        """Seen: v2 promoted on preference_margin 11.164 vs 11.128, from 2 held-out pairs."""
        cand, act = side(pref=1.0), side(pref=1.0)
        cand["preference_margin"], act["preference_margin"] = 11.164, 11.128
        d = decide(result(cand, act), LearnConfig())
        assert not d.promote and d.reasons[0].startswith("does not win: ties on")
        assert decide(result(cand, act), LearnConfig(gate_min_margin=0.01)).promote

    def test_a_verdict_says_in_plain_words_what_decided(self) -> None:
        cand, act = side(pref=0.75), side(pref=0.5)
        for measured in (cand, act):
            measured.update(heldout_pairs=8, heldout_corrections=0, control_prompts=12)
        d = decide(result(cand, act), LearnConfig())
        assert d.summary == (
            "promoted: judged on 8 kept-aside items it was not trained on: prefers the "
            "better answer in 6 of 8 kept-aside pairs (before: 4 of 8); general questions "
            "hold (10 of 12 right, the base model 10 of 12)"
        )
        broken = decide(result({**cand, "control_accuracy": 0.5}, act), LearnConfig())
        assert broken.summary.startswith("not promoted: ") and "worse at general" in broken.summary

    def test_task_accuracy_can_be_the_metric_and_always_guards(self) -> None:
        config = LearnConfig(gate_metric="task_accuracy", eval_file="tasks.jsonl")
        cand, act = side(pref=0.0), side(pref=1.0)
        cand["task_accuracy"], act["task_accuracy"] = 0.9, 0.6
        d = decide(result(cand, act), config)
        assert d.promote and d.reasons[0].startswith("wins on task_accuracy 0.900 vs 0.600")
        # Winning on preferences does not excuse a drop in task accuracy.
        d = decide(result(act, cand), LearnConfig(eval_file="tasks.jsonl"))
        assert not d.promote
        assert "task accuracy drops from 0.900 to 0.600 (allowed: 0.0)" in d.reasons

    def test_macro_f1_as_the_metric_rejects_answering_the_commonest_label_to_all(self) -> None:
        """Measured on the thumbs bench: an always-"neutral" v1 beat the base on accuracy."""
        config = LearnConfig(gate_metric="task_macro_f1", eval_file="tasks.jsonl")
        always_neutral, base = side(pref=None), side(pref=None)
        always_neutral.update(task_accuracy=0.61, task_macro_f1=0.25)
        base.update(task_accuracy=0.47, task_macro_f1=0.35)
        d = decide(result(always_neutral, base), config)
        assert not d.promote
        assert d.reasons[0] == "does not win: task_macro_f1 0.250 vs 0.350 for the active version"
        assert decide(result(always_neutral, base), LearnConfig(eval_file="t.jsonl")).promote

    def test_gate_off_promotes_and_says_so(self) -> None:
        d = decide(None, LearnConfig(gate=False))
        assert d.promote and "gate off" in d.reasons[0]


def taught(fixed: int, liked_logp: float | None, corrections: int = 1) -> dict:
    measured = side(pref=None)
    measured.update(
        taught_corrections=corrections,
        taught_corrected=fixed,
        taught_liked=0 if liked_logp is None else 3,
        taught_liked_logp=liked_logp,
        control_prompts=12,
    )
    return measured


class TestJudgedByWhatWasTaught:
    """With too little feedback to hold any out, the candidate is judged by what it was
    taught: the corrections now given, the liked answers more likely, the control set."""

    def test_a_learned_correction_and_likelier_liked_answers_promote(self) -> None:
        d = decide(result(taught(1, -1.2), taught(0, -2.0)), LearnConfig())
        assert d.promote
        assert d.summary == (
            "promoted: judged on what it was taught: 1 of 1 corrections now answered "
            "(before: 0), liked answers more likely; general questions hold (10 of 12 "
            "right, the base model 10 of 12)"
        )

    def test_a_correction_not_learned_is_not_a_win(self) -> None:
        d = decide(result(taught(0, None), taught(0, None)), LearnConfig())
        assert not d.promote and "0 of 1 corrections now answered" in d.summary

    def test_liked_answers_alone_must_become_likelier_by_the_minimum(self) -> None:
        assert not decide(result(taught(0, -1.99, 0), taught(0, -2.0, 0)), LearnConfig()).promote
        assert decide(result(taught(0, -1.9, 0), taught(0, -2.0, 0)), LearnConfig()).promote

    def test_a_new_correction_wins_when_the_liked_answers_were_learned_before(self) -> None:
        """Measured: the second cycle after the walkthrough learned its new correction, but
        v1 had learned the liked answers already, so they could not rise again."""
        d = decide(result(taught(2, -0.20, 2), taught(1, -0.21, 2)), LearnConfig())
        assert d.promote and "liked answers as likely as before" in d.summary
        worse = decide(result(taught(2, -0.5, 2), taught(1, -0.2, 2)), LearnConfig())
        assert not worse.promote and "liked answers less likely" in worse.summary

    def test_forgetting_a_correction_the_active_version_gave_rejects(self) -> None:
        d = decide(result(taught(1, -1.0, 2), taught(2, -2.0, 2)), LearnConfig())
        assert not d.promote

    def test_the_control_set_still_guards(self) -> None:
        d = decide(
            result({**taught(1, -1.0), "control_accuracy": 0.3}, taught(0, -2)), LearnConfig()
        )
        assert not d.promote and "control accuracy drops" in d.reasons[1]

    def test_held_out_evidence_decides_when_there_is_some(self) -> None:
        cand, act = taught(1, -1.0), taught(0, -2.0)
        cand["preference_accuracy"], act["preference_accuracy"] = 0.25, 0.5
        assert not decide(result(cand, act), LearnConfig()).promote


def threads(held_out: bool, count: int) -> list[str]:
    names = (f"thread-{i}" for i in range(10_000))
    return [n for n in names if is_held_out(n, 0.2) == held_out][:count]


def test_a_cycle_measures_both_versions_and_records_the_verdict(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"text": "Profit rose.", "label": "positive"}\n'
        '{"text": "Sales fell.", "label": "negative"}\n'
        '{"text": "The firm met.", "label": "neutral"}\n'
    )
    config = LearnConfig(
        max_steps=2, eval_file=str(tasks), eval_instruction="Sentiment?", min_heldout=1
    )
    with Store() as store:
        store.add_control_prompt(ControlPrompt("Name a fruit.", "An apple.", "apple"))
        agent = Agent(
            store,
            TransformersBackend(str(tiny_model_dir), tiny_model_dir.name),
            GenerationConfig(max_new_tokens=4, seed=0),  # the same answers every run
        )
        held = threads(True, 1)[0]
        rated = {}
        for n, thread in enumerate([*threads(False, 2), held], start=2):
            store.create_thread(thread)
            turn = agent.ask(f"What is {n} + {n}?", thread_id=thread)
            rated[thread] = store.add_feedback(turn.turn_id, "down", correction=str(2 * n))
        up = agent.ask("Say hello.", thread_id=threads(False, 1)[0])
        store.add_feedback(up.turn_id, "up")

        cycle = run_cycle(store, resolve_model(str(tiny_model_dir)), config)
        # two train corrections; the thumbs-up answer used all 4 tokens: cut off, no target
        assert cycle.heldout == 1 and cycle.sft_examples == 2
        gate = cycle.gate
        assert gate is not None and gate["active_version"] == "base"
        for measured in (gate["candidate"], gate["active"]):
            assert measured["heldout_pairs"] == measured["heldout_corrections"] == 1
            assert measured["control_prompts"] == len(default_control_set()) + 1
            assert measured["preference_accuracy"] in (0.0, 1.0)
            assert measured["task_rows"] == 3 and 0 <= measured["task_accuracy"] <= 1
            assert 0 <= measured["task_macro_f1"] <= 1
        assert gate["base_control"]["control_accuracy"] == gate["active"]["control_accuracy"]
        assert cycle.reasons == gate["reasons"] and cycle.promoted == gate["promote"]
        # how far it moved from the active version, on the control set and held-out rows
        assert gate["kl"]["control"] > 0 and gate["kl"]["heldout"] > 0

        version = store.get_version("v1")
        assert version.status == ("promoted" if cycle.promoted else "rejected")
        assert store.active_version() == ("v1" if cycle.promoted else "base")
        assert len(store.control_answers("v1")) == len(store.control_answers("base")) == 13
        in_training = store.db.execute(
            "SELECT DISTINCT dataset FROM snapshot_feedback WHERE feedback_id = ?", [rated[held]]
        ).fetchall()
        assert in_training == [("heldout",)]  # held-out feedback never trains
        # ... and says so where it was given (the thread, `learnloop log`, the page)
        uses = {f["id"]: f for t in run_json(None, "log", "-n", "10") for f in t["feedback"]}
        assert uses[rated[held]]["kept_aside"] and uses[rated[held]]["used_by"] == "v1"
        assert not uses[rated[threads(False, 1)[0]]]["kept_aside"]
        assert "use: kept aside to test v1, not trained on" in run_cli(None, "log").output

        # With a learned version active, the base is measured on the control set too.
        store.activate("v1", who="test", why="a second cycle against v1")
        again = dataclasses.replace(config, force=True)  # no new feedback: only when forced
        second = run_cycle(store, resolve_model(str(tiny_model_dir)), again).gate
        assert second is not None and second["active_version"] == "v1"
        assert second["base_control"]["control_prompts"] == 13
        assert second["base_control"]["control_accuracy"] == gate["active"]["control_accuracy"]

    listed = run_json(None, "versions")
    assert listed[1]["status"] == version.status and listed[1]["gate"]["reasons"]
    shown = run_cli(None, "versions").output
    assert f"gate: {cycle.reasons[0]}" in shown


def test_control_prompts_can_be_added_and_listed() -> None:
    assert run_cli(None, "control", "add", "Capital of Spain?", "Madrid.").exit_code == 0
    items = run_json(None, "control", "list")
    assert items[-1] == {"prompt": "Capital of Spain?", "answer": "Madrid.", "expect": "Madrid."}
    assert len(items) == len(default_control_set()) + 1
    bad = run_cli(None, "control", "add", "  ", "x")
    assert bad.exit_code == 1 and "must not be empty" in bad.stderr


def test_a_bad_eval_file_is_refused_naming_the_line_and_records_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"text": "Profit rose.", "label": "positive"}\nnot json\n')
    with Store() as store:
        store.create_thread("t")
        turn = store.add_turn(make_log(thread_id="t"))
        store.add_feedback(turn, "down", correction="Hello!")
    result = run_cli(tiny_model_dir, "learn", "--eval-file", str(tasks))
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(f"{tasks} line 2: not valid JSON (Expecting value)")
    with Store() as store:
        assert store.runs() == []


@pytest.mark.parametrize(
    "flag",
    [
        ("--held-out-share", "1.5"),
        ("--gate-metric", "vibes"),
        ("--gate-metric", "task_accuracy"),
    ],
)
def test_bad_gate_settings_are_refused(flag: tuple[str, str]) -> None:
    result = run_cli(None, "learn", *flag)
    setting = flag[0].removeprefix("--").replace("-", "_")  # named as the API names it
    assert result.exit_code == 1 and setting in result.stderr
