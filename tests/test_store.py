"""The store's read and write paths on a real DuckDB file (schema, migrations and locking:
test_store_file.py).

Invariants tested here:

- turns round-trip every logged field; a ``/regen`` turn replaces the one it re-answers
  in a thread's history;
- feedback is appended only for existing turns with a valid rating, and the latest row
  per turn is the one that counts;
- a version and its activation land together with the run's success; the active version
  is the latest activation; ``unlearned_feedback`` counts feedback newer than the last
  succeeded run's snapshot;
- unknown ids raise :class:`NotFound` pointing to the command that lists them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from learnloop.storage.errors import LearnloopError
from learnloop.storage.records import Version
from learnloop.storage.store import NotFound, Store
from tests.helpers import make_log


def make_version(version_id: str, run_id: int, **overrides: Any) -> Version:
    fields: dict[str, Any] = {
        "id": version_id,
        "parent": "base",
        "run_id": run_id,
        "method": "sft+dpo",
        "base_model": "SmolLM2-135M-Instruct",
        "adapter_path": f"/adapters/{version_id}",
        "sft_count": 2,
        "dpo_count": 1,
        "metrics": {"train_loss": 0.5, "gate": {"wins": 3, "losses": 1}},
        "created_at": datetime(2025, 1, 1, 12, 0, 0),
    }
    fields.update(overrides)
    return Version(**fields)


@pytest.fixture
def store() -> Any:
    with Store() as s:
        yield s


# -- turns ------------------------------------------------------------------------------------


class TestTurnsAreLoggedWithEverythingNeededToReplayThem:
    def test_add_turn_round_trips_every_field(self, store: Store) -> None:
        log = make_log(
            "what is 2+2?",
            "4",
            settings={"temperature": 0.0, "top_p": 0.9, "nested": {"a": [1, 2]}},
            first_token_ms=None,
            interrupted=True,
            nodes=["load_history", "respond"],
        )
        turn_id = store.add_turn(log)
        turn = store.get_turn(turn_id)
        assert turn.id == turn_id
        assert turn.log == log
        assert isinstance(turn.created_at, datetime)
        assert turn.feedback == []
        assert turn.latest_feedback is None

    def test_ids_increase_and_the_thread_is_created(self, store: Store) -> None:
        assert not store.thread_exists("new-thread")
        first = store.add_turn(make_log(thread_id="new-thread"))
        second = store.add_turn(make_log("again", thread_id="new-thread"))
        third = store.add_turn(make_log(thread_id="other"))
        assert first < second < third
        assert store.thread_exists("new-thread")
        assert store.thread_exists("other")
        assert store.status().threads == 2


class TestThreadHistory:
    def test_returns_the_threads_turns_oldest_first(self, store: Store) -> None:
        a = store.add_turn(make_log("one", thread_id="t"))
        store.add_turn(make_log("elsewhere", thread_id="u"))
        b = store.add_turn(make_log("two", thread_id="t"))
        c = store.add_turn(make_log("three", thread_id="t"))
        history = store.thread_history("t")
        assert [t.id for t in history] == [a, b, c]
        assert [t.log.user_message for t in history] == ["one", "two", "three"]
        assert store.thread_history("nobody") == []

    def test_a_regen_turn_replaces_the_turn_it_re_answers(self, store: Store) -> None:
        a = store.add_turn(make_log("one", "first answer", thread_id="t"))
        b = store.add_turn(make_log("two", "bad answer", thread_id="t"))
        regen = store.add_turn(make_log("two", "better answer", thread_id="t", regen_of=b))
        history = store.thread_history("t")
        assert [t.id for t in history] == [a, regen]
        assert [t.log.answer for t in history] == ["first answer", "better answer"]

    def test_a_regen_keeps_its_place_before_later_turns(self, store: Store) -> None:
        a = store.add_turn(make_log("one", thread_id="t"))
        b = store.add_turn(make_log("two", thread_id="t"))
        regen_a = store.add_turn(make_log("one", "redo", thread_id="t", regen_of=a))
        assert [t.id for t in store.thread_history("t")] == [regen_a, b]

    def test_a_chain_of_regens_keeps_only_the_newest(self, store: Store) -> None:
        # The agent graph logs every regen against the original turn (the chain's root).
        a = store.add_turn(make_log("one", "v0", thread_id="t"))
        store.add_turn(make_log("one", "v1", thread_id="t", regen_of=a))
        newest = store.add_turn(make_log("one", "v2", thread_id="t", regen_of=a))
        history = store.thread_history("t")
        assert [t.id for t in history] == [newest]
        assert history[0].log.answer == "v2"

    def test_a_regen_of_a_regen_logged_against_its_parent_keeps_only_the_newest(
        self, store: Store
    ) -> None:
        a = store.add_turn(make_log("one", "v0", thread_id="t"))
        r1 = store.add_turn(make_log("one", "v1", thread_id="t", regen_of=a))
        r2 = store.add_turn(make_log("one", "v2", thread_id="t", regen_of=r1))
        assert [t.id for t in store.thread_history("t")] == [r2]
        assert store.get_turn(r2).log.regen_of == a  # stored against the original turn


class TestRecentTurns:
    def test_returns_the_last_n_oldest_first_with_their_feedback(self, store: Store) -> None:
        ids = [store.add_turn(make_log(f"m{i}", thread_id=f"t{i % 2}")) for i in range(4)]
        up = store.add_feedback(ids[2], "up", comment="nice")
        down = store.add_feedback(ids[3], "down", correction="fixed", user_name="ann")
        later = store.add_feedback(ids[3], "up")

        recent = store.recent_turns(2)
        assert [t.id for t in recent] == ids[2:]
        assert [f.id for f in recent[0].feedback] == [up]
        assert recent[0].feedback[0].comment == "nice"
        assert [f.id for f in recent[1].feedback] == [down, later]
        assert recent[1].feedback[0].correction == "fixed"
        assert recent[1].feedback[0].user_name == "ann"
        assert recent[1].latest_feedback is not None
        assert recent[1].latest_feedback.id == later

        assert [t.id for t in store.recent_turns(10)] == ids
        assert store.recent_turns(0) == []


# -- feedback ---------------------------------------------------------------------------------


class TestFeedback:
    def test_feedback_on_an_unknown_turn_raises_not_found_and_writes_nothing(
        self, store: Store
    ) -> None:
        store.add_turn(make_log())
        with pytest.raises(NotFound, match="learnloop log"):
            store.add_feedback(999, "up")
        assert store.status().feedback == 0
        assert store.db.execute("SELECT count(*) FROM feedback").fetchone() == (0,)

    def test_a_bad_rating_raises_value_error_and_writes_nothing(self, store: Store) -> None:
        turn = store.add_turn(make_log())
        with pytest.raises(ValueError, match="'up' or 'down'"):
            store.add_feedback(turn, "meh")
        assert store.status().feedback == 0

    def test_feedback_rows_are_appended_and_read_back(self, store: Store) -> None:
        turn = store.add_turn(make_log())
        fid = store.add_feedback(turn, "down", correction="hello!", comment="too curt")
        row = store.get_turn(turn).feedback[0]
        assert (row.id, row.turn_id, row.rating, row.correction, row.comment) == (
            fid,
            turn,
            "down",
            "hello!",
            "too curt",
        )
        assert row.user_name == "local"
        assert isinstance(row.created_at, datetime)

    def test_feedback_examples_keep_only_the_latest_feedback_per_turn(self, store: Store) -> None:
        t1 = store.add_turn(make_log("q1", "a1"))
        t2 = store.add_turn(make_log("q2", "a2 cut", truncated=True))
        store.add_turn(make_log("q3", "never rated"))
        store.add_feedback(t1, "up")
        store.add_feedback(t2, "up")
        latest_t1 = store.add_feedback(t1, "down", correction="better a1", user_name="bob")

        examples = store.feedback_examples()
        assert [e.turn_id for e in examples] == [t1, t2]
        first = examples[0]
        assert first.feedback_id == latest_t1
        assert (first.rating, first.correction, first.user_name) == ("down", "better a1", "bob")
        assert first.answer == "a1"
        assert first.thread_id == "t1"
        assert first.messages == make_log("q1").messages
        assert examples[1].rating == "up"
        assert [e.truncated for e in examples] == [False, True]


# -- runs, snapshots, versions -----------------------------------------------------------------


class TestRunsSnapshotsAndVersions:
    def test_record_snapshot_records_dataset_membership_and_links_the_run(
        self, store: Store
    ) -> None:
        run = store.start_run("sft+dpo", {"lr": 1e-4, "epochs": 1}, "/runs/1", pid=4242)
        snap = store.record_snapshot(
            run,
            "abc123",
            upto=7,
            rows={"sft": [1, 2, 2], "dpo": [2, 3]},
            counts={"sft": 2, "dpo": 1},
        )
        members = store.db.execute(
            "SELECT feedback_id, dataset FROM snapshot_feedback WHERE snapshot_id = ?", [snap]
        ).fetchall()
        assert sorted(members) == [(1, "sft"), (2, "dpo"), (2, "sft"), (3, "dpo")]
        assert store.db.execute(
            """SELECT run_id, content_hash, upto_feedback_id, sft_count, dpo_count
               FROM snapshots WHERE id = ?""",
            [snap],
        ).fetchone() == (run, "abc123", 7, 2, 1)

        (r,) = store.runs()
        assert (r.id, r.status, r.method, r.pid, r.snapshot_id) == (
            run,
            "running",
            "sft+dpo",
            4242,
            snap,
        )
        assert r.config == {"lr": 1e-4, "epochs": 1}
        assert r.run_dir == "/runs/1"
        assert store.running_run() == run

    def test_add_version_activates_it_and_closes_its_run(self, store: Store) -> None:
        assert store.active_version() == "base"
        assert store.next_version_id() == "v1"
        run = store.start_run("sft", {}, "/runs/1", pid=1)
        version = make_version(store.next_version_id(), run)
        store.add_version(version, activate=True, who="gate", why="won 3 of 4")

        assert store.active_version() == "v1"
        assert store.get_version("v1") == version
        (r,) = store.runs()
        assert (r.status, r.version_id) == ("succeeded", "v1")
        assert r.metrics == version.metrics
        assert r.finished_at is not None
        assert store.running_run() is None
        assert store.db.execute("SELECT version_id, who, why FROM activations").fetchall() == [
            ("v1", "gate", "won 3 of 4")
        ]
        assert store.next_version_id() == "v2"

    def test_a_version_added_without_activation_leaves_the_active_one(self, store: Store) -> None:
        run1 = store.start_run("sft", {}, "/runs/1", pid=1)
        store.add_version(make_version("v1", run1), activate=True, who="gate", why="better")
        run2 = store.start_run("sft", {}, "/runs/2", pid=1)
        store.add_version(
            make_version("v2", run2, parent="v1"), activate=False, who="gate", why="worse"
        )
        assert store.active_version() == "v1"
        assert [v.id for v in store.versions()] == ["v1", "v2"]
        assert store.get_version("v2").parent == "v1"
        assert store.next_version_id() == "v3"
        assert store.status().versions == 2

    def test_fail_stale_runs_marks_running_runs_of_dead_processes_failed(
        self, store: Store
    ) -> None:
        done = store.start_run("sft", {}, "/runs/1", pid=10)
        store.add_version(make_version("v1", done), activate=True, who="gate", why="ok")
        alive = store.start_run("sft", {}, "/runs/2", pid=20)
        dead = store.start_run("sft", {}, "/runs/3", pid=30)

        assert store.fail_stale_runs(lambda pid: pid == 20) == [dead]
        by_id = {r.id: r for r in store.runs()}
        assert by_id[dead].status == "failed"
        assert "ended before it finished" in (by_id[dead].error or "")
        assert by_id[dead].finished_at is not None
        assert by_id[alive].status == "running"
        assert by_id[done].status == "succeeded"

        assert store.fail_stale_runs(lambda pid: False) == [alive]
        assert store.runs()[1].status == "failed"
        assert store.running_run() is None
        assert store.fail_stale_runs(lambda pid: False) == []


class TestStatus:
    def test_counts_turns_feedback_and_unlearned_feedback(self, store: Store) -> None:
        t1 = store.add_turn(make_log("q1", thread_id="a"))
        t2 = store.add_turn(make_log("q2", thread_id="a"))
        t3 = store.add_turn(make_log("q3", thread_id="b"))
        store.add_feedback(t1, "up")
        store.add_feedback(t2, "down")
        last = store.add_feedback(t3, "down", correction="fixed")

        s = store.status()
        assert (s.turns, s.threads, s.feedback) == (3, 2, 3)
        assert (s.feedback_up, s.feedback_down, s.corrections) == (1, 2, 1)
        assert s.unlearned_feedback == 3
        assert (s.active_version, s.versions, s.running_run) == ("base", 0, None)

        # A running run's snapshot does not count as learned yet.
        run = store.start_run("sft", {}, "/runs/1", pid=1)
        store.record_snapshot(run, "h", last, {"sft": [1, 3]}, {"sft": 2})
        assert store.status().unlearned_feedback == 3
        assert store.status().running_run == run

        store.add_version(make_version("v1", run), activate=True, who="gate", why="ok")
        s = store.status()
        assert s.unlearned_feedback == 0
        assert (s.active_version, s.versions, s.running_run) == ("v1", 1, None)

        store.add_feedback(t2, "up")
        assert store.status().unlearned_feedback == 1

        # A failed run covering the newer feedback does not count either.
        failed = store.start_run("sft", {}, "/runs/2", pid=2)
        store.record_snapshot(failed, "h2", last + 1, {"sft": [4]}, {"sft": 1})
        store.fail_run(failed, "out of memory")
        assert store.status().unlearned_feedback == 1


class TestUnknownIds:
    def test_get_turn_raises_not_found_pointing_to_learnloop_log(self, store: Store) -> None:
        with pytest.raises(NotFound, match="`learnloop log`") as err:
            store.get_turn(12345)
        assert "12345" in str(err.value)
        assert isinstance(err.value, LearnloopError) and err.value.status == 404

    def test_get_version_raises_not_found_pointing_to_learnloop_versions(
        self, store: Store
    ) -> None:
        with pytest.raises(NotFound, match="`learnloop versions`") as err:
            store.get_version("v9")
        assert "v9" in str(err.value)
