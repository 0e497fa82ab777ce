"""The store: one object owns one DuckDB file and all of learnloop's SQL.

DuckDB lets one process at a time open a file for writing. The store therefore opens
its connection lazily and a caller that waits on a human (the chat REPL) calls
:meth:`Store.release` in between, so that another learnloop command can get in; opening
retries for a while on a held lock before it gives up with a message naming the holder.
Opening migrates: a fresh file and an old one are handled the same way.

The class is split by responsibility over four files: the connection
(storage/connection.py), the learning records (storage/registry.py: runs, snapshots,
versions, activations, control set), forgetting a user (storage/forgetting.py), the API
keys (storage/keys.py) and, here, threads, turns, feedback and the overview.

Invariants:
- the active version is the ``version_id`` of the latest ``activations`` row ('base' if none);
- a version row and its activation are written in one transaction, after its adapter
  folder is complete on disk, so no half-written version is ever active;
- feedback rows are only ever appended (and deleted only with their thread, by its
  owner: :meth:`Store.delete_thread`, or with their user: :meth:`Store.forget_rows`);
  the latest row for a turn is the one that counts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from learnloop.storage.connection import BASE_VERSION, StoreError
from learnloop.storage.errors import NotFound, UsageError
from learnloop.storage.forgetting import Forgetting
from learnloop.storage.keys import Keys
from learnloop.storage.records import (
    FeedbackExample,
    FeedbackRow,
    Message,
    Status,
    ThreadSummary,
    Turn,
    TurnLog,
    trajectory_of,
)

__all__ = ["BASE_VERSION", "NotFound", "Store", "StoreError"]


def _json_or_null(items: list[Any] | None) -> str | None:
    """A JSON list, or NULL for an empty one (a turn without tools stores none)."""
    return json.dumps(items) if items else None


def _list(raw: str | None) -> list[Any]:
    return json.loads(raw) if raw else []


_TURN_COLUMNS = (
    "id, created_at, thread_id, user_message, messages, prompt, answer, version, model, "
    "settings, prompt_tokens, completion_tokens, first_token_ms, total_ms, nodes, regen_of, "
    "interrupted, truncated, steps, tools, user_name"
)


class Store(Keys, Forgetting):
    """All reads and writes of one learnloop database. Use as a context manager."""

    # -- threads and turns ------------------------------------------------------------

    def create_thread(self, thread_id: str) -> str:
        self.db.execute("INSERT INTO threads (id) VALUES (?)", [thread_id])
        return thread_id

    def thread_exists(self, thread_id: str) -> bool:
        return bool(self._one("SELECT count(*) FROM threads WHERE id = ?", [thread_id]))

    def new_turn_id(self) -> int:
        """Reserve a turn id before the answer exists (a streamed answer names its turn in
        its first bytes); pass it to :meth:`add_turn`."""
        return int(self._one("SELECT nextval('turn_ids')"))

    def add_turn(self, log: TurnLog, turn_id: int | None = None) -> int:
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
                """INSERT INTO turns (id, thread_id, regen_of, user_message, messages, prompt,
                       answer, version, model, settings, prompt_tokens, completion_tokens,
                       first_token_ms, total_ms, nodes, interrupted, truncated, steps, tools,
                       user_name)
                   VALUES (coalesce(?, nextval('turn_ids')), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                           ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    turn_id,
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
                    log.truncated,
                    _json_or_null(log.steps),
                    _json_or_null(log.tools),
                    log.user_name,
                ],
            ).fetchone()
        assert row is not None
        return int(row[0])

    def replace_trajectory(self, turn_id: int, log: TurnLog) -> None:
        """Rewrite what turn ``turn_id`` logged of its answer with ``log``'s, in one
        transaction: steps, answer, version, settings, token counts, total time, nodes,
        tools, interrupted and truncated (a graph of the user's own ran the turn's calls
        and asked the model again: agent/logged.py). Its thread, question, messages,
        first prompt, first-token time, regen_of and feedback rows stay as they were.
        NotFound for no such turn."""
        with self.transaction() as db:
            row = db.execute(
                """UPDATE turns SET steps = ?, answer = ?, version = ?, settings = ?,
                       prompt_tokens = ?, completion_tokens = ?, total_ms = ?, nodes = ?,
                       tools = ?, interrupted = ?, truncated = ?
                   WHERE id = ? RETURNING id""",
                [
                    _json_or_null(log.steps),
                    log.answer,
                    log.version,
                    json.dumps(log.settings),
                    log.prompt_tokens,
                    log.completion_tokens,
                    log.total_ms,
                    json.dumps(log.nodes),
                    _json_or_null(log.tools),
                    log.interrupted,
                    log.truncated,
                    turn_id,
                ],
            ).fetchone()
            if row is None:
                raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")

    def get_turn(self, turn_id: int) -> Turn:
        row = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE id = ?", [turn_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
        return self._turns([row])[0]

    def answers_to(self, turn_id: int) -> int:
        """How many answers the prompt of ``turn_id`` has had: the original turn and all
        its regenerations (0 when there is no such turn)."""
        return int(
            self._one(
                """SELECT count(*) FROM turns WHERE coalesce(regen_of, id) =
                   (SELECT coalesce(regen_of, id) FROM turns WHERE id = ?)""",
                [turn_id],
            )
        )

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

    def threads(self, limit: int = 50, q: str | None = None) -> list[ThreadSummary]:
        """Threads with at least one turn, the most recently active first; with ``q``, only
        those whose title or any message (the user's or an answer) contains it, ignoring
        case."""
        return self._thread_summaries(limit, q)

    def _thread_summaries(
        self, limit: int, q: str | None, owner: str | None = None
    ) -> list[ThreadSummary]:
        """:meth:`threads`; with ``owner``, of that owner's threads only. ``q`` is matched
        as plain text (``strpos``, not LIKE), so ``%`` and ``_`` in it match themselves."""
        where, params = "", []
        if owner is not None:
            where, params = "WHERE h.owner = ?", [owner]
        having = ""
        if q is not None:
            having = """HAVING bool_or(strpos(lower(t.user_message), lower(?)) > 0
                                OR strpos(lower(t.answer), lower(?)) > 0)
                        OR strpos(lower(coalesce(any_value(h.title), '')), lower(?)) > 0"""
            params += [q, q, q]
        rows = self.db.execute(
            f"""SELECT t.thread_id, min(t.created_at), arg_min(t.user_message, t.id),
                       count(DISTINCT coalesce(t.regen_of, t.id)), max(t.created_at),
                       any_value(h.title)
                FROM turns t LEFT JOIN threads h ON h.id = t.thread_id {where}
                GROUP BY t.thread_id {having} ORDER BY max(t.id) DESC LIMIT ?""",
            [*params, limit],
        ).fetchall()
        return [ThreadSummary(*r) for r in rows]

    def thread_turns(self, thread_id: str) -> list[Turn]:
        """Every turn of a thread, regenerations included, oldest first: the answers
        :meth:`thread_history` leaves out are the earlier answers to the same message."""
        rows = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE thread_id = ? ORDER BY id", [thread_id]
        ).fetchall()
        return self._turns(rows)

    def rename_thread(self, thread_id: str, title: str | None) -> None:
        """Give a thread its title (None: back to its first message); NotFound for none."""
        row = self.db.execute(
            "UPDATE threads SET title = ? WHERE id = ? RETURNING id", [title, thread_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")

    def delete_thread(self, thread_id: str) -> tuple[int, int]:
        """Delete a thread, its turns and their feedback, in one transaction; return
        (turns, feedback rows) deleted. NotFound for no such thread.

        What was learned from it stays: versions keep their weights, and the runs that
        used its feedback keep their frozen datasets in their run folders; the snapshot
        rows in this database name feedback only by id, so they name nothing readable."""
        with self.transaction() as db:
            if not self._one("SELECT count(*) FROM threads WHERE id = ?", [thread_id]):
                raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
            feedback = db.execute(
                """DELETE FROM feedback WHERE turn_id IN
                   (SELECT id FROM turns WHERE thread_id = ?) RETURNING id""",
                [thread_id],
            ).fetchall()
            turns = db.execute(
                "DELETE FROM turns WHERE thread_id = ? RETURNING id", [thread_id]
            ).fetchall()
            db.execute("DELETE FROM threads WHERE id = ?", [thread_id])
        return len(turns), len(feedback)

    def recent_turns(self, limit: int) -> list[Turn]:
        rows = self.db.execute(
            f"SELECT {_TURN_COLUMNS} FROM turns ORDER BY id DESC LIMIT ?", [limit]
        ).fetchall()
        return self._turns(rows[::-1])

    def _turns(self, rows: list[tuple[Any, ...]]) -> list[Turn]:
        ids = [r[0] for r in rows]
        feedback: dict[int, list[FeedbackRow]] = {i: [] for i in ids}
        if ids:
            # with what the latest cycle that made a version did with each row: trained
            # on it, or kept it aside to test that version ('heldout')
            for f in self.db.execute(
                """SELECT f.id, f.turn_id, f.rating, f.correction, f.comment, f.user_name,
                          f.created_at, f.correction_messages, arg_max(r.version_id, r.id),
                          arg_max(sf.dataset = 'heldout', r.id)
                   FROM feedback f
                   LEFT JOIN snapshot_feedback sf ON sf.feedback_id = f.id
                   LEFT JOIN snapshots s ON s.id = sf.snapshot_id
                   LEFT JOIN runs r ON r.id = s.run_id AND r.status = 'succeeded'
                   WHERE list_contains(?, f.turn_id)
                   GROUP BY ALL ORDER BY f.id""",
                [ids],
            ).fetchall():
                row = FeedbackRow(*f[:7])
                extra = {"correction_messages": _list(f[7]) or None, "used_by": f[8]}
                feedback[f[1]].append(replace(row, **extra, kept_aside=bool(f[9])))
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
                    truncated=r[17],
                    steps=_list(r[18]),
                    tools=_list(r[19]),
                    user_name=r[20],
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
        correction_messages: list[Message] | None = None,
    ) -> int:
        """Append one feedback row for an existing turn; return its id. A corrected
        trajectory (``correction_messages``, checked by the caller) is stored beside
        ``correction``, its final answer's text. Inside a caller's
        :meth:`transaction`, it commits with what the caller reads after it (the trigger
        check: agent/service.py), so a damaged block found there leaves no row behind."""
        if rating not in ("up", "down"):
            raise UsageError(f"rating must be 'up' or 'down', not {rating!r}")
        with self.transaction() as db:
            if not self._one("SELECT count(*) FROM turns WHERE id = ?", [turn_id]):
                raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
            row = db.execute(
                """INSERT INTO feedback (turn_id, rating, correction, comment, user_name,
                       correction_messages)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    turn_id,
                    rating,
                    correction,
                    comment,
                    user_name,
                    _json_or_null(correction_messages),
                ],
            ).fetchone()
        assert row is not None
        return int(row[0])

    def approval_by_version(self) -> list[tuple[str, int, int]]:
        """(version, thumbs-up, thumbs-down) over the latest rating of each rated turn, in
        the order the versions first answered."""
        return [
            (r[0], int(r[1]), int(r[2]))
            for r in self.db.execute(
                """WITH latest AS (
                     SELECT f.rating, t.version, t.id FROM feedback f
                     JOIN turns t ON t.id = f.turn_id
                     QUALIFY row_number() OVER (PARTITION BY f.turn_id ORDER BY f.id DESC) = 1)
                   SELECT version, count(*) FILTER (rating = 'up'),
                          count(*) FILTER (rating = 'down')
                   FROM latest GROUP BY version ORDER BY min(id)"""
            ).fetchall()
        ]

    def feedback_examples(self) -> list[FeedbackExample]:
        """The latest feedback on every turn that has any, oldest turn first."""
        rows = self.db.execute(
            """SELECT f.id, t.id, t.thread_id, t.messages, t.answer, f.rating, f.correction,
                      f.user_name,
                      (SELECT count(*) FROM feedback e WHERE e.turn_id = f.turn_id
                         AND e.id < f.id AND (e.rating != f.rating
                         OR coalesce(e.correction, '') != coalesce(f.correction, '')
                         OR coalesce(e.correction_messages::VARCHAR, '')
                            != coalesce(f.correction_messages::VARCHAR, ''))),
                      t.truncated, t.steps, t.tools, f.correction_messages
               FROM feedback f JOIN turns t ON t.id = f.turn_id
               QUALIFY row_number() OVER (PARTITION BY f.turn_id ORDER BY f.id DESC) = 1
               ORDER BY t.id"""
        ).fetchall()
        return [
            FeedbackExample(
                feedback_id=r[0],
                turn_id=r[1],
                thread_id=r[2],
                messages=json.loads(r[3]),
                answer=r[4],
                rating=r[5],
                correction=r[6],
                user_name=r[7],
                conflicts=r[8],
                truncated=r[9],
                trajectory=trajectory_of(_list(r[10]), r[4]),
                tools=_list(r[11]),
                correction_messages=_list(r[12]) or None,
            )
            for r in rows
        ]

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

    # -- thread owners (who sees what on a server with keys) ------------------------------
    # A thread's owner is the name of the API key whose request started it; NULL is the
    # operator's (loopback without a key, the CLI). A turn belongs to its thread's owner.

    def create_owned_thread(self, thread_id: str, owner: str | None) -> str:
        self.db.execute("INSERT INTO threads (id, owner) VALUES (?, ?)", [thread_id, owner])
        return thread_id

    def thread_owner(self, thread_id: str) -> str | None:
        """The thread's owner (None: the operator's); NotFound for no such thread."""
        row = self.db.execute("SELECT owner FROM threads WHERE id = ?", [thread_id]).fetchone()
        if row is None:
            raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
        return None if row[0] is None else str(row[0])

    def turn_owner(self, turn_id: int) -> str | None:
        """The owner of the turn's thread (None: the operator's); NotFound for no turn."""
        row = self.db.execute(
            """SELECT h.owner FROM turns t LEFT JOIN threads h ON h.id = t.thread_id
               WHERE t.id = ?""",
            [turn_id],
        ).fetchone()
        if row is None:
            raise NotFound(f"no turn with id {turn_id}; `learnloop log` lists recent turns")
        return None if row[0] is None else str(row[0])

    def owned_threads(
        self, owner: str, limit: int = 50, q: str | None = None
    ) -> list[ThreadSummary]:
        """:meth:`threads`, of ``owner``'s threads only."""
        return self._thread_summaries(limit, q, owner)

    def owned_recent_turns(self, owner: str, limit: int) -> list[Turn]:
        """:meth:`recent_turns`, of ``owner``'s threads only."""
        columns = ", ".join(f"t.{c.strip()}" for c in _TURN_COLUMNS.split(","))
        rows = self.db.execute(
            f"""SELECT {columns} FROM turns t JOIN threads h ON h.id = t.thread_id
                WHERE h.owner = ? ORDER BY t.id DESC LIMIT ?""",
            [owner, limit],
        ).fetchall()
        return self._turns(rows[::-1])
