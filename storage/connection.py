"""The connection under the store: one DuckDB file, opened lazily, migrated on open.

DuckDB lets one process at a time open a file for writing. The connection is therefore
opened on first use, and a caller that waits on a human (the chat REPL) calls
:meth:`Connection.release` in between so that another learnloop command can get in;
opening retries for a while on a held lock before it gives up naming the holder.

The server instead holds the file for as long as it runs (``shared=True``): every thread
gets its own cursor on the one connection (DuckDB's rule for threads), ``release`` keeps
the file, and write transactions take turns so that they never conflict.

Rewriting the file (:meth:`Connection.rewrite`, after a forget) copies every table into a
fresh file and puts it in place: DuckDB leaves deleted rows' bytes in the blocks it frees,
and a forgotten row must be gone from the disk. Every store method (and transaction) runs
inside a :class:`Gate`, so the rewrite waits for the calls under way and holds new ones
back until the new file is open.

A damaged file is this module's to report, in one line that says how to restore it
(:class:`StoreError`): at open when the file ends before a block that holds table data
(a truncated copy), or on the first query that reads a damaged block (DuckDB checks each
block's checksum only when it reads it). Every call on :attr:`Connection.db` goes through
that seam, so no DuckDB error about the file ever reaches a user as a traceback; errors
about the SQL itself (a constraint, a missing table) are bugs and pass unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, cast

import duckdb

from learnloop.storage.errors import Unavailable
from learnloop.storage.home import db_path, ensure_data_root
from learnloop.storage.migrations import migrate

BASE_VERSION = "base"

# DuckDB's file starts with a main header and two database headers of 4 KiB each; block b
# follows at _HEADER_BYTES + b * block_size, and is always written whole.
_HEADER_BYTES = 3 * 4096
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# What DuckDB says about a file it cannot read as a database (checksum errors come as a
# bare duckdb.Error, a torn file as an IOException).
_DAMAGE_SIGNS = (
    "not a valid duckdb database file",
    "could not read enough bytes",
    "corrupt",
    "checksum",
    "replaying wal",
    "invalidated",
)
# The error classes that are about the file or the engine rather than the SQL; the others
# (constraints, catalog, binder...) are a caller's mistake or a bug and pass unchanged.
_FILE_ERRORS = (
    duckdb.IOException,
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.SerializationException,
)


class StoreError(Unavailable):
    """A problem with the database that the user can act on (locked, damaged)."""


def damaged(path: Path, reason: str) -> StoreError:
    """The one line for a damaged database file: what is wrong and how to get it back."""
    name, wal = path.name, path.name + ".wal"
    return StoreError(
        f"the database {path} is damaged ({reason}); restore {name} and {wal} from a backup "
        f"that holds both (the .wal holds committed rows), or move both away to start afresh"
    )


def store_error(path: Path, exc: duckdb.Error) -> StoreError:
    """A DuckDB error about the file as a one-line StoreError naming the file."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(f'"{path}"', f'"{path.name}"')  # the line names the path once
    lowered = text.lower()
    if "no space left" in lowered:
        return StoreError(f"no space left on the device of the database {path}; free some space")
    if "permission denied" in lowered:
        return StoreError(
            f"cannot use the database {path}: permission denied; "
            "check the owner and mode of the file and its folder"
        )
    if any(sign in lowered for sign in _DAMAGE_SIGNS):
        return damaged(path, text)
    return StoreError(f"cannot use the database {path}: {text}")


def is_file_error(exc: duckdb.Error) -> bool:
    return isinstance(exc, _FILE_ERRORS) or "corrupt" in str(exc).lower()


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn DuckDB's errors about the file into a :class:`StoreError` naming ``path``."""
    try:
        yield
    except duckdb.Error as exc:
        if not is_file_error(exc):
            raise
        raise store_error(path, exc) from exc


