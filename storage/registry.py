"""The learning side of the store: runs, snapshots, versions, activations, control set.

Part of :class:`storage.store.Store` (split off by responsibility; still the only SQL).

Invariants:

- a prepared run (its row, its snapshot and the snapshot's feedback rows) is written in
  one transaction (:meth:`Registry.record_prepared_run`), with its real folder: never a
  run without its snapshot, never a placeholder folder;
- a version (its row, its run's success, its control answers and, when promoted, its
  activation) is written in one transaction (:meth:`Registry.add_version`); a promotion
  is refused there, atomically, when the active version is no longer the one the
  candidate was measured against (:class:`ActiveChanged`);
- adapter and run folders under the data root are saved relative to it
  (storage/paths.py) and come out absolute: a moved data root keeps working.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from learnloop.storage.connection import BASE_VERSION, Connection
from learnloop.storage.errors import Conflict, NotFound
from learnloop.storage.home import data_root
from learnloop.storage.paths import absolute, stored
from learnloop.storage.records import Activation, ControlPrompt, Run, SnapshotRecord, Version

_VERSION_COLUMNS = (
    "id, parent, run_id, method, base_model, adapter_path, sft_count, dpo_count, metrics, "
    "created_at, kto_count, status, gate, checksum, base_fingerprint, removed_at, retired_why, "
    "started_from, lineage"
)
_RUN_COLUMNS = (
    "id, status, method, config, run_dir, pid, snapshot_id, version_id, metrics, error, "
    "started_at, finished_at, active_at_start"
)


class ActiveChanged(Conflict):
    """The active version is not the one a candidate was measured against any more."""

    def __init__(self, expected: str, active: str) -> None:
        super().__init__(f"the active version changed from {expected} to {active}")
        self.expected = expected
        self.active = active


class VersionRemoved(Conflict):
    """A version whose adapter files were removed (``learnloop versions rm``) is asked to
    answer: its row stays for the history, but it cannot serve again."""

    def __init__(self, version: Version) -> None:
        when = f" on {version.removed_at:%Y-%m-%d %H:%M}" if version.removed_at else ""
        how = (
            f"it was retired ({version.retired_why})"
            if version.retired_why
            else "(`learnloop versions rm`)"
        )
        super().__init__(
            f"the files of version {version.id} were removed{when} {how}: "
            "it cannot answer again; `learnloop versions` lists the others"
        )
        self.version = version.id


class ForgottenWhileTraining(Conflict):
    """A forget came while a run trained: its snapshot may hold the forgotten rows, so
    its version may not be published."""

    def __init__(self, run_id: int, user: str) -> None:
        super().__init__(
            f"learning run {run_id} is not published: {user} was forgotten while it trained, "
            "and its data may hold their feedback; learn again"
        )


class ActiveNotRemovable(Conflict):
    """``versions rm`` named the active version: its files answer questions."""

    def __init__(self, version: str) -> None:
        super().__init__(
            f"{version} is the active version: its files answer questions; activate another "
            "version (or `learnloop rollback`) first"
        )
        self.version = version


class Registry(Connection):
    """Learning runs and their snapshots, model versions and which one is active."""

    def _root(self) -> Path:
        """The data root this store's paths are relative to: its database file's folder."""
        if str(self.path) == ":memory:":
            return data_root()
        return Path(os.path.abspath(self.path)).parent

    # -- learning runs, snapshots, versions ------------------------------------------------

    def start_run(self, method: str, config: dict[str, Any], run_dir: str, pid: int) -> int:
        row = self.db.execute(
            """INSERT INTO runs (status, method, config, run_dir, pid)
               VALUES ('running', ?, ?, ?, ?) RETURNING id""",
            [method, json.dumps(config), stored(run_dir, self._root()), pid],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def reserve_run_id(self) -> int:
        """A run id no run has or will get (ids come from a sequence): the run's folder can
        be named and filled before :meth:`record_prepared_run` records it."""
        return int(self._one("SELECT nextval('run_ids')"))

    def record_prepared_run(
        self,
        run_id: int,
        *,
        method: str,
        config: dict[str, Any],
        run_dir: str,
        pid: int,
        active_at_start: str,
        snapshot: SnapshotRecord,
    ) -> None:
        """Record a run whose folder is complete, with its snapshot, in one transaction.
        Raises Conflict, recording nothing, when another run is running."""
        with self.transaction() as db:
            running = db.execute("SELECT max(id) FROM runs WHERE status = 'running'").fetchone()
            if running is not None and running[0] is not None:
                raise Conflict(f"learning run {running[0]} is still running; wait for it to finish")
            db.execute(
                """INSERT INTO runs (id, status, method, config, run_dir, pid, active_at_start)
                   VALUES (?, 'running', ?, ?, ?, ?, ?)""",
                [
                    run_id,
                    method,
                    json.dumps(config),
                    stored(run_dir, self._root()),
                    pid,
                    active_at_start,
                ],
            )
            _insert_snapshot(db, run_id, snapshot)

    def record_snapshot(
        self,
        run_id: int,
        content_hash: str,
        upto: int,
        rows: dict[str, list[int]],
        counts: dict[str, int],
        quality: dict[str, Any] | None = None,
    ) -> int:
        """Record which feedback rows went into which dataset of a run's snapshot; ``upto``
        is the newest feedback id the cycle considered, ``counts`` the dataset sizes,
        ``quality`` the report of the cleaning before the builders."""
        record = SnapshotRecord(content_hash, upto, rows, counts, quality)
        with self.transaction() as db:
            return _insert_snapshot(db, run_id, record)

    def snapshot_counts(self, run_id: int) -> dict[str, int]:
        """The dataset sizes recorded with run ``run_id``'s snapshot."""
        row = self.db.execute(
            "SELECT sft_count, dpo_count, kto_count FROM snapshots WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"learning run {run_id} has no snapshot")
        return {"sft": int(row[0]), "dpo": int(row[1]), "kto": int(row[2])}

    def snapshot_quality(self, run_id: int) -> dict[str, Any] | None:
        """The quality report recorded with run ``run_id``'s snapshot (what the cleaning
        kept and dropped, the per-user cap's ``capped`` among it); None without one."""
        saved = self._one("SELECT quality FROM snapshots WHERE run_id = ?", [run_id])
        return json.loads(saved) if saved else None

    def set_run_dir(self, run_id: int, run_dir: str) -> None:
        self.db.execute(
            "UPDATE runs SET run_dir = ? WHERE id = ?", [stored(run_dir, self._root()), run_id]
        )

    def fail_run(self, run_id: int, error: str, metrics: dict[str, Any] | None = None) -> None:
        self.db.execute(
            """UPDATE runs SET status = 'failed', error = ?, metrics = ?,
                   finished_at = current_timestamp WHERE id = ?""",
            [error, json.dumps(metrics) if metrics else None, run_id],
        )

    def cancel_run(self, run_id: int, note: str) -> None:
        self.db.execute(
            """UPDATE runs SET status = 'cancelled', error = ?, finished_at = current_timestamp
               WHERE id = ? AND status = 'running'""",
            [note, run_id],
        )

    def last_learned(self) -> tuple[int, int, str] | None:
        """(run id, newest feedback id its snapshot considered, version it made) of the
        latest run that made a version, promoted or not; None before the first."""
        row = self.db.execute(
            """SELECT r.id, s.upto_feedback_id, r.version_id FROM runs r
               JOIN snapshots s ON s.run_id = r.id
               WHERE r.status = 'succeeded' ORDER BY r.id DESC LIMIT 1"""
        ).fetchone()
        return (int(row[0]), int(row[1]), str(row[2])) if row else None

    def fail_stale_runs(self, is_alive: Callable[[int | None], bool]) -> list[int]:
        """Mark as failed every 'running' run whose process is gone; return their ids."""
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
        stale = [run_id for run_id, pid in rows if not is_alive(pid)]
        for run_id in stale:
            self.fail_run(run_id, "the process running this cycle ended before it finished")
        return stale

    def running_run(self) -> int | None:
        return self._one("SELECT max(id) FROM runs WHERE status = 'running'")

    def last_run_start(self) -> datetime | None:
        """When the newest learning run started, whatever became of it."""
        return self._one("SELECT max(started_at) FROM runs")

    def run_dir_of(self, run_id: int) -> str:
        saved = self._one("SELECT run_dir FROM runs WHERE id = ?", [run_id])
        return absolute(str(saved or ""), self._root())

    def runs(self) -> list[Run]:
        return self._runs("ORDER BY id")

    def get_run(self, run_id: int) -> Run:
        found = self._runs("WHERE id = ?", [run_id])
        if not found:
            raise NotFound(f"no learning run {run_id}; `learnloop learn` starts one")
        return found[0]

    def _runs(self, where: str, params: list[Any] | None = None) -> list[Run]:
        rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs {where}", params).fetchall()
        root = self._root()
        return [
            Run(
                r[0],
                r[1],
                r[2],
                json.loads(r[3]),
                absolute(r[4], root),
                r[5],
                r[6],
                r[7],
                json.loads(r[8]) if r[8] else None,
                r[9],
                r[10],
                r[11],
                r[12],
            )
            for r in rows
        ]

    def next_version_id(self) -> str:
        count = self._one("SELECT count(*) FROM versions")
        return f"v{int(count) + 1}"

    def add_version(
        self,
        version: Version,
        *,
        activate: bool,
        who: str,
        why: str,
        control_answers: list[dict[str, Any]] | None = None,
        parent_control: list[dict[str, Any]] | None = None,
        expect_active: str | None = None,
    ) -> None:
        """Register a finished version (its adapter folder complete on disk), close its run,
        store its control answers (and its parent's, measured beside it, if the parent has
        none yet) and make it active, all in one transaction.

        With ``expect_active``, activating is refused when another version is active now:
        :class:`ActiveChanged` is raised and nothing is written, so the caller can record
        the version without activating it instead. A version whose run started before a
        forget is refused (:class:`ForgottenWhileTraining`), nothing written."""
        with self.transaction() as db:
            forgotten = db.execute(
                """SELECT f.user_name FROM forgets f, runs r
                   WHERE r.id = ? AND f.created_at >= r.started_at LIMIT 1""",
                [version.run_id],
            ).fetchone()
            if forgotten is not None:
                raise ForgottenWhileTraining(version.run_id, str(forgotten[0]))
            if activate and expect_active is not None:
                active = _active(db)
                if active != expect_active:
                    raise ActiveChanged(expect_active, active)
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 19)})",
                [
                    version.id,
                    version.parent,
                    version.run_id,
                    version.method,
                    version.base_model,
                    stored(version.adapter_path, self._root()),
                    version.sft_count,
                    version.dpo_count,
                    json.dumps(version.metrics),
                    version.created_at,
                    version.kto_count,
                    version.status,
                    json.dumps(version.gate) if version.gate is not None else None,
                    version.checksum,
                    version.base_fingerprint,
                    version.removed_at,
                    version.retired_why,
                    version.started_from,
                    json.dumps(version.lineage) if version.lineage is not None else None,
                ],
            )
            if control_answers is not None:
                _replace_control_answers(db, version.id, control_answers)
            if parent_control is not None and not _has_control_answers(db, version.parent):
                _replace_control_answers(db, version.parent, parent_control)
            db.execute(
                """UPDATE runs SET status = 'succeeded', version_id = ?, metrics = ?,
                       finished_at = current_timestamp WHERE id = ?""",
                [version.id, json.dumps(version.metrics), version.run_id],
            )
            if activate:
                db.execute(
                    "INSERT INTO activations (version_id, who, why) VALUES (?, ?, ?)",
                    [version.id, who, why],
                )

    def versions(self) -> list[Version]:
        rows = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions ORDER BY created_at, id"
        ).fetchall()
        root = self._root()
        return [
            Version(
                id=r[0],
                parent=r[1],
                run_id=r[2],
                method=r[3],
                base_model=r[4],
                adapter_path=absolute(r[5], root),
                sft_count=r[6],
                dpo_count=r[7],
                metrics=json.loads(r[8]),
                created_at=r[9],
                kto_count=r[10],
                status=r[11],
                gate=json.loads(r[12]) if r[12] else None,
                checksum=r[13],
                base_fingerprint=r[14],
                removed_at=r[15],
                retired_why=r[16],
                started_from=r[17],
                lineage=json.loads(r[18]) if r[18] else None,
            )
            for r in rows
        ]

    def mark_removed(self, version_ids: list[str]) -> None:
        """Record that the adapter files of ``version_ids`` are being deleted (before they
        are: a deletion cut short leaves a version marked removed, never a live version
        with half its files). Refused with a Conflict, recording nothing, when one of them
        is the active version; one marked already keeps its first time."""
        with self.transaction() as db:
            active = _active(db)
            if active in version_ids:
                raise ActiveNotRemovable(active)
            db.executemany(
                "UPDATE versions SET removed_at = current_timestamp "
                "WHERE id = ? AND removed_at IS NULL",
                [[v] for v in version_ids],
            )

    def record_checksum(self, version_id: str, checksum: str) -> None:
        """Give a version published before checksums its checksum (on its first load); a
        recorded checksum is never replaced."""
        self.db.execute(
            "UPDATE versions SET checksum = ? WHERE id = ? AND checksum IS NULL",
            [checksum, version_id],
        )

    def trained_upto(self, version_id: str) -> int | None:
        """The newest feedback id the snapshot of ``version_id``'s run considered (None: a
        version without a snapshot, registered by hand)."""
        return self._one(
            """SELECT s.upto_feedback_id FROM versions v JOIN snapshots s ON s.run_id = v.run_id
               WHERE v.id = ?""",
            [version_id],
        )

    def get_version(self, version_id: str) -> Version:
        for v in self.versions():
            if v.id == version_id:
                return v
        raise NotFound(f"no version {version_id!r}; `learnloop versions` lists them")

    def active_version(self) -> str:
        return _active(self.db)

    def activate(self, version_id: str, *, who: str, why: str) -> None:
        """Make ``version_id`` ('base' or a registered version) active, recording the switch."""
        if version_id != BASE_VERSION:
            version = self.get_version(version_id)  # raises NotFound
            if version.removed_at is not None:
                raise VersionRemoved(version)
        self.db.execute(
            "INSERT INTO activations (version_id, who, why) VALUES (?, ?, ?)",
            [version_id, who, why],
        )

    def activations(self) -> list[Activation]:
        rows = self.db.execute(
            "SELECT id, version_id, who, why, created_at FROM activations ORDER BY id"
        ).fetchall()
        return [Activation(*r) for r in rows]

    # -- the control set ---------------------------------------------------------------

    def add_control_prompt(self, item: ControlPrompt) -> int:
        row = self.db.execute(
            "INSERT INTO control_prompts (prompt, answer, expect) VALUES (?, ?, ?) RETURNING id",
            [item.prompt, item.answer, item.expect],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def control_prompts(self) -> list[ControlPrompt]:
        """The users' own control prompts (the shipped default set lives in learning/)."""
        rows = self.db.execute(
            "SELECT prompt, answer, expect FROM control_prompts ORDER BY id"
        ).fetchall()
        return [ControlPrompt(*r) for r in rows]

    def control_answers(self, version_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT prompt, answer, correct FROM control_answers WHERE version_id = ? "
            "ORDER BY rowid",
            [version_id],
        ).fetchall()
        return [{"prompt": r[0], "answer": r[1], "correct": r[2]} for r in rows]


# -- statements shared by several transactions ------------------------------------------


def _active(db: duckdb.DuckDBPyConnection) -> str:
    row = db.execute("SELECT version_id FROM activations ORDER BY id DESC LIMIT 1").fetchone()
    return str(row[0]) if row else BASE_VERSION


def _insert_snapshot(db: duckdb.DuckDBPyConnection, run_id: int, snap: SnapshotRecord) -> int:
    row = db.execute(
        """INSERT INTO snapshots (run_id, content_hash, upto_feedback_id, sft_count,
               dpo_count, kto_count, quality) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
        [
            run_id,
            snap.content_hash,
            snap.upto,
            snap.counts.get("sft", 0),
            snap.counts.get("dpo", 0),
            snap.counts.get("kto", 0),
            json.dumps(snap.quality) if snap.quality is not None else None,
        ],
    ).fetchone()
    assert row is not None
    snapshot_id = int(row[0])
    pairs = [(snapshot_id, fid, dataset) for dataset, ids in snap.rows.items() for fid in set(ids)]
    if pairs:
        db.executemany("INSERT INTO snapshot_feedback VALUES (?, ?, ?)", pairs)
    db.execute("UPDATE runs SET snapshot_id = ? WHERE id = ?", [snapshot_id, run_id])
    return snapshot_id


def _has_control_answers(db: duckdb.DuckDBPyConnection, version_id: str) -> bool:
    row = db.execute(
        "SELECT count(*) FROM control_answers WHERE version_id = ?", [version_id]
    ).fetchone()
    return bool(row and row[0])


def _replace_control_answers(
    db: duckdb.DuckDBPyConnection, version_id: str, answers: list[dict[str, Any]]
) -> None:
    db.execute("DELETE FROM control_answers WHERE version_id = ?", [version_id])
    if answers:
        db.executemany(
            "INSERT INTO control_answers (version_id, prompt, answer, correct) VALUES (?, ?, ?, ?)",
            [(version_id, a["prompt"], a["answer"], a["correct"]) for a in answers],
        )
