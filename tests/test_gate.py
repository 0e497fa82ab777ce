"""The promotion gate: candidates are measured against the active version on held-out
feedback and the control set, and promoted only when they win without breaking it.

``decide`` is pure and tested with numbers; the plumbing (held-out split by thread, both
versions measured in the trainer child, the decision, reasons and control answers
recorded, a rejected version left inactive) runs for real on the tiny model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.backend import TransformersBackend
from agent.config import GenerationConfig
from agent.models import resolve_model
from agent.runtime import Agent
from learning.config import LearnConfig
from learning.cycle import run_cycle
from learning.gate import decide
from learning.quality import is_held_out
from learning.snapshot import default_control_set
from storage.records import ControlPrompt
from storage.store import Store
from tests.helpers import run_cli, run_json


def side(
    pref: float | None = 0.5, fix: float | None = None, acc: float = 0.8, logp: float = -2.0
) -> dict:
    return {
        "preference_accuracy": pref,
        "correction_match": fix,
        "control_accuracy": acc,
        "control_logp_per_token": logp,
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
        assert "control accuracy drops from 0.900 to 0.500 (allowed: 0.1)" in d.reasons
        loose = LearnConfig(control_max_drop=0.5)
        assert decide(result(side(pref=1.0, acc=0.5), side(pref=0.0, acc=0.9)), loose).promote
        d = decide(result(side(pref=1.0, logp=-3.0), side(pref=0.0, logp=-2.0)), LearnConfig())
        assert not d.promote and "log-prob per token drops" in d.reasons[1]

    def test_no_held_out_data_does_not_promote_blindly_unless_asked(self) -> None:
        empty = result(side(pref=None), side(pref=None))
        d = decide(empty, LearnConfig())
        assert not d.promote and d.reasons[0] == "no held-out feedback to judge the candidate by"
        assert decide(empty, LearnConfig(promote_without_heldout=True)).promote

    def test_the_configured_metric_comes_first(self) -> None:
        config = LearnConfig(gate_metric="correction_match")
        d = decide(result(side(pref=0.0, fix=1.0), side(pref=1.0, fix=0.5)), config)
        assert d.promote and d.reasons[0].startswith("wins on correction_match")

    def test_gate_off_promotes_and_says_so(self) -> None:
        d = decide(None, LearnConfig(gate=False))
        assert d.promote and "gate off" in d.reasons[0]


def threads(held_out: bool, count: int) -> list[str]:
    names = (f"thread-{i}" for i in range(10_000))
    return [n for n in names if is_held_out(n, 0.2) == held_out][:count]


def test_a_cycle_measures_both_versions_and_records_the_verdict(tiny_model_dir: Path) -> None:
    with Store() as store:
        store.add_control_prompt(ControlPrompt("Name a fruit.", "An apple.", "apple"))
        agent = Agent(
            store,
            TransformersBackend(str(tiny_model_dir), tiny_model_dir.name),
            GenerationConfig(max_new_tokens=4),
        )
        held = threads(True, 1)[0]
        rated = {}
        for n, thread in enumerate([*threads(False, 2), held], start=2):
            store.create_thread(thread)
            turn = agent.ask(f"What is {n} + {n}?", thread_id=thread)
            rated[thread] = store.add_feedback(turn.turn_id, "down", correction=str(2 * n))
        up = agent.ask("Say hello.", thread_id=threads(False, 1)[0])
        store.add_feedback(up.turn_id, "up")

        cycle = run_cycle(store, resolve_model(str(tiny_model_dir)), LearnConfig(max_steps=2))
        assert cycle.heldout == 1 and cycle.sft_examples == 3
        gate = cycle.gate
        assert gate is not None and gate["active_version"] == "base"
        for measured in (gate["candidate"], gate["active"]):
            assert measured["heldout_pairs"] == measured["heldout_corrections"] == 1
            assert measured["control_prompts"] == len(default_control_set()) + 1
            assert measured["preference_accuracy"] in (0.0, 1.0)
        assert cycle.reasons == gate["reasons"] and cycle.promoted == gate["promote"]

        version = store.get_version("v1")
        assert version.status == ("promoted" if cycle.promoted else "rejected")
        assert store.active_version() == ("v1" if cycle.promoted else "base")
        assert len(store.control_answers("v1")) == len(store.control_answers("base")) == 13
        in_training = store.db.execute(
            "SELECT DISTINCT dataset FROM snapshot_feedback WHERE feedback_id = ?", [rated[held]]
        ).fetchall()
        assert in_training == [("heldout",)]  # held-out feedback never trains

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


@pytest.mark.parametrize("flag", [("--held-out-share", "1.5"), ("--gate-metric", "vibes")])
def test_bad_gate_settings_are_refused(flag: tuple[str, str]) -> None:
    result = run_cli(None, "learn", *flag)
    assert result.exit_code == 1 and flag[0] in result.stderr
