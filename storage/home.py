"""The data root: every byte learnloop keeps lives under ``$LEARNLOOP_HOME``.

Layout::

    $LEARNLOOP_HOME/            (default ~/.learnloop)
      learnloop.duckdb          threads, turns, feedback, snapshots, runs, versions
      models/<name>/            base checkpoints converted from GGUF (safetensors)
      adapters/<version>/       one folder per model version, written once, never changed
      runs/<run>/               a learning run's snapshot files, progress and logs
"""

from __future__ import annotations

import os
from pathlib import Path


class DataRootError(RuntimeError):
    """The data root cannot be used (missing permissions, a file in the way...)."""


def data_root() -> Path:
    return Path(os.environ.get("LEARNLOOP_HOME") or Path.home() / ".learnloop").expanduser()


def db_path() -> Path:
    return data_root() / "learnloop.duckdb"


def models_dir() -> Path:
    return data_root() / "models"


def adapters_dir() -> Path:
    return data_root() / "adapters"


def runs_dir() -> Path:
    return data_root() / "runs"


def ensure_data_root() -> Path:
    """Create the data root if needed and check that it is writable, or raise DataRootError."""
    root = data_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
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
