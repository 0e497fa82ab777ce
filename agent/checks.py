"""The checks every use case makes before it writes anything: one place, so that the
local service and the remote one (which checks before it sends) refuse the same input
with the same words. Each returns the cleaned value or raises one UsageError."""

from __future__ import annotations

from learnloop.storage.errors import UsageError
from learnloop.storage.records import ControlPrompt

MAX_LIST = 1000  # the most turns, threads or runs one call lists
MAX_TITLE = 200  # the longest title a thread may be given
MAX_QUERY = 200  # the longest text a thread search may look for


def check_limit(limit: int) -> int:
    """A list length a caller asked for, or a UsageError naming the bounds."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise UsageError(f"limit must be a whole number from 1 to {MAX_LIST}, not {limit!r}")
    return limit


def check_title(title: str) -> str:
    """A thread's new title, its runs of whitespace made single spaces; a UsageError
    names the bounds when it is empty or longer than :data:`MAX_TITLE` characters."""
    cleaned = " ".join(title.split()) if isinstance(title, str) else ""
    if not 1 <= len(cleaned) <= MAX_TITLE:
        raise UsageError(
            f"a thread's title must be 1 to {MAX_TITLE} characters, not {len(cleaned)}"
        )
    return cleaned


def check_query(q: str | None) -> str | None:
    """A thread search's text, trimmed (None or blank: no search); at most
    :data:`MAX_QUERY` characters."""
    if q is None or not q.strip():
        return None
    if len(q.strip()) > MAX_QUERY:
        raise UsageError(f"a search may be at most {MAX_QUERY} characters")
    return q.strip()


def check_rating(rating: str, correction: str | None) -> str | None:
    """The feedback's checks before anything is written; returns the correction, trimmed."""
    if rating not in ("up", "down"):
        raise UsageError("give exactly one rating: up or down")
    if correction is not None and not correction.strip():
        raise UsageError("the correction is empty; give the better answer as its text")
    if correction is not None and rating == "up":
        raise UsageError(
            "a correction is a better answer, so it goes with `down`: rate `up` alone, "
            "or `down` with the correction"
        )
    return correction.strip() if correction else None


def check_control(prompt: str, answer: str, expect: str | None) -> ControlPrompt:
    if not prompt.strip() or not answer.strip() or (expect is not None and not expect.strip()):
        raise UsageError("the prompt, the answer and --expect must not be empty")
    return ControlPrompt(prompt.strip(), answer.strip(), (expect or answer).strip())