class Guarded:
    """A DuckDB connection or cursor whose every call goes through :func:`translated`.

    It answers to the same calls as the connection it wraps (``execute`` returns the
    wrapper again, so a following ``fetchone`` is guarded too)."""

    __slots__ = ("_path", "_raw")

    def __init__(self, raw: duckdb.DuckDBPyConnection, path: Path) -> None:
        self._raw = raw
        self._path = path

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._raw, name)
        if not callable(attr):
            return attr
        return self._guard(attr)

    def _guard(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            with translated(self._path):
                result = call(*args, **kwargs)
            return self if result is self._raw else result

        return guarded


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _current(db: duckdb.DuckDBPyConnection) -> str:
    row = db.execute("SELECT current_database()").fetchone()
    assert row is not None
    return '"' + str(row[0]).replace('"', '""') + '"'


def _connect(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" not in text.lower():
                raise store_error(path, exc) from exc
            if time.monotonic() >= deadline:
                holder = re.search(r"PID (\d+)", text)
                who = f" (PID {holder.group(1)})" if holder else ""
                raise StoreError(
                    f"the database {path} is in use by another learnloop process{who}; "
                    "wait for it to finish or stop it"
                ) from exc
            time.sleep(0.1)
        except duckdb.Error as exc:
            raise store_error(path, exc) from exc


def check_complete(db: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Raise the damaged-file StoreError when ``path`` lacks a block its tables are in.

    DuckDB itself opens a truncated file and fails only on the first query that reads a
    missing block, by then perhaps after a write: this check makes that fail at open.
    It asks DuckDB where each table's stored segments lie (its block count will not do:
    blocks that are free, or replayed from the ``.wal`` and not yet written, may lie
    past the end of a whole file). Called with the file open, so no other process
    writes it meanwhile."""
    if not path.is_file():
        return  # in memory
    row = db.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()
    highest = _highest_block(db)
    if row is None or highest is None:
        return
    expected = _HEADER_BYTES + (highest + 1) * int(row[0])
    actual = path.stat().st_size
    if actual < expected:
        raise damaged(path, f"it holds {actual} of its {expected} bytes: it was cut short")


def _highest_block(db: duckdb.DuckDBPyConnection) -> int | None:
    """The highest block id that holds a stored segment of any table (None: no table)."""
    names = [
        str(r[0])
        for r in db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
        if _TABLE_NAME.fullmatch(str(r[0]))
    ]
    if not names:
        return None
    segments = " UNION ALL ".join(
        f"SELECT block_id, additional_block_ids, persistent FROM pragma_storage_info('{name}')"
        for name in names
    )
    row = db.execute(
        f"""SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1)))
            FROM ({segments}) WHERE persistent"""
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class Gate:
    """Store calls against a rewrite of the file: any number of calls at once (a call
    inside another, in the same thread, counts as the outer one), or one rewrite alone."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._calls = 0
        self._rewriting = False
        self._local = threading.local()

    @contextmanager
    def call(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if not depth:
            with self._changed:
                self._changed.wait_for(lambda: not self._rewriting)
                self._calls += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if not depth:
                with self._changed:
                    self._calls -= 1
                    self._changed.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """No call runs meanwhile. Not from inside a call (it would wait for itself)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._rewriting)
            self._rewriting = True
            self._changed.wait_for(lambda: self._calls == 0)
        try:
            yield
        finally:
            with self._changed:
                self._rewriting = False
                self._changed.notify_all()


def _gated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def gated(self: Connection, *args: Any, **kwargs: Any) -> Any:
        with self.gate.call():
            return method(self, *args, **kwargs)

    return gated


class Connection:
    """A lazily opened, migrated DuckDB connection; the base of :class:`Store`.

    Every public method of a subclass (the store's calls) runs inside :attr:`gate`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if callable(value) and not name.startswith("_"):
                setattr(cls, name, _gated(value))

    def __init__(
        self, path: Path | None = None, *, lock_timeout: float = 30.0, shared: bool = False
    ) -> None:
        self.path = path or db_path()
        self.lock_timeout = lock_timeout
        self.shared = shared
        self._db: duckdb.DuckDBPyConnection | None = None
        self._opening = threading.Lock()
        self._writing = threading.RLock()
        self._local = threading.local()
        self._generation = 0  # how many times it was closed: cursors of before go
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # every thread's, to close
        self.gate = Gate()

    # -- connection -------------------------------------------------------------------

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        """The connection (the server: this thread's cursor), behind the damage seam.

        Typed as DuckDB's connection, which :class:`Guarded` stands in for call by call."""
        if self._db is None:
            with self._opening:
                if self._db is None:
                    self._db = self._open()
        if not self.shared:
            return cast(duckdb.DuckDBPyConnection, Guarded(self._db, self.path))
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None or getattr(self._local, "generation", 0) != self._generation:
            with translated(self.path):
                cursor = self._local.cursor = self._db.cursor()
            self._local.generation = self._generation
            self._cursors.append(cursor)
        return cast(duckdb.DuckDBPyConnection, Guarded(cursor, self.path))

    def _open(self) -> duckdb.DuckDBPyConnection:
        ensure_data_root()
        db = _connect(self.path, self.lock_timeout)
        try:
            with translated(self.path):
                check_complete(db, self.path)
                migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def release(self) -> None:
        """Close the connection so other processes can open the file; reopened on demand.
        A shared connection (the server's) keeps the file: nobody else may write it."""
        if not self.shared:
            self.close()

    def close(self) -> None:
        for cursor in self._cursors:  # the threads' (a server's): no file stays open
            with contextlib.suppress(duckdb.Error):
                cursor.close()
        self._cursors = []
        self._generation += 1  # a thread's cursor of before is made anew on its next use
        if self._db is not None:
            # closing a damaged file can fail too; it is closed either way
            with contextlib.suppress(duckdb.Error):
                self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rewrite(self) -> None:
        """Copy the database into a fresh file and put it in place of this one, so that
        the bytes of deleted rows are gone from the disk. Waits for the store calls under
        way and holds new ones back meanwhile. A kill at any point leaves the old file
        (before the rename; its .wal was checkpointed into it on closing) or the new one
        (after): both hold every committed row. A copy left by a killed rewrite is
        deleted by the next."""
        if str(self.path) == ":memory:":
            return
        fresh = self.path.with_name(f"{self.path.name}.rewrite")
        with self.gate.alone(), self._writing:
            db = self.db  # opened, and with this thread's cursor
            for leftover in (fresh, fresh.with_name(f"{fresh.name}.wal")):
                leftover.unlink(missing_ok=True)  # of a rewrite that was killed
            with translated(self.path):
                db.execute(f"ATTACH '{_quoted(fresh)}' AS fresh")
                try:
                    db.execute(f"COPY FROM DATABASE {_current(db)} TO fresh")
                finally:
                    db.execute("DETACH fresh")
            self.close()  # DuckDB checkpoints the .wal into the file as it closes it
            self.path.with_name(f"{self.path.name}.wal").unlink(missing_ok=True)
            os.replace(fresh, self.path)
            self._db = self._open()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; one opened inside another (in the same thread) is part of the
        outer one, so a caller can make a store method and what follows it atomic."""
        with self.gate.call(), self._transaction() as db:
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        db = self.db
        with self._writing:
            depth = getattr(self._local, "depth", 0)
            if depth:
                self._local.depth = depth + 1
                try:
                    yield db
                finally:
                    self._local.depth = depth
                return
            db.execute("BEGIN TRANSACTION")
            self._local.depth = 1
            try:
                yield db
            except BaseException:
                # On a damaged file the rollback may fail as well: the first error is the
                # one that says what happened.
                with contextlib.suppress(duckdb.Error, StoreError):
                    db.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0
            db.execute("COMMIT")

    def _one(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.db.execute(sql, params or []).fetchone()
        return row[0] if row else None
