"""Two versions side by side: ``GET /v1/versions/compare`` on a real server, over answers a
real store holds (written the way a cycle's gate writes them) and over a real cycle's."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from learnloop.learning.snapshot import default_control_set
from learnloop.storage.records import Version
from learnloop.storage.store import Store
from tests.helpers import refused, run_cli
from tests.serving import running_server

FRANCE = "What is the capital of France?"  # in the shipped control set, expects "Paris"
WEEK = "How many days are there in a week?"
MINE = "Say hi"  # a control prompt only v2 was asked (the set grew between them)


def answers(*rows: tuple[str, str, bool]) -> list[dict[str, Any]]:
    return [{"prompt": p, "answer": a, "correct": c} for p, a, c in rows]


BASE = answers((FRANCE, "Lyon.", False), (WEEK, "Seven days.", True))
V1 = answers((FRANCE, "Paris.", True), (WEEK, "Seven days.", True))
V2 = answers((FRANCE, "Paris!", True), (WEEK, "Five.", False), (MINE, "hi", True))


def version(
    version_id: str, run_id: int, parent: str, minutes: int, status: str = "promoted"
) -> Version:
    return Version(
        id=version_id,
        parent=parent,
        run_id=run_id,
        method="sft",
        base_model="tiny",
        adapter_path=f"/elsewhere/{version_id}",
        sft_count=1,
        dpo_count=0,
        metrics={},
        created_at=datetime.now() + timedelta(minutes=minutes),
        status=status,
        gate={"promote": status == "promoted", "reasons": ["by hand"]},
    )


def seed_versions(active: str = "base") -> None:
    """base <- v1 <- v2 with their control answers, and v3 measured by no gate; ``active``
    made active (a server then loads its adapter, which these have not: the CLI only)."""
    with Store() as store:
        first = store.start_run("sft", {}, "/runs/1", pid=1)
        store.add_version(
            version("v1", first, "base", 1),
            activate=False,
            who="test",
            why="run 1",
            control_answers=V1,
            parent_control=BASE,
        )
        second = store.start_run("sft", {}, "/runs/2", pid=1)
        store.add_version(
            version("v2", second, "v1", 2),
            activate=False,
            who="test",
            why="run 2",
            control_answers=V2,
        )
        third = store.start_run("sft", {}, "/runs/3", pid=1)
        store.add_version(
            version("v3", third, "v2", 3, "rejected"), activate=False, who="test", why="run 3"
        )
        if active != "base":
            store.activate(active, who="test", why="by hand")


def test_two_versions_answers_side_by_side_with_what_changed(tiny_model_dir: Path) -> None:
    seed_versions()
    with running_server(tiny_model_dir) as server, server.client() as http:
        given = http.get("/v1/versions/compare", params={"a": "v1", "b": "v2"})
        assert given.status_code == 200, given.text
        data = given.json()
        assert (data["a"], data["b"]) == (
            {"version": "v1", "correct": 2, "answered": 2},
            {"version": "v2", "correct": 2, "answered": 3},
        )
        by_prompt = {p["prompt"]: p for p in data["prompts"]}
        assert list(by_prompt) == [FRANCE, WEEK, MINE]
        france = by_prompt[FRANCE]
        assert france["expect"] == "Paris"  # what a correct answer must contain
        assert france["a"] == {"answer": "Paris.", "correct": True}
        assert france["b"] == {"answer": "Paris!", "correct": True}
        assert france["differs"]
        assert by_prompt[WEEK]["b"] == {"answer": "Five.", "correct": False}
        assert by_prompt[MINE]["a"] is None and by_prompt[MINE]["differs"]
        assert data["counts"] == {"prompts": 3, "differ": 3, "fixed": 0, "broken": 1}

        chosen = http.get("/v1/versions/compare", params={"a": "base", "b": "v1"}).json()
        assert [p["differs"] for p in chosen["prompts"]] == [True, False]
        assert chosen["counts"] == {"prompts": 2, "differ": 1, "fixed": 1, "broken": 0}
        # b alone: beside its own parent
        alone = http.get("/v1/versions/compare", params={"b": "v2"}).json()
        assert alone["a"]["version"] == "v1"


def test_an_unknown_version_or_one_without_answers_is_a_404(tiny_model_dir: Path) -> None:
    with running_server(tiny_model_dir) as server, server.client() as http:
        # a fresh data root: the base model is active and has nothing to be compared with
        refused(
            http.get("/v1/versions/compare"), 404, "not_found_error", "base model has no parent"
        )
    seed_versions()
    with running_server(tiny_model_dir) as server, server.client() as http:
        unknown = http.get("/v1/versions/compare", params={"a": "v9", "b": "v1"})
        refused(unknown, 404, "not_found_error", "no version 'v9'")
        unmeasured = http.get("/v1/versions/compare", params={"b": "v3"})
        refused(unmeasured, 404, "not_found_error", "no control answers are stored for v3")
        empty = http.get("/v1/versions/compare", params={"a": ""})
        assert empty.status_code == 422, empty.text
        assert http.get("/v1/versions").status_code == 200  # nothing else was affected


def test_after_a_real_cycle_the_gate_answers_of_both_versions_line_up(
    tiny_model_dir: Path,
) -> None:
    with running_server(tiny_model_dir) as server, server.client() as http:
        for question in ("Capital of France?", "Capital of Spain?"):
            answer = http.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": question}]}
            ).json()
            body = {"turn_id": answer["turn_id"], "rating": "down", "correction": "Madrid."}
            assert http.post("/v1/feedback", json=body).status_code == 201
        learned = http.post("/v1/learn", json={"max_steps": 2, "sft_learning_rate": 1e-2})
        view = wait_for(http, learned.json()["run"])
        assert view["status"] == "succeeded", view
        data = http.get("/v1/versions/compare", params={"a": "base", "b": "v1"}).json()
    control = len(default_control_set())  # the gate asks the shipped set (no user's own)
    assert data["counts"]["prompts"] == data["a"]["answered"] == data["b"]["answered"] == control
    for p in data["prompts"]:
        assert p["differs"] == (p["a"]["answer"] != p["b"]["answer"])
    assert data["b"]["correct"] == sum(p["b"]["correct"] for p in data["prompts"])


def test_the_cli_prints_the_answers_that_differ(tiny_model_dir: Path) -> None:
    seed_versions(active="v2")
    default = json.loads(run_cli(None, "versions", "compare", "--json").stdout)
    # the active version beside its parent
    assert (default["a"]["version"], default["b"]["version"]) == ("v1", "v2")
    assert default["counts"] == {"prompts": 3, "differ": 3, "fixed": 0, "broken": 1}
    assert json.loads(run_cli(None, "versions", "--json").stdout)[-1]["id"] == "v3"
    shown = run_cli(None, "versions", "compare", "base", "v1")
    assert shown.exit_code == 0, shown.output
    assert "1 of 2 answers differ (1 now correct, 0 no longer correct)" in shown.output
    assert "✗ Lyon." in shown.output and "✓ Paris." in shown.output
    assert "Seven days" not in shown.output  # the same answer in both: not repeated
    missing = run_cli(None, "versions", "compare", "base", "v3")
    assert missing.exit_code != 0
    assert "no control answers are stored for v3" in missing.output


def wait_for(http: httpx.Client, run: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = http.get(f"/v1/learn/{run}").json()
        if view["status"] != "running":
            return view
        time.sleep(0.2)
    raise AssertionError(f"run {run} still running after {timeout} s")
