"""Forgetting a person: the rows that go, the versions that retire, one transaction.

Part of :class:`storage.store.Store` (split off by responsibility; still the only SQL).
learning/forget.py deletes the files and trains the replacement; this module decides,
from the database alone, what a forget takes with it:

- the user's turns, every regeneration of them, and every later turn of a thread they
  asked in (its prompt holds their messages), with all feedback on those turns, and all
  feedback the user gave anywhere; threads left without turns go too (a title may hold
  their words);
- every version whose training data held one of those feedback rows (a snapshot's sft,
  dpo or kto rows; held-out rows only judged a version and do not retire it), and every
  version trained on from one of those (``started_from``): retired, with the reason,
  their files to be deleted (``removed_at``), their rows kept for the history;
- the run folders whose snapshot held any of those rows (held-out ones included): their
  frozen datasets are to be deleted;
- the active version, when it retires: its parent, or the parent's parent, and so on to
  the base, the first that is not retired and still has its files.

Invariant: after :meth:`Forgetting.forget_rows` commits, no active version and no
version that can be activated was trained on a forgotten row; the rows' text is gone from
the tables (and from the file once :meth:`~storage.connection.Connection.rewrite` ran).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from learnloop.storage.connection import BASE_VERSION
from learnloop.storage.paths import absolute
from learnloop.storage.registry import Registry, _active


@dataclass(frozen=True)
class ForgetFiles:
    """The files a forget's rows left, to delete (learning/forget.py)."""

    versions: list[str]  # retired
    adapter_paths: list[str]  # absolute: the retired versions' adapter folders
    checksums: list[str]  # of the retired versions' adapters (their converted copies)
    run_dirs: list[str]  # absolute: runs whose snapshot held forgotten rows


@dataclass(frozen=True)
class Forgotten:
    """What :meth:`Forgetting.forget_rows` deleted and retired, and the files left."""

    forget_id: int
    user: str
    turns_deleted: int
    feedback_deleted: int
    files: ForgetFiles
    previous_active: str
    active: str


@dataclass(frozen=True)
class ForgetRecord:
    """One row of ``forgets``: the history of a forget."""

    id: int
    user: str
    who: str
    turns_deleted: int
    feedback_deleted: int
    versions_retired: list[str]
    replacement: str | None
    created_at: datetime


# The user's turns, the regenerations of them, and the later turns of the threads they
# asked in; ``?`` is the user's name.
_TURNS = """
    WITH theirs AS (SELECT id, thread_id FROM turns WHERE user_name = ?),
    first_in_thread AS (SELECT thread_id, min(id) AS since FROM theirs GROUP BY thread_id)
    SELECT t.id FROM turns t
    WHERE t.id IN (SELECT id FROM theirs)
       OR t.regen_of IN (SELECT id FROM theirs)
       OR EXISTS (SELECT 1 FROM first_in_thread f
                  WHERE f.thread_id = t.thread_id AND t.id > f.since)
"""


