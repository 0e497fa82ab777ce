"""The data root: every byte learnloop keeps lives under ``$LEARNLOOP_HOME``.

Layout::

    $LEARNLOOP_HOME/            (default ~/.learnloop)
      learnloop.duckdb          threads, turns, feedback, snapshots, runs, versions
      learnloop.duckdb.wal      committed rows not yet moved into the file: back both up
      models/<name>-<digest>/   a GGUF converted by an older learnloop: moved into the
                                per-machine cache below the first time it is needed
      adapters/<version>/       one folder per model version, written once, never changed
      runs/<run>/               a learning run's snapshot files, progress and logs
      runs/background.log       what background cycles (started by a trigger) printed
      server.json               while `learnloop serve` runs: its url, pid and token

All of it is private to its owner when learnloop makes it (:func:`ensure_data_root`).

What is the same for every data root of a user on the machine lives in the cache,
``$LEARNLOOP_CACHE`` (default ``$XDG_CACHE_HOME/learnloop``, else ``~/.cache/learnloop``)::

    models/<digest>/            a GGUF converted to safetensors, named by the GGUF's sha256
    digests/<key>               a file's (or checkpoint's) content digest, keyed by its
                                path, size and mtime, so each is hashed once

Everything in the cache can be deleted: it is rebuilt when needed.

Both sides of the package (the chat side, ``agent``, and the learning side) may import
this module: it also holds the few process helpers they share.
"""

from __future__ import annotations

import os
from pathlib import Path

from learnloop.storage.errors import Unavailable

SERVER_FILE = "server.json"


class DataRootError(Unavailable):
    """The data root cannot be used (missing permissions, a file in the way...)."""


def data_root() -> Path:
    return Path(os.environ.get("LEARNLOOP_HOME") or Path.home() / ".learnloop").expanduser()


def db_path() -> Path:
    return data_root() / "learnloop.duckdb"


def models_dir() -> Path:
    """Where learnloop before the per-machine cache kept its converted GGUFs, per root."""
    return data_root() / "models"


def cache_root() -> Path:
    """The per-machine (per-user) cache shared by every data root: ``$LEARNLOOP_CACHE``,
    else ``$XDG_CACHE_HOME/learnloop``, else ``~/.cache/learnloop``."""
    given = os.environ.get("LEARNLOOP_CACHE")
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # the XDG spec: a relative $XDG_CACHE_HOME is invalid and to be ignored
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else None
    return (base or Path.home() / ".cache") / "learnloop"


def model_cache_dir() -> Path:
    """Converted base models, one folder per GGUF content digest."""
    return cache_root() / "models"


def digests_dir() -> Path:
    """Memoised content digests (see learning/models.py)."""
    return cache_root() / "digests"


def cache_dir(path: Path) -> Path:
    """Make the cache folder ``path`` (private to its owner, like the data root) when
    missing; return it. Raises DataRootError naming LEARNLOOP_CACHE when it cannot."""
    keep_private()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DataRootError(
            f"cannot create the cache folder {path}: {exc.strerror}; "
            "set LEARNLOOP_CACHE to a writable folder"
        ) from exc
    return path


def adapters_dir() -> Path:
    return data_root() / "adapters"


def runs_dir() -> Path:
    return data_root() / "runs"


def server_file() -> Path:
    """Where a running server says where it listens (see ``agent/client.py``)."""
    return data_root() / SERVER_FILE


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it may hold a token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier server keeps its mode otherwise
    with os.fdopen(fd, "w") as f:
        f.write(text)


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` is running (one of another user's counts as alive; a
    zombie, killed but not yet reaped by its parent, does not)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state follows the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


PRIVATE_UMASK = 0o077  # files and folders learnloop makes: read and written by their owner


def keep_private() -> None:
    """From now on, this process makes files and folders its owner alone can read.

    A umask rather than a mode per file, because DuckDB creates the database and its
    ``.wal`` and the libraries write adapters and logs without asking. It holds for
    everything the process writes afterwards, an export's files included: they are
    users' turns too. A stricter umask in place is kept; the umask never becomes
    looser, not even for an instant."""
    previous = os.umask(PRIVATE_UMASK)
    if previous | PRIVATE_UMASK != PRIVATE_UMASK:
        os.umask(previous | PRIVATE_UMASK)


def ensure_data_root() -> Path:
    """Create the data root if needed and check that it is writable, or raise DataRootError.

    A data root made here is private to its owner (mode 0700), and so is everything this
    process writes from here on (:func:`keep_private`). An existing root keeps its mode:
    it may be shared on purpose."""
    keep_private()
    root = data_root()
    try:
        if not root.exists():
            root.mkdir(parents=True, mode=0o700)  # missing parents, too, by the umask
    except FileExistsError:
        pass  # made meanwhile by another learnloop process
    except OSError as exc:
        raise DataRootError(
            f"cannot create the data root {root}: {exc.strerror}; "
            "set LEARNLOOP_HOME to a writable folder"
        ) from exc
    if not root.is_dir() or not os.access(root, os.W_OK | os.X_OK):
        raise DataRootError(
            f"the data root {root} is not a writable folder; "
            "set LEARNLOOP_HOME to a writable folder"
        )
    return root


def private_dir(path: Path) -> Path:
    """Make the folder ``path`` inside the data root (and the root, see
    :func:`ensure_data_root`) when missing; return it."""
    ensure_data_root()
    path.mkdir(parents=True, exist_ok=True)
    return path
