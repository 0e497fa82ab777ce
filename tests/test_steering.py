"""Learning you can steer: a cycle that would only repeat itself is refused unless forced,
a running cycle can be cancelled from the CLI and the API, and the first cycle on a
handful of feedback is judged by what it was taught, in words a person understands.

All on the tiny model, with real trainer children and a real uvicorn server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from learnloop.storage.store import Store
from tests.helpers import make_log, refused, run_cli, run_json
from tests.serving import running_server

FAST = ("--max-steps", "2", "--gate", "false")
SLOW = {"max_steps": 1000, "sft_epochs": 1000.0, "gate": False}  # runs until cancelled


def give_feedback(text: str = "What is 2 + 2?", correction: str | None = "4") -> int:
    with Store() as store:
        thread = store.create_thread(f"thread-{text}")
        turn = store.add_turn(make_log(text, thread_id=thread))
        rating = "down" if correction else "up"
        return store.add_feedback(turn, rating, correction=correction)


def test_learning_again_without_new_feedback_does_nothing_unless_forced(
    tiny_model_dir: Path,
) -> None:
    give_feedback()
    assert run_json(tiny_model_dir, "learn", *FAST)["version"] == "v1"
    again = run_cli(tiny_model_dir, "learn", *FAST)
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        "Error: no new feedback since learning run 1 made v1; give "
        "some feedback first, or `learn --force` to train on the same feedback again"
    )
    with Store() as store:
        assert len(store.runs()) == 1
    assert run_json(tiny_model_dir, "learn", *FAST, "--force")["version"] == "v2"
    give_feedback("Capital of France?", "Paris.")
    assert run_json(tiny_model_dir, "learn", *FAST)["version"] == "v3"


def test_a_first_cycle_is_judged_by_what_it_was_taught_and_says_so(
    tiny_model_dir: Path,
) -> None:
    give_feedback()
    give_feedback("Say hi.", None)  # a thumbs-up: a liked answer
    learned = run_cli(tiny_model_dir, "learn", "--max-steps", "2")
    assert learned.exit_code == 0, learned.output
    first = learned.stdout.splitlines()[0]
    assert first.startswith("version v1 ") and "judged on what it was taught: " in first
    assert "corrections now answered (before: " in first and "liked answers" in first
    assert "general questions" in first
    assert "learn: gate: " in learned.stderr and " prompts…" in learned.stderr  # k of N
    shown = run_json(None, "versions")[1]["gate"]
    assert shown["summary"] == first.removeprefix("version v1 ")
    for side in ("candidate", "active"):
        assert shown[side]["taught_corrections"] == 1 and shown[side]["taught_liked"] == 1
        assert shown[side]["heldout_pairs"] == 0  # nothing held out of a handful


def test_the_control_scores_of_a_version_are_measured_once(tiny_model_dir: Path) -> None:
    give_feedback()
    run_json(tiny_model_dir, "learn", "--max-steps", "2")
    give_feedback("Capital of France?", "Paris.")
    with Store() as store:
        store.activate("v1", who="test", why="measure against v1")
    second = run_json(tiny_model_dir, "learn", "--max-steps", "2")
    events = [json.loads(line) for line in progress_file(2).read_text().splitlines()]
    measured = max(e["total"] for e in events if e["stage"] == "gate")
    # two corrections taught, measured with each version, plus the candidate's control
    # set: v1's and the base's control scores are those the first cycle measured; then
    # how far the candidate moved from v1 along the control set's good answers (its KL)
    control = second["gate"]["candidate"]["control_prompts"]
    assert measured == 2 + 2 + control + control
    assert second["gate"]["base_control"]["control_prompts"] == control


def progress_file(run: int) -> Path:
    return Path(os.environ["LEARNLOOP_HOME"]) / "runs" / f"run-{run}" / "progress.jsonl"


def test_a_learn_in_another_process_is_cancelled_from_the_cli(tiny_model_dir: Path) -> None:
    give_feedback()
    env = {**os.environ}
    learning = subprocess.Popen(
        [sys.executable, "-m", "learnloop.agent.cli", "--model", str(tiny_model_dir), "learn",
         "--max-steps", "1000", "--sft-epochs", "1000", "--gate", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "sft" not in run_cli(None, "status").output:
            assert time.monotonic() < deadline and learning.poll() is None, learning.stderr
            time.sleep(0.5)
        cancelled = run_cli(None, "cancel")
        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.strip() == "learning run 1: cancelled"
        _, err = learning.communicate(timeout=60)
    finally:
        learning.kill()
    assert learning.returncode == 1
    assert "learning run 1 cancelled; the active version is unchanged" in err
    with Store() as store:
        assert store.get_run(1).status == "cancelled" and store.active_version() == "base"
        assert store.versions() == []
    nothing = run_cli(None, "cancel")
    assert nothing.exit_code == 1 and "no learning run is running" in nothing.stderr


def test_a_server_cycle_is_cancelled_through_the_api(tiny_model_dir: Path) -> None:
    give_feedback()
    with running_server(tiny_model_dir) as server, server.client() as http:
        run = http.post("/v1/learn", json=SLOW).json()["run"]
        deadline = time.monotonic() + 120
        while http.get(f"/v1/learn/{run}").json()["stage"] in ("prepare", "load"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        view = http.post(f"/v1/learn/{run}/cancel", json={}).json()
        assert view["status"] == "cancelled" and view["version"] is None
        refused(http.post(f"/v1/learn/{run}/cancel", json={}), 409, "conflict_error", "cancelled")
        assert http.get("/v1/status").json()["active_version"] == "base"
        # a new cycle may start at once: the cancelled one holds nothing
        again = http.post("/v1/learn", json={"max_steps": 1, "gate": False, "force": True})
        assert again.status_code == 202, again.text


def test_what_the_per_user_cap_left_out_is_said_in_learns_output() -> None:
    from learnloop.agent.report import cycle_summary

    result = {
        "version": "v2", "parent": "v1", "promoted": True, "summary": "promoted: ...",
        "method": "sft", "sft_examples": 6, "dpo_pairs": 0, "kto_rows": 0, "heldout": 0,
        "seconds": 40.0, "reasons": [], "quality": {"capped": {"alice": 3}},
    }  # fmt: skip
    assert "  not used: 3 of alice's oldest feedback items" in cycle_summary(result)
