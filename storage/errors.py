"""The errors a user can act on, for every layer: one base class, a few kinds.

Each message says what happened and what to do about it, in one line. The surfaces map
them in one place each: the CLI prints the message on stderr and exits 1
(``agent/cli/main.py``), the server answers ``status`` with ``{"error": {"message",
"type": kind}}`` (``agent/server/errors.py``). Anything that is not a
:class:`LearnloopError` is a bug, and only a bug may become a 500 or a traceback.

This module sits in the lowest layer (storage) so that the learning side and the chat
side can both raise and catch these without importing each other.
"""

from __future__ import annotations


class LearnloopError(Exception):
    """An error a user can act on; ``status`` and ``kind`` are its HTTP answer."""

    status = 400
    kind = "invalid_request_error"
    api_prefix = ""  # put before the message in an API answer, where it lacks context


class UsageError(LearnloopError, ValueError):
    """Bad input: a value out of range, a missing argument, a file that cannot be used."""


class NotFound(LearnloopError, LookupError):
    """An id (turn, thread, version, run, model) that does not exist."""

    status = 404
    kind = "not_found_error"


class Forbidden(LearnloopError):
    """Allowed to others, not to this caller (a user key asking for an admin's action)."""

    status = 403
    kind = "permission_error"


class Conflict(LearnloopError):
    """The state does not allow it now (a cycle already running)."""

    status = 409
    kind = "conflict_error"


class Unprocessable(LearnloopError):
    """Well-formed, but there is nothing it could do (no feedback to learn from)."""

    status = 422
    kind = "unprocessable_error"


class Unavailable(LearnloopError):
    """The data cannot be used right now: a locked, damaged or newer database, a data
    root that cannot be written, a missing model, a full disk."""

    status = 503
    kind = "unavailable_error"
