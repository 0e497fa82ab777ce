"""The DuckDB file itself: schema, migrations, locking, the data root.

Invariants tested here:

- opening migrates: a fresh file gets every known migration, each recorded in
  ``migrations``; reopening applies nothing again and keeps every row; an older file
  migrates forward without losing rows;
- a database written by a newer learnloop (a migration number beyond the known ones) is
  refused with :class:`SchemaTooNew` naming both versions, and left untouched;
- a migration that fails half way leaves neither its tables nor its ``migrations`` row;
- one process at a time: a store that finds the file locked waits ``lock_timeout`` and
  then raises :class:`StoreError` naming the holder's PID; ``release()`` really frees it;
- an unusable data root raises :class:`DataRootError` telling to set ``LEARNLOOP_HOME``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from learnloop.storage import migrations
from learnloop.storage.home import DataRootError, db_path
from learnloop.storage.migrations import SchemaTooNew, latest_known, migrate
from learnloop.storage.store import Store, StoreError
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
    "forgets",  # added by m011
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
    "steps",  # added by m010
    "tools",
    "user_name",  # added by m011
]

FEEDBACK_COLUMNS = [
    "id",
    "turn_id",
    "rating",
    "correction",
    "comment",
    "user_name",
    "created_at",
    "correction_messages",  # added by m010
]


# -- helpers ------------------------------------------------------------------------------


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
            (6, "m006_adapter_checks_and_relative_paths"),
            (7, "m007_key_roles_and_thread_owners"),
            (8, "m008_thread_titles"),
            (9, "m009_base_fingerprints_and_removed_adapters"),
            (10, "m010_trajectories"),
            (11, "m011_turn_users_and_forgetting"),
            (12, "m012_federated_lineage"),
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


class TestTurnsLoggedBeforeTrajectories:
    def test_read_back_exactly_as_before_as_one_step_trajectories(self, tmp_path: Path) -> None:
        path = tmp_path / "old.duckdb"
        newer = [m for m in migrations.MIGRATIONS if m[0] > 9]
        for entry in newer:
            migrations.MIGRATIONS.remove(entry)
        log = make_log("What is 2 + 2?", "4")
        try:
            with Store(path) as old:
                old.db.execute(
                    """INSERT INTO turns (thread_id, user_message, messages, prompt, answer,
                           version, model, settings, prompt_tokens, completion_tokens,
                           first_token_ms, total_ms, nodes)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    [
                        log.thread_id,
                        log.user_message,
                        json.dumps(log.messages),
                        log.prompt,
                        log.answer,
                        log.version,
                        log.model,
                        json.dumps(log.settings),
                        log.prompt_tokens,
                        log.completion_tokens,
                        log.first_token_ms,
                        log.total_ms,
                        json.dumps(log.nodes),
                    ],
                )
                old.db.execute(
                    "INSERT INTO feedback (turn_id, rating, correction, user_name) "
                    "VALUES (1, 'down', 'Four.', 'ann')"
                )
        finally:
            migrations.MIGRATIONS.extend(newer)
            migrations.MIGRATIONS.sort()
        with Store(path) as store:  # m011 makes it the turn of the one who rated it
            assert store.get_turn(1).log == dataclasses.replace(log, user_name="ann")
            (example,) = store.feedback_examples()
        assert example.trajectory == [{"role": "assistant", "content": "4"}]
        assert example.tools == [] and example.correction_messages is None


class TestTurnsLoggedBeforeUsers:
    def test_are_their_threads_owners_else_their_raters_else_local(self, tmp_path: Path) -> None:
        path = tmp_path / "old.duckdb"
        newer = [m for m in migrations.MIGRATIONS if m[0] > 10]
        for entry in newer:
            migrations.MIGRATIONS.remove(entry)
        try:
            with Store(path) as old:
                old.create_owned_thread("owned", "kim")
                for thread in ("owned", "rated", "plain"):
                    old.db.execute(
                        """INSERT INTO turns (thread_id, user_message, messages, prompt, answer,
                               version, model, settings, total_ms, nodes)
                           VALUES (?, 'q', '[]', 'p', 'a', 'base', 'm', '{}', 1.0, '[]')""",
                        [thread],
                    )
                for turn in (2, 1):  # the thread's owner counts before the rater
                    old.db.execute(
                        "INSERT INTO feedback (turn_id, rating, user_name) VALUES (?, 'up', 'lee')",
                        [turn],
                    )
        finally:
            migrations.MIGRATIONS.extend(newer)
            migrations.MIGRATIONS.sort()
        with Store(path) as store:
            assert [store.get_turn(i).log.user_name for i in (1, 2, 3)] == ["kim", "lee", "local"]


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
            (6, "m006_adapter_checks_and_relative_paths"),
            (7, "m007_key_roles_and_thread_owners"),
            (8, "m008_thread_titles"),
            (9, "m009_base_fingerprints_and_removed_adapters"),
            (10, "m010_trajectories"),
            (11, "m011_turn_users_and_forgetting"),
            (12, "m012_federated_lineage"),
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
