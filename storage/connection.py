"""The connection under the store: one DuckDB file, opened lazily, migrated on open.

DuckDB lets one process at a time open a file for writing. The connection is therefore
opened on first use, and a caller that waits on a human (the chat REPL) calls
:meth:`Connection.release` in between so that another learnloop command can get in;
opening retries for a while on a held lock before it gives up naming the holder.

The server instead holds the file for as long as it runs (``shared=True``): every thread
gets its own cursor on the one connection (DuckDB's rule for threads), ``release`` keeps
the file, and write transactions take turns so that they never conflict.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import duckdb

from storage.home import db_path, ensure_data_root
from storage.migrations import migrate

BASE_VERSION = "base"


class StoreError(RuntimeError):
    """A problem with the database that the user can act on."""


class NotFound(StoreError):
    """A referenced row (turn, thread, version) does not exist."""


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


class Connection:
    """A lazily opened, migrated DuckDB connection; the base of :class:`Store`."""

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

    # -- connection -------------------------------------------------------------------

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            with self._opening:
                if self._db is None:
                    self._db = self._open()
        if not self.shared:
            return self._db
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor

    def _open(self) -> duckdb.DuckDBPyConnection:
        ensure_data_root()
        db = _connect(self.path, self.lock_timeout)
        try:
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
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        db = self.db
        with self._writing:
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