class Forgetting(Registry):
    """Deleting a user's rows and retiring what was trained on them."""

    def user_exists(self, user: str) -> bool:
        """Whether any turn or feedback row is ``user``'s."""
        return bool(
            self._one(
                """SELECT (SELECT count(*) FROM turns WHERE user_name = ?)
                        + (SELECT count(*) FROM feedback WHERE user_name = ?)""",
                [user, user],
            )
        )

    def forget_rows(self, user: str, *, who: str) -> Forgotten:
        """Delete ``user``'s rows and retire the versions trained on them, switching away
        from a retired active version, in one transaction (see the module's rules)."""
        root = self._root()
        with self.transaction() as db:
            turns = _ids(db, _TURNS, [user])
            feedback = _ids(
                db,
                "SELECT id FROM feedback WHERE user_name = ? OR list_contains(?, turn_id)",
                [user, turns],
            )
            retired = _trained_on(db, feedback)
            rows = db.execute(
                "SELECT id, adapter_path, checksum FROM versions WHERE list_contains(?, id)",
                [retired],
            ).fetchall()
            run_dirs = [
                str(r[0])
                for r in db.execute(
                    """SELECT DISTINCT r.run_dir FROM runs r
                       JOIN snapshots s ON s.run_id = r.id
                       JOIN snapshot_feedback sf ON sf.snapshot_id = s.id
                       WHERE list_contains(?, sf.feedback_id)""",
                    [feedback],
                ).fetchall()
            ]
            why = f"trained on feedback of {user}, forgotten by {who}"
            db.execute(
                """UPDATE versions SET retired_why = ?,
                          removed_at = coalesce(removed_at, current_timestamp)
                   WHERE list_contains(?, id)""",
                [why, retired],
            )
            previous = _active(db)
            active = _fallback(db, previous, retired)
            if active != previous:
                db.execute(
                    "INSERT INTO activations (version_id, who, why) VALUES (?, ?, ?)",
                    [active, who, f"forget {user}: {previous} was trained on their feedback"],
                )
            for table, column in (("snapshot_feedback", "feedback_id"), ("feedback", "id")):
                db.execute(f"DELETE FROM {table} WHERE list_contains(?, {column})", [feedback])
            # a retired version's greedy answers may echo what it was trained on
            db.execute("DELETE FROM control_answers WHERE list_contains(?, version_id)", [retired])
            db.execute("DELETE FROM turns WHERE list_contains(?, id)", [turns])
            db.execute("DELETE FROM threads WHERE id NOT IN (SELECT thread_id FROM turns)")
            files = {
                "versions": retired,
                "adapter_paths": [str(r[1]) for r in rows],
                "checksums": [str(r[2]) for r in rows if r[2]],
                "run_dirs": run_dirs,
            }
            row = db.execute(
                """INSERT INTO forgets (user_name, who, turns_deleted, feedback_deleted,
                       versions_retired, files) VALUES (?, ?, ?, ?, ?, ?) RETURNING id""",
                [user, who, len(turns), len(feedback), json.dumps(retired), json.dumps(files)],
            ).fetchone()
        assert row is not None
        return Forgotten(
            forget_id=int(row[0]),
            user=user,
            turns_deleted=len(turns),
            feedback_deleted=len(feedback),
            files=_files(files, root),
            previous_active=previous,
            active=active,
        )

    def files_left(self) -> list[tuple[int, ForgetFiles]]:
        """The forgets whose files are not all deleted yet (one killed midway), oldest
        first, with those files."""
        rows = self.db.execute(
            "SELECT id, files FROM forgets WHERE files_deleted_at IS NULL ORDER BY id"
        ).fetchall()
        return [(int(r[0]), _files(json.loads(r[1]), self._root())) for r in rows]

    def files_deleted(self, forget_id: int) -> None:
        self.db.execute(
            "UPDATE forgets SET files_deleted_at = current_timestamp WHERE id = ?", [forget_id]
        )

    def record_replacement(self, forget_id: int, version: str) -> None:
        self.db.execute("UPDATE forgets SET replacement = ? WHERE id = ?", [version, forget_id])

    def forgets(self) -> list[ForgetRecord]:
        rows = self.db.execute(
            """SELECT id, user_name, who, turns_deleted, feedback_deleted, versions_retired,
                      replacement, created_at FROM forgets ORDER BY id"""
        ).fetchall()
        return [
            ForgetRecord(
                id=r[0],
                user=r[1],
                who=r[2],
                turns_deleted=r[3],
                feedback_deleted=r[4],
                versions_retired=json.loads(r[5]),
                replacement=r[6],
                created_at=r[7],
            )
            for r in rows
        ]

    def version_users(self) -> dict[str, list[str]]:
        """Version id -> the users whose turns or feedback its training data held (sorted);
        rows forgotten since are no longer counted."""
        rows = self.db.execute(
            """SELECT r.version_id,
                      list_sort(list_distinct(flatten(list([f.user_name, t.user_name]))))
               FROM runs r
               JOIN snapshots s ON s.run_id = r.id
               JOIN snapshot_feedback sf ON sf.snapshot_id = s.id AND sf.dataset != 'heldout'
               JOIN feedback f ON f.id = sf.feedback_id
               JOIN turns t ON t.id = f.turn_id
               WHERE r.version_id IS NOT NULL
               GROUP BY r.version_id"""
        ).fetchall()
        return {str(r[0]): list(r[1]) for r in rows}


def _files(stored: dict[str, list[str]], root: Path) -> ForgetFiles:
    return ForgetFiles(
        versions=stored["versions"],
        adapter_paths=[absolute(p, root) for p in stored["adapter_paths"]],
        checksums=stored["checksums"],
        run_dirs=[absolute(p, root) for p in stored["run_dirs"]],
    )


def _ids(db: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[int]:
    return sorted(int(r[0]) for r in db.execute(sql, params).fetchall())


def _trained_on(db: duckdb.DuckDBPyConnection, feedback: list[int]) -> list[str]:
    """The versions whose training rows include one of ``feedback``, and those trained on
    from them, transitively (in the order they were made)."""
    direct = {
        str(r[0])
        for r in db.execute(
            """SELECT DISTINCT v.id FROM versions v
               JOIN snapshots s ON s.run_id = v.run_id
               JOIN snapshot_feedback sf ON sf.snapshot_id = s.id
               WHERE sf.dataset != 'heldout' AND list_contains(?, sf.feedback_id)""",
            [feedback],
        ).fetchall()
    }
    order = db.execute("SELECT id, started_from FROM versions ORDER BY created_at, id").fetchall()
    tainted = set(direct)
    for version, started_from in order:  # a version is made after the one it starts from
        if started_from in tainted:
            tainted.add(str(version))
    return [str(v) for v, _ in order if v in tainted]


def _fallback(db: duckdb.DuckDBPyConnection, active: str, retired: list[str]) -> str:
    """``active`` unless it retires; else the nearest ancestor that can still answer."""
    version = active
    while version != BASE_VERSION:
        row = db.execute(
            "SELECT parent, removed_at IS NULL FROM versions WHERE id = ?", [version]
        ).fetchone()
        if row is None:
            return BASE_VERSION
        if version not in retired and row[1]:
            return version
        version = str(row[0])
    return BASE_VERSION
