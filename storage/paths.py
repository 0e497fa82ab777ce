"""Paths the store keeps: relative to the data root, so a moved data root still works.

A version's adapter folder and a run's folder live under the data root. The store saves
such a path relative to the folder of its database file (the data root), and hands
callers the absolute path under wherever that root is now. A path outside the root (an
adapter registered from elsewhere) is kept absolute, as given.

Invariants: ``absolute(stored(p, root), root) == abspath(p)`` for every path ``p``; a
stored relative path never starts with ``..``.
"""

from __future__ import annotations

import os
from pathlib import Path


def _abs(path: str | Path) -> Path:
    # abspath, not resolve: a data root reached through a symlink stays under that name
    return Path(os.path.abspath(path))


def stored(path: str, root: Path | None) -> str:
    """How the store saves ``path``: relative to ``root`` when it lies under it."""
    if not path or root is None:
        return path
    try:
        return _abs(path).relative_to(_abs(root)).as_posix()
    except ValueError:
        return path


def absolute(path: str, root: Path | None) -> str:
    """The usable path of a saved one: a relative path is taken from ``root``."""
    if not path or root is None or Path(path).is_absolute():
        return path
    return str(_abs(root) / path)


def relocated(path: str, root: Path, expected: str) -> str | None:
    """For a path saved under an earlier location of the data root (a root moved before
    paths were relative): ``expected`` (the folder's place in a data root, e.g.
    ``adapters/v3``) when the old path is gone and ``root / expected`` exists, else None."""
    old = Path(path)
    if not old.is_absolute() or old.exists() or old.name != Path(expected).name:
        return None
    return expected if (_abs(root) / expected).is_dir() else None
