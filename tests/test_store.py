"""The store on a real DuckDB file: schema, migrations, locking and every read/write path.

Invariants tested here:

- opening migrates: a fresh file gets every known migration, each recorded in
  ``migrations``; reopening applies nothing again and keeps every row;
- a database written by a newer learnloop (a migration number beyond the known ones) is
  refused with :class:`SchemaTooNew` naming both versions, and left untouched;
- a migration that fails half way leaves neither its tables nor its ``migrations`` row;
- one process at a time: a store that finds the file locked waits ``lock_timeout`` and
  then raises :class:`StoreError` naming the holder's PID; ``release()`` really frees it;
- an unusable data root raises :class:`DataRootError` telling to set ``LEARNLOOP_HOME``;
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

import hashlib
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from storage import migrations
from storage.home import DataRootError, db_path
from storage.migrations import SchemaTooNew, latest_known, migrate
from storage.records import Version
from storage.store import NotFound, Store, StoreError
from tests.helpers import make_log

TABLES = {
    "threads",
    "turns",
    "feedback",
    "runs",
    "snapshots",
    "snapshot_feedback",
    "versions",
    "activations",
    "control_prompts",
    "control_answers",
    "api_keys",
}

TURN_COLUMNS = [
    "id",
    "thread_id",
    "regen_of",
    "user_message",
    "messages",
    "prompt",
    "answer",
    "version",
    "model",
    "settings",
    "prompt_tokens",
    "completion_tokens",
    "first_token_ms",
    "total_ms",
    "nodes",
    "interrupted",
    "created_at",
    "truncated",  # added by m004
]

FEEDBACK_COLUMNS = [
    "id",
    "turn_id",
    "rating",
    "correction",
    "comment",
    "user_name",
    "created_at",
]


# -- helpers ------------------------------------------------------------------------------


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


def raw_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read straight from the file with a plain DuckDB connection, not the store."""
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(sql).fetchall()


def columns(db: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            """SELECT column_name FROM information_schema.columns
               WHERE table_name = ? ORDER BY ordinal_position""",
            [table],
        ).fetchall()
    ]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store() -> Any:
    with Store() as s:
        yield s


# -- schema and migrations -----------------------------------------------------------------


