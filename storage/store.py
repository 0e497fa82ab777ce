"""The store: one object owns one DuckDB file and all of learnloop's SQL.

DuckDB lets one process at a time open a file for writing. The store therefore opens
its connection lazily and a caller that waits on a human (the chat REPL) calls
:meth:`Store.release` in between, so that another learnloop command can get in; opening
retries for a while on a held lock before it gives up with a message naming the holder.
Opening migrates: a fresh file and an old one are handled the same way.

Invariants:
- the active version is the ``version_id`` of the latest ``activations`` row ('base' if none);
- a version row and its activation are written in one transaction, after its adapter
  folder is complete on disk, so no half-written version is ever active;
- feedback rows are only ever appended; the latest row for a turn is the one that counts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from storage.home import db_path, ensure_data_root
from storage.migrations import migrate
from storage.records import (
    Activation,
    ControlPrompt,
    FeedbackExample,
    FeedbackRow,
    Run,
    Status,
    Turn,
    TurnLog,
    Version,
)

BASE_VERSION = "base"


class StoreError(RuntimeError):
    """A problem with the database that the user can act on."""


class NotFound(StoreError):
    """A referenced row (turn, thread, version) does not exist."""


_TURN_COLUMNS = (
    "id, created_at, thread_id, user_message, messages, prompt, answer, version, model, "
    "settings, prompt_tokens, completion_tokens, first_token_ms, total_ms, nodes, regen_of, "
    "interrupted"
)
_VERSION_COLUMNS = (
    "id, parent, run_id, method, base_model, adapter_path, sft_count, dpo_count, metrics, "
    "created_at, kto_count, status, gate"
)
_RUN_COLUMNS = (
    "id, status, method, config, run_dir, pid, snapshot_id, version_id, metrics, error, "
    "started_at, finished_at"
)


def _connect(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" not in text.lower():
                raise StoreError(f"cannot open the database {path}: {text}") from exc
            if time.monotonic() >= deadline:
                holder = re.search(r"PID (\d+)", text)
                who = f" (PID {holder.group(1)})" if holder else ""
                raise StoreError(
                    f"the database {path} is in use by another learnloop process{who}; "
                    "wait for it to finish or stop it"
                ) from exc
            time.sleep(0.1)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc


class Store:
    """All reads and writes of one learnloop database. Use as a context manager."""

    def __init__(self, path: Path | None = None, *, lock_timeout: float = 30.0) -> None:
        self.path = path or db_path()
        self.lock_timeout = lock_timeout
        self._db: duckdb.DuckDBPyConnection | None = None

    # -- connection -------------------------------------------------------------------

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            ensure_data_root()
            db = _connect(self.path, self.lock_timeout)
            try:
                migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def release(self) -> None:
        """Close the connection so other processes can open the file; reopened on demand."""
        if self._db is not None:
            self._db.close()
            self._db = None

    close = release

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        db = self.db
        db.execute("BEGIN TRANSACTION")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _one(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.db.execute(sql, params or []).fetchone()
        return row[0] if row else None

    # -- threads and turns ------------------------------------------------------------

    def create_thread(self, thread_id: str) -> str:
        self.db.execute("INSERT INTO threads (id) VALUES (?)", [thread_id])
        return thread_id

    def thread_exists(self, thread_id: str) -> bool:
        return bool(self._one("SELECT count(*) FROM threads WHERE id = ?", [thread_id]))

    def add_turn(self, log: TurnLog) -> int:
        """Log one turn; return its id. The thread is created if it is new.

        ``regen_of`` is stored as the original turn, whichever of its regenerations the
        caller named, so a turn and all its regenerations share one ``regen_of``."""
        with self.transaction() as db:
            regen_of = log.regen_of
            if regen_of is not None:
                row = db.execute(
                    "SELECT coalesce(regen_of, id) FROM turns WHERE id = ?", [regen_of]
                ).fetchone()
                if row is None:
                    raise NotFound(f"no turn with id {regen_of} to regenerate")
                regen_of = row[0]
            db.execute(
                "INSERT INTO threads (id) VALUES (?) ON CONFLICT DO NOTHING", [log.thread_id]
            )
            row = db.execute(
                """INSERT INTO turns (thread_id, regen_of, user_message, messages, prompt, answer,
                       version, model, settings, prompt_tokens, completion_tokens,
                       first_token_ms, total_ms, nodes, interrupted)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    log.thread_id,
                    regen_of,
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
                    log.interrupted,
                ],
            ).fetchone()
        assert row is not None
        return int(row[0])

    def get_turn(self, turn_id: int) -> Turn:
        row = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", [turn_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
        return self._turns([row])[0]

    def thread_history(self, thread_id: str) -> list[Turn]:
        """The turns that make up a thread's conversation, oldest first.

        A ``/regen`` turn replaces the turn it re-answers: of each original turn and its
        regenerations only the newest belongs to the history."""
        rows = self.db.execute(
            f"""SELECT {_TURN_COLUMNS} FROM turns WHERE thread_id = ?
                QUALIFY row_number() OVER (PARTITION BY coalesce(regen_of, id) ORDER BY id DESC) = 1
                ORDER BY coalesce(regen_of, id)""",
            [thread_id],
        ).fetchall()
        return self._turns(rows)

    def recent_turns(self, limit: int) -> list[Turn]:
        rows = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns ORDER BY id DESC LIMIT ?", [limit]
        ).fetchall()
        return self._turns(rows[::-1])

    def _turns(self, rows: list[tuple[Any, ...]]) -> list[Turn]:
        ids = [r[0] for r in rows]
        feedback: dict[int, list[FeedbackRow]] = {i: [] for i in ids}
        if ids:
            for f in self.db.execute(
                """SELECT id, turn_id, rating, correction, comment, user_name, created_at
                   FROM feedback WHERE list_contains(?, turn_id) ORDER BY id""",
                [ids],
            ).fetchall():
                feedback[f[1]].append(FeedbackRow(*f))
        return [
            Turn(
                id=r[0],
                created_at=r[1],
                log=TurnLog(
                    thread_id=r[2],
                    user_message=r[3],
                    messages=json.loads(r[4]),
                    prompt=r[5],
                    answer=r[6],
                    version=r[7],
                    model=r[8],
                    settings=json.loads(r[9]),
                    prompt_tokens=r[10],
                    completion_tokens=r[11],
                    first_token_ms=r[12],
                    total_ms=r[13],
                    nodes=json.loads(r[14]),
                    regen_of=r[15],
                    interrupted=r[16],
                ),
                feedback=feedback[r[0]],
            )
            for r in rows
        ]

    # -- feedback -----------------------------------------------------------------------

    def add_feedback(
        self,
        turn_id: int,
        rating: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        user_name: str = "local",
    ) -> int:
        """Append one feedback row for an existing turn; return its id."""
        if rating not in ("up", "down"):
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        if not self._one("SELECT count(*) FROM turns WHERE id = ?", [turn_id]):
            raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
        row = self.db.execute(
            """INSERT INTO feedback (turn_id, rating, correction, comment, user_name)
               VALUES (?, ?, ?, ?, ?) RETURNING id""",
            [turn_id, rating, correction, comment, user_name],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def feedback_examples(self) -> list[FeedbackExample]:
        """The latest feedback on every turn that has any, oldest turn first."""
        rows = self.db.execute(
            """SELECT f.id, t.id, t.thread_id, t.messages, t.answer, f.rating, f.correction,
                      f.user_name,
                      (SELECT count(*) FROM feedback e WHERE e.turn_id = f.turn_id
                         AND e.id < f.id AND (e.rating != f.rating
                         OR coalesce(e.correction, '') != coalesce(f.correction, '')))
               FROM feedback f JOIN turns t ON t.id = f.turn_id
               QUALIFY row_number() OVER (PARTITION BY f.turn_id ORDER BY f.id DESC) = 1
               ORDER BY t.id"""
        ).fetchall()
        return [
            FeedbackExample(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    # -- learning runs, snapshots, versions ------------------------------------------------

    def start_run(self, method: str, config: dict[str, Any], run_dir: str, pid: int) -> int:
        row = self.db.execute(
            """INSERT INTO runs (status, method, config, run_dir, pid)
               VALUES ('running', ?, ?, ?, ?) RETURNING id""",
            [method, json.dumps(config), run_dir, pid],
        ).fetchone()
        assert row is not None
        return int(row[0])

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
        with self.transaction() as db:
            row = db.execute(
                """INSERT INTO snapshots (run_id, content_hash, upto_feedback_id, sft_count,
                       dpo_count, kto_count, quality) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    run_id,
                    content_hash,
                    upto,
                    counts.get("sft", 0),
                    counts.get("dpo", 0),
                    counts.get("kto", 0),
                    json.dumps(quality) if quality is not None else None,
                ],
            ).fetchone()
            assert row is not None
            snapshot_id = int(row[0])
            pairs = [
                (snapshot_id, fid, dataset) for dataset, ids in rows.items() for fid in set(ids)
            ]
            if pairs:
                db.executemany("INSERT INTO snapshot_feedback VALUES (?, ?, ?)", pairs)
            db.execute("UPDATE runs SET snapshot_id = ? WHERE id = ?", [snapshot_id, run_id])
        return snapshot_id

    def set_run_dir(self, run_id: int, run_dir: str) -> None:
        self.db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", [run_dir, run_id])

    def fail_run(self, run_id: int, error: str, metrics: dict[str, Any] | None = None) -> None:
        self.db.execute(
            """UPDATE runs SET status = 'failed', error = ?, metrics = ?,
                   finished_at = current_timestamp WHERE id = ?""",
            [error, json.dumps(metrics) if metrics else None, run_id],
        )

    def fail_stale_runs(self, is_alive: Callable[[int | None], bool]) -> list[int]:
        """Mark as failed every 'running' run whose process is gone; return their ids."""
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
        stale = [run_id for run_id, pid in rows if not is_alive(pid)]
        for run_id in stale:
            self.fail_run(run_id, "the process running this cycle ended before it finished")
        return stale

    def running_run(self) -> int | None:
        return self._one("SELECT max(id) FROM runs WHERE status = 'running'")

    def runs(self) -> list[Run]:
        rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
        return [
            Run(
                r[0],
                r[1],
                r[2],
                json.loads(r[3]),
                r[4],
                r[5],
                r[6],
                r[7],
                json.loads(r[8]) if r[8] else None,
                r[9],
                r[10],
                r[11],
            )
            for r in rows
        ]

    def next_version_id(self) -> str:
        count = self._one("SELECT count(*) FROM versions")
        return f"v{int(count) + 1}"

    def add_version(self, version: Version, *, activate: bool, who: str, why: str) -> None:
        """Register a finished version (its adapter folder complete on disk), close its run,
        and make it active, all in one transaction."""
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                [
                    version.id,
                    version.parent,
                    version.run_id,
                    version.method,
                    version.base_model,
                    version.adapter_path,
                    version.sft_count,
                    version.dpo_count,
                    json.dumps(version.metrics),
                    version.created_at,
                    version.kto_count,
                    version.status,
                    json.dumps(version.gate) if version.gate is not None else None,
                ],
            )
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
        return [
            Version(
                id=r[0],
                parent=r[1],
                run_id=r[2],
                method=r[3],
                base_model=r[4],
                adapter_path=r[5],
                sft_count=r[6],
                dpo_count=r[7],
                metrics=json.loads(r[8]),
                created_at=r[9],
                kto_count=r[10],
                status=r[11],
                gate=json.loads(r[12]) if r[12] else None,
            )
            for r in rows
        ]

    def get_version(self, version_id: str) -> Version:
        for v in self.versions():
            if v.id == version_id:
                return v
        raise NotFound(f"no version {version_id!r}; `learnloop versions` lists them")

    def active_version(self) -> str:
        return (
            self._one("SELECT version_id FROM activations ORDER BY id DESC LIMIT 1") or BASE_VERSION
        )

    def activate(self, version_id: str, *, who: str, why: str) -> None:
        """Make ``version_id`` ('base' or a registered version) active, recording the switch."""
        if version_id != BASE_VERSION:
            self.get_version(version_id)  # raises NotFound
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

    def record_control_answers(self, version_id: str, answers: list[dict[str, Any]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM control_answers WHERE version_id = ?", [version_id])
            if answers:
                db.executemany(
                    "INSERT INTO control_answers (version_id, prompt, answer, correct) "
                    "VALUES (?, ?, ?, ?)",
                    [(version_id, a["prompt"], a["answer"], a["correct"]) for a in answers],
                )

    def control_answers(self, version_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT prompt, answer, correct FROM control_answers WHERE version_id = ? "
            "ORDER BY rowid",
            [version_id],
        ).fetchall()
        return [{"prompt": r[0], "answer": r[1], "correct": r[2]} for r in rows]

    # -- overview ------------------------------------------------------------------------

    def status(self) -> Status:
        row = self.db.execute(
            """SELECT
                 (SELECT count(*) FROM turns),
                 (SELECT count(*) FROM threads),
                 (SELECT count(*) FROM feedback),
                 (SELECT count(*) FROM feedback WHERE rating = 'up'),
                 (SELECT count(*) FROM feedback WHERE rating = 'down'),
                 (SELECT count(*) FROM feedback WHERE correction IS NOT NULL),
                 (SELECT count(*) FROM feedback WHERE id > (
                     SELECT coalesce(max(s.upto_feedback_id), 0) FROM snapshots s
                     JOIN runs r ON r.id = s.run_id AND r.status = 'succeeded')),
                 (SELECT count(*) FROM versions)"""
        ).fetchone()
        assert row is not None
        turns, threads, feedback, up, down, corrections, unlearned, versions = row
        return Status(
            active_version=self.active_version(),
            turns=turns,
            threads=threads,
            feedback=feedback,
            feedback_up=up,
            feedback_down=down,
            corrections=corrections,
            unlearned_feedback=unlearned,
            versions=versions,
            running_run=self.running_run(),
        )
