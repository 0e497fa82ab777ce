"""Schema migrations: numbered, named functions, applied in order, never edited once landed.

Each migration runs in one transaction together with the row that records it in
``migrations``, so a failure leaves neither. The store refuses a database that has a
migration numbered beyond the last one this code knows: an older learnloop must not
write into a newer schema.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import duckdb

from learnloop.storage.errors import Unavailable
from learnloop.storage.paths import relocated, stored

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


class SchemaTooNew(Unavailable):
    """The database was written by a newer learnloop."""


def migration(fn: Migration) -> Migration:
    """Register ``fn``, named ``mNNN_description``, as migration number NNN."""
    number = int(fn.__name__[1:4])
    if any(n == number for n, _, _ in MIGRATIONS):
        raise ValueError(f"duplicate migration number {number}")
    MIGRATIONS.append((number, fn.__name__, fn))
    return fn


@migration
def m001_initial(db: duckdb.DuckDBPyConnection) -> None:
    """Threads, turns (one row per answer, with everything needed to replay it), feedback,
    dataset snapshots, training runs, model versions and the activation history."""
    db.execute("CREATE SEQUENCE turn_ids START 1")
    db.execute("CREATE SEQUENCE feedback_ids START 1")
    db.execute("CREATE SEQUENCE snapshot_ids START 1")
    db.execute("CREATE SEQUENCE run_ids START 1")
    db.execute("CREATE SEQUENCE activation_ids START 1")
    db.execute(
        """CREATE TABLE threads (
            id VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE turns (
            id BIGINT PRIMARY KEY DEFAULT nextval('turn_ids'),
            thread_id VARCHAR NOT NULL,
            regen_of BIGINT,             -- the turn this one re-answers (/regen), else NULL
            user_message VARCHAR NOT NULL,
            messages JSON NOT NULL,      -- the chat messages the model saw, system first
            prompt VARCHAR NOT NULL,     -- the exact rendered prompt text
            answer VARCHAR NOT NULL,
            version VARCHAR NOT NULL,    -- model version that answered ('base' before learning)
            model VARCHAR NOT NULL,      -- base model name
            settings JSON NOT NULL,      -- generation settings
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            first_token_ms DOUBLE,
            total_ms DOUBLE,
            nodes JSON NOT NULL,         -- graph nodes the turn passed through
            interrupted BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE feedback (
            id BIGINT PRIMARY KEY DEFAULT nextval('feedback_ids'),
            turn_id BIGINT NOT NULL,
            rating VARCHAR NOT NULL CHECK (rating IN ('up', 'down')),
            correction VARCHAR,
            comment VARCHAR,
            user_name VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE runs (
            id BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
            status VARCHAR NOT NULL,     -- running | succeeded | failed
            method VARCHAR NOT NULL,
            config JSON NOT NULL,
            run_dir VARCHAR NOT NULL,
            pid INTEGER,
            snapshot_id BIGINT,
            version_id VARCHAR,
            metrics JSON,
            error VARCHAR,
            started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )"""
    )
    db.execute(
        """CREATE TABLE snapshots (
            id BIGINT PRIMARY KEY DEFAULT nextval('snapshot_ids'),
            run_id BIGINT NOT NULL,
            content_hash VARCHAR NOT NULL,
            upto_feedback_id BIGINT NOT NULL, -- newest feedback row the cycle considered
            sft_count INTEGER NOT NULL,
            dpo_count INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE snapshot_feedback (
            snapshot_id BIGINT NOT NULL,
            feedback_id BIGINT NOT NULL,
            dataset VARCHAR NOT NULL,    -- sft | dpo: which dataset the row went into
            PRIMARY KEY (snapshot_id, feedback_id, dataset)
        )"""
    )
    db.execute(
        """CREATE TABLE versions (
            id VARCHAR PRIMARY KEY,      -- v1, v2, ...: unique, never reused
            parent VARCHAR NOT NULL,     -- the version that was active when it was trained
            run_id BIGINT NOT NULL,
            method VARCHAR NOT NULL,
            base_model VARCHAR NOT NULL,
            adapter_path VARCHAR NOT NULL,
            sft_count INTEGER NOT NULL,
            dpo_count INTEGER NOT NULL,
            metrics JSON NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE activations (
            id BIGINT PRIMARY KEY DEFAULT nextval('activation_ids'),
            version_id VARCHAR NOT NULL, -- 'base' or a versions.id; the latest row is active
            who VARCHAR NOT NULL,
            why VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )


@migration
def m002_kto_and_quality(db: duckdb.DuckDBPyConnection) -> None:
    """Cycles can train KTO on unpaired thumbs, and clean the feedback first (duplicates,
    per-user cap): record the KTO row counts and the quality report with each snapshot."""
    db.execute("ALTER TABLE snapshots ADD COLUMN kto_count INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE snapshots ADD COLUMN quality JSON")
    db.execute("ALTER TABLE versions ADD COLUMN kto_count INTEGER NOT NULL DEFAULT 0")


@migration
def m003_gate(db: duckdb.DuckDBPyConnection) -> None:
    """The promotion gate: a version is 'promoted' or 'rejected' with the measured numbers
    and reasons; users keep their own control prompts; each version's answers on the
    control set are stored so they can be compared later."""
    db.execute("ALTER TABLE versions ADD COLUMN status VARCHAR NOT NULL DEFAULT 'promoted'")
    db.execute("ALTER TABLE versions ADD COLUMN gate JSON")
    db.execute("CREATE SEQUENCE control_ids START 1")
    db.execute(
        """CREATE TABLE control_prompts (
            id BIGINT PRIMARY KEY DEFAULT nextval('control_ids'),
            prompt VARCHAR NOT NULL,
            answer VARCHAR NOT NULL,     -- a known good answer
            expect VARCHAR NOT NULL,     -- a greedy answer must contain this to count
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )
    db.execute(
        """CREATE TABLE control_answers (
            version_id VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            answer VARCHAR NOT NULL,
            correct BOOLEAN NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )


@migration
def m004_truncated_turns(db: duckdb.DuckDBPyConnection) -> None:
    """Remember which answers were cut off by the token limit: a thumbs-up endorses what
    such an answer says, but training on it would teach stopping mid-sentence. Turns
    logged before this migration count as cut off when they used the whole limit."""
    db.execute("ALTER TABLE turns ADD COLUMN truncated BOOLEAN NOT NULL DEFAULT false")
    db.execute(
        """UPDATE turns SET truncated = true
           WHERE completion_tokens >= TRY_CAST(settings->>'max_new_tokens' AS INTEGER)"""
    )


@migration
def m005_api_keys(db: duckdb.DuckDBPyConnection) -> None:
    """API keys for a server that listens beyond loopback. Only a key's sha256 is stored;
    the key itself is shown once, when created. A revoked key keeps its row (with the
    time it was revoked), so the list of keys is also their history."""
    db.execute("CREATE SEQUENCE api_key_ids START 1")
    db.execute(
        """CREATE TABLE api_keys (
            id BIGINT PRIMARY KEY DEFAULT nextval('api_key_ids'),
            name VARCHAR NOT NULL,       -- the user its requests (and their feedback) count for
            key_hash VARCHAR NOT NULL UNIQUE, -- hex sha256 of the key
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            revoked_at TIMESTAMP         -- NULL while the key is valid
        )"""
    )


@migration
def m006_adapter_checks_and_relative_paths(db: duckdb.DuckDBPyConnection) -> None:
    """Three things a version needs to be trusted after the fact:

    - ``versions.checksum``: sha256 of the adapter folder when it was published, checked
      whenever the adapter is loaded (learning/adapters.py). Versions published before
      get theirs on their first load, after the folder passed the structural checks;
    - ``runs.active_at_start``: the version that was active when the run was prepared,
      so publishing can tell whether someone switched versions while it trained;
    - adapter and run folders under the data root are saved relative to it (a data root
      moved or restored elsewhere keeps working). Rows under the folder of this database
      file are rewritten; a folder saved under an earlier location of the root that is
      gone there but present in this root is rewritten to this root's copy."""
    db.execute("ALTER TABLE versions ADD COLUMN checksum VARCHAR")
    db.execute("ALTER TABLE runs ADD COLUMN active_at_start VARCHAR")
    row = db.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    if row is None or not row[0]:
        return  # an in-memory database: no data root to be relative to
    root = Path(os.path.abspath(row[0])).parent
    for table, column, folder in (
        ("versions", "adapter_path", "adapters/"),
        ("runs", "run_dir", "runs/run-"),
    ):
        for key, path in db.execute(f"SELECT id, {column} FROM {table}").fetchall():
            new = relocated(path, root, f"{folder}{key}") or stored(path, root)
            if new != path:
                db.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", [new, key])


@migration
def m007_key_roles_and_thread_owners(db: duckdb.DuckDBPyConnection) -> None:
    """Who sees what on a server with keys:

    - ``api_keys.role``: 'user' (sees and rates its own threads only) or 'admin' (may do
      all the operator may). Keys made before roles existed become 'user' keys;
    - ``threads.owner``: the name of the key whose request started the thread; NULL for
      the operator's (loopback without a key, the CLI), which every thread made before
      this migration is."""
    db.execute("ALTER TABLE api_keys ADD COLUMN role VARCHAR NOT NULL DEFAULT 'user'")
    db.execute("ALTER TABLE threads ADD COLUMN owner VARCHAR")


@migration
def m008_thread_titles(db: duckdb.DuckDBPyConnection) -> None:
    """``threads.title``: a title its owner gave the conversation (the web page's rename);
    NULL for one never renamed, which is listed under its first message, as before."""
    db.execute("ALTER TABLE threads ADD COLUMN title VARCHAR")


@migration
def m009_base_fingerprints_and_removed_adapters(db: duckdb.DuckDBPyConnection) -> None:
    """Two things about a version's files:

    - ``versions.base_fingerprint``: the sha256 of the base model's weights it was
      trained on (learning/models.py), so that the same weights in a folder of another
      name are the same base. NULL for versions published before: their ``base_model``
      name decides, as it did;
    - ``versions.removed_at``: when ``learnloop versions rm`` deleted its adapter folder.
      The row stays, for the history; NULL while the files are there."""
    db.execute("ALTER TABLE versions ADD COLUMN base_fingerprint VARCHAR")
    db.execute("ALTER TABLE versions ADD COLUMN removed_at TIMESTAMP")


@migration
def m010_trajectories(db: duckdb.DuckDBPyConnection) -> None:
    """A turn is a trajectory (storage/records.py, TurnLog):

    - ``turns.steps``: every model call and tool call of a turn that called tools, in
      order; NULL for a turn of one model call, which reads back exactly as before;
    - ``turns.tools``: the tool schemas the turn was offered (NULL: none);
    - ``feedback.correction_messages``: a corrected trajectory (the assistant steps,
      their tool calls and results, to the final answer), when the correction is one;
      ``correction`` then holds its final answer's text."""
    db.execute("ALTER TABLE turns ADD COLUMN steps JSON")
    db.execute("ALTER TABLE turns ADD COLUMN tools JSON")
    db.execute("ALTER TABLE feedback ADD COLUMN correction_messages JSON")


@migration
def m011_turn_users_and_forgetting(db: duckdb.DuckDBPyConnection) -> None:
    """What forgetting a person needs (storage/forgetting.py):

    - ``turns.user_name``: who asked (the API key's name, the CLI's ``--user``, else
      'local'), like ``feedback.user_name``. Turns logged before: their thread's owner,
      else the user of the turn's first feedback, else 'local';
    - ``versions.retired_why``: why a version was retired (its training data included
      rows of a forgotten user); its adapter files are deleted (``removed_at``), its row
      stays so the history reads the same. NULL for a version never retired;
    - ``versions.started_from``: the version whose adapter a cycle trained further
      (NULL: a fresh adapter from the base), so retiring a version retires every version
      trained on top of it;
    - ``forgets``: each forget (who was forgotten, who asked, when, what went), with
      the files its rows left until they are deleted (a forget killed midway is
      finished by the next)."""
    db.execute("ALTER TABLE turns ADD COLUMN user_name VARCHAR NOT NULL DEFAULT 'local'")
    db.execute(
        """UPDATE turns SET user_name = coalesce(
               (SELECT owner FROM threads WHERE threads.id = turns.thread_id),
               (SELECT f.user_name FROM feedback f WHERE f.turn_id = turns.id
                ORDER BY f.id LIMIT 1),
               'local')"""
    )
    db.execute("ALTER TABLE versions ADD COLUMN retired_why VARCHAR")
    db.execute("ALTER TABLE versions ADD COLUMN started_from VARCHAR")
    db.execute("CREATE SEQUENCE forget_ids START 1")
    db.execute(
        """CREATE TABLE forgets (
            id BIGINT PRIMARY KEY DEFAULT nextval('forget_ids'),
            user_name VARCHAR NOT NULL,  -- whose turns and feedback were deleted
            who VARCHAR NOT NULL,        -- who asked
            turns_deleted INTEGER NOT NULL,
            feedback_deleted INTEGER NOT NULL,
            versions_retired JSON NOT NULL, -- their ids
            replacement VARCHAR,         -- the version trained to replace them, if any
            files JSON NOT NULL,         -- what its rows left on disk, to delete
            files_deleted_at TIMESTAMP,  -- NULL until they are all gone
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )"""
    )


@migration
def m012_federated_lineage(db: duckdb.DuckDBPyConnection) -> None:
    """``versions.lineage``: where a federated version's adapter came from (the
    federation run, its round, the nodes whose updates were averaged, the aggregation
    rule); NULL for a version trained on this data root alone."""
    db.execute("ALTER TABLE versions ADD COLUMN lineage JSON")


def latest_known() -> int:
    return max(n for n, _, _ in MIGRATIONS)


def migrate(db: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations; return the names applied. Raise SchemaTooNew if needed."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS migrations (
            number INTEGER PRIMARY KEY, name VARCHAR NOT NULL,
            applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"""
    )
    applied = {row[0] for row in db.execute("SELECT number FROM migrations").fetchall()}
    if applied and max(applied) > latest_known():
        raise SchemaTooNew(
            f"the database is at schema version {max(applied)}, but this learnloop knows only "
            f"up to version {latest_known()}; upgrade learnloop to use it"
        )
    done = []
    for number, name, fn in sorted(MIGRATIONS):
        if number in applied:
            continue
        db.execute("BEGIN TRANSACTION")
        try:
            fn(db)
            db.execute("INSERT INTO migrations (number, name) VALUES (?, ?)", [number, name])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        done.append(name)
    return done