class TestAFreshDatabaseMigrates:
    def test_the_migrations_table_records_the_initial_migration(self, store: Store) -> None:
        rows = store.db.execute("SELECT number, name FROM migrations ORDER BY number").fetchall()
        assert rows == [
            (1, "m001_initial"),
            (2, "m002_kto_and_quality"),
            (3, "m003_gate"),
            (4, "m004_truncated_turns"),
            (5, "m005_api_keys"),
        ]
        assert store.path == db_path()
        assert store.path.is_file()

    def test_every_table_exists(self, store: Store) -> None:
        tables = {
            r[0]
            for r in store.db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        assert tables == TABLES | {"migrations"}

    def test_turns_and_feedback_have_exactly_the_documented_columns(self, store: Store) -> None:
        assert columns(store.db, "turns") == TURN_COLUMNS
        assert columns(store.db, "feedback") == FEEDBACK_COLUMNS

    def test_the_other_tables_have_their_key_columns(self, store: Store) -> None:
        assert set(columns(store.db, "snapshot_feedback")) == {
            "snapshot_id",
            "feedback_id",
            "dataset",
        }
        assert {"id", "status", "pid", "snapshot_id", "version_id", "error"} <= set(
            columns(store.db, "runs")
        )
        assert {"id", "run_id", "content_hash", "upto_feedback_id"} <= set(
            columns(store.db, "snapshots")
        )
        assert {"id", "parent", "run_id", "adapter_path", "metrics"} <= set(
            columns(store.db, "versions")
        )
        assert {"id", "version_id", "who", "why"} <= set(columns(store.db, "activations"))

    def test_a_rating_outside_up_and_down_is_refused_by_the_schema_too(self, store: Store) -> None:
        turn = store.add_turn(make_log())
        with pytest.raises(duckdb.ConstraintException):
            store.db.execute(
                "INSERT INTO feedback (turn_id, rating, user_name) VALUES (?, 'meh', 'x')",
                [turn],
            )


class TestReopeningAnExistingDatabase:
    def test_applies_nothing_again_and_keeps_every_row(self) -> None:
        with Store() as s:
            turn = s.add_turn(make_log())
            s.add_feedback(turn, "up")
            first = s.db.execute("SELECT number, name, applied_at FROM migrations").fetchall()

        with duckdb.connect(str(db_path())) as db:
            assert migrate(db) == []

        with Store() as s:
            assert s.db.execute("SELECT number, name, applied_at FROM migrations").fetchall() == (
                first
            )
            assert [t.id for t in s.recent_turns(10)] == [turn]
            assert s.status().feedback == 1


class TestADatabaseFromANewerLearnloop:
    def test_is_refused_naming_both_versions_and_left_unchanged(self) -> None:
        with Store() as s:
            s.add_turn(make_log())
        path = db_path()
        with duckdb.connect(str(path)) as db:
            db.execute("INSERT INTO migrations (number, name) VALUES (99, 'm099_future')")
            db.execute("CHECKPOINT")
        before_rows = raw_rows(path, "SELECT number, name FROM migrations ORDER BY number")
        before_turns = raw_rows(path, "SELECT * FROM turns ORDER BY id")
        before_digest = file_digest(path)

        with pytest.raises(SchemaTooNew) as err, Store() as s:
            _ = s.db
        message = str(err.value)
        assert re.search(r"\bversion 99\b", message)
        assert re.search(rf"\bversion {latest_known()}\b", message)
        assert "upgrade learnloop" in message

        assert raw_rows(path, "SELECT number, name FROM migrations ORDER BY number") == (
            before_rows
        )
        assert raw_rows(path, "SELECT * FROM turns ORDER BY id") == before_turns
        assert file_digest(path) == before_digest

    def test_the_refused_store_holds_no_lock(self) -> None:
        with Store() as s:
            _ = s.db
        with duckdb.connect(str(db_path())) as db:
            db.execute("INSERT INTO migrations (number, name) VALUES (99, 'm099_future')")
        s = Store()
        with pytest.raises(SchemaTooNew):
            _ = s.db
        # Another process can open the file: the failed open closed its connection.
        probe = subprocess.run(
            [sys.executable, "-c", f"import duckdb; duckdb.connect({str(db_path())!r}).close()"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr


class TestTurnsLoggedBeforeTheTruncatedColumn:
    def test_count_as_cut_off_when_they_used_the_whole_token_limit(self, tmp_path: Path) -> None:
        path = tmp_path / "old.duckdb"
        newer = [m for m in migrations.MIGRATIONS if m[0] > 3]
        for entry in newer:
            migrations.MIGRATIONS.remove(entry)
        try:
            with Store(path) as old:
                for used in (64, 3):  # make_log's limit is 64 tokens
                    old.db.execute(
                        """INSERT INTO turns (thread_id, user_message, messages, prompt, answer,
                               version, model, settings, completion_tokens, total_ms, nodes)
                           VALUES ('t1', 'q', '[]', 'p', 'a', 'base', 'm',
                                   '{"max_new_tokens": 64}', ?, 1.0, '[]')""",
                        [used],
                    )
        finally:
            migrations.MIGRATIONS.extend(newer)
            migrations.MIGRATIONS.sort()
        with Store(path) as store:
            assert [t.log.truncated for t in store.recent_turns(5)] == [True, False]


class TestAMigrationFailingHalfWay:
    def test_leaves_neither_its_tables_nor_its_migrations_row(self, tmp_path: Path) -> None:
        def m999_broken(db: duckdb.DuckDBPyConnection) -> None:
            db.execute("CREATE TABLE half_done (x INTEGER)")
            db.execute("INSERT INTO half_done VALUES (1)")
            raise RuntimeError("boom in the middle of m999")

        entry = (latest_known() + 1, "m999_broken", m999_broken)
        path = tmp_path / "new.duckdb"
        migrations.MIGRATIONS.append(entry)
        try:
            with pytest.raises(RuntimeError, match="boom in the middle"), Store(path) as s:
                _ = s.db
        finally:
            migrations.MIGRATIONS.remove(entry)

        assert raw_rows(path, "SELECT number, name FROM migrations ORDER BY number") == [
            (1, "m001_initial"),
            (2, "m002_kto_and_quality"),
            (3, "m003_gate"),
            (4, "m004_truncated_turns"),
            (5, "m005_api_keys"),
        ]
        tables = {
            r[0]
            for r in raw_rows(
                path,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'",
            )
        }
        assert "half_done" not in tables
        assert tables == TABLES | {"migrations"}

        # With the broken migration gone the database opens and works.
        with Store(path) as s:
            assert s.add_turn(make_log()) == 1


# -- process model: one process owns the file -----------------------------------------------


class TestASecondProcessHoldingTheFile:
    def test_the_store_waits_then_names_the_holder(self) -> None:
        with Store() as s:
            _ = s.db  # create and migrate the file first
        path = db_path()
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb,time; c=duckdb.connect({str(path)!r}); "
                "print('ready', flush=True); time.sleep(30)",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            store = Store(lock_timeout=0.5)
            started = time.monotonic()
            with pytest.raises(StoreError) as err:
                _ = store.db
            waited = time.monotonic() - started
        finally:
            child.kill()
            child.wait()
        message = str(err.value)
        assert "in use" in message
        assert f"PID {child.pid}" in message
        assert str(path) in message
        assert 0.5 <= waited < 10

    def test_release_lets_another_process_open_the_file(self) -> None:
        store = Store(lock_timeout=5)
        turn = store.add_turn(make_log())
        store.release()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import duckdb; c=duckdb.connect({str(db_path())!r}); "
                "print(c.execute('SELECT count(*) FROM turns').fetchone()[0])",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip() == "1"
        # ...and the store reopens on demand afterwards.
        assert store.get_turn(turn).log.answer == "hi there"
        store.release()


class TestAnUnusableDataRoot:
    def test_a_file_in_the_way_raises_data_root_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        blocker = tmp_path / "afile"
        blocker.write_text("not a folder")
        monkeypatch.setenv("LEARNLOOP_HOME", str(blocker / "home"))
        with pytest.raises(DataRootError) as err:
            _ = Store().db
        assert "LEARNLOOP_HOME" in str(err.value)
        assert str(blocker / "home") in str(err.value)

    def test_a_data_root_that_is_a_file_raises_data_root_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        blocker = tmp_path / "afile"
        blocker.write_text("not a folder")
        monkeypatch.setenv("LEARNLOOP_HOME", str(blocker))
        with pytest.raises(DataRootError, match="LEARNLOOP_HOME"):
            _ = Store().db


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
        assert isinstance(err.value, StoreError)

    def test_get_version_raises_not_found_pointing_to_learnloop_versions(
        self, store: Store
    ) -> None:
        with pytest.raises(NotFound, match="`learnloop versions`") as err:
            store.get_version("v9")
        assert "v9" in str(err.value)


class TestAnOlderDatabaseMigratesForward:
    def test_a_version_1_file_gains_the_kto_columns_and_keeps_its_rows(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "old.duckdb"
        db = duckdb.connect(str(path))
        db.execute(
            "CREATE TABLE migrations (number INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
            "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        migrations.m001_initial(db)
        db.execute("INSERT INTO migrations (number, name) VALUES (1, 'm001_initial')")
        db.execute("INSERT INTO threads (id) VALUES ('old-thread')")
        db.close()
        with Store(path) as s:
            assert s.thread_exists("old-thread")
            columns = {r[0] for r in s.db.execute("DESCRIBE versions").fetchall()}
            assert "kto_count" in columns
