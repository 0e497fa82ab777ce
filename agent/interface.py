"""The interface every surface talks to: :class:`Service`, learnloop's use cases.

Two implementations: :class:`~learnloop.agent.service.LocalService` (the store, the model
and the cycle in this process) and :class:`~learnloop.agent.remote.RemoteService` (the same
calls as HTTP requests to a running ``learnloop serve``). Every method returns JSON-ready
data: exactly the API's response bodies, which are the CLI's ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from learnloop.storage.records import Message

OnToken = Callable[[str], Any]
OnSwitch = Callable[[str, float | None], Any]  # version, seconds to load (None: unknown)
OnStep = Callable[[dict[str, Any]], Any]  # {"tool_call": ...} or {"tool_result": ...}
Progress = Callable[[dict[str, Any]], None]


class Service(Protocol):
    """The use cases. ``who`` names the person behind a call (a user name); a server
    records the key's user instead when it requires keys."""

    where: str  # "local", or the server's URL: for messages

    def ask(
        self,
        text: str,
        *,
        thread_id: str | None = None,
        regen_of: int | None = None,
        on_token: OnToken | None = None,
        on_switch: OnSwitch | None = None,
        on_step: OnStep | None = None,
        who: str | None = None,
    ) -> dict[str, Any]:
        """Answer ``text`` and log the turn as ``who``'s (default: local; a server that
        requires keys records the key's user instead)."""
        ...

    def feedback(
        self,
        turn_id: int,
        rating: str,
        *,
        correction: str | None = None,
        comment: str | None = None,
        who: str | None = None,
        correction_messages: list[Message] | None = None,
    ) -> dict[str, Any]:
        """Rate turn ``turn_id``; a correction is a better final answer (text) or a
        corrected trajectory (``correction_messages``: agent/corrections.py)."""
        ...

    def learn(
        self, settings: dict[str, Any], *, progress: Progress | None = None, who: str
    ) -> dict[str, Any]: ...

    def runs(self) -> list[dict[str, Any]]: ...

    def run(self, run_id: int) -> dict[str, Any]: ...

    def cancel(self, run_id: int | None = None) -> dict[str, Any]:
        """Stop learning run ``run_id`` (default: the one running); it is recorded as
        cancelled and the active version stays. A Conflict when none runs."""
        ...

    def versions(self) -> list[dict[str, Any]]: ...

    def activate(self, version: str, *, why: str, who: str | None = None) -> dict[str, Any]: ...

    def remove_versions(
        self, versions: list[str], *, rejected: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """Delete the adapter files of ``versions`` (and, with ``rejected``, of every
        rejected version), keeping their rows; never the active version. ``dry_run``:
        only say what would go. ``{"dry_run", "removed": [{"id", "status", "bytes"}],
        "already_removed": [id], "kept": [{"id", "why"}], "bytes_freed"}``."""
        ...

    def rollback(self, *, why: str, who: str | None = None) -> dict[str, Any]: ...

    def forget(
        self,
        user: str,
        *,
        settings: dict[str, Any] | None = None,
        who: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Delete ``user``'s turns and feedback, retire every version trained on them,
        train and gate a replacement from the rest with the learn ``settings`` given
        (learning/forget.py):
        ``{"user", "turns_deleted", "feedback_deleted", "versions_retired",
        "replacement", "replacement_verdict", "active", "seconds"}``. NotFound when
        ``user`` has no turn and no feedback."""
        ...

    def history(self) -> list[dict[str, Any]]: ...

    def compare(self, a: str | None = None, b: str | None = None) -> dict[str, Any]:
        """Versions ``a`` and ``b``'s stored answers to the control prompts side by side
        (agent/compare.py); default ``b``: the active version, ``a``: its parent."""
        ...

    def log(self, limit: int) -> list[dict[str, Any]]: ...

    def threads(self, limit: int, q: str | None = None) -> list[dict[str, Any]]:
        """The latest ``limit`` threads; with ``q``, those whose title or messages
        contain it (ignoring case)."""
        ...

    def thread(self, thread_id: str) -> dict[str, Any]:
        """A thread's history; each turn's ``answers`` are every answer to its message
        (the turn and its regenerations, oldest first; the history holds the newest)."""
        ...

    def rename_thread(self, thread_id: str, title: str) -> dict[str, Any]:
        """Give a thread a title (1 to :data:`~learnloop.agent.checks.MAX_TITLE` characters):
        ``{"id", "title"}``."""
        ...

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        """Delete a thread with its turns and their feedback: ``{"id", "turns",
        "feedback"}`` (how many of each went). Versions trained on it keep what they
        learned."""
        ...

    def status(self) -> dict[str, Any]: ...

    def control_list(self) -> list[dict[str, Any]]: ...

    def control_add(self, prompt: str, answer: str, expect: str | None) -> dict[str, Any]: ...

    def export_data(self, run_id: int | None, current: bool) -> dict[str, Any]:
        """A run's snapshot (default: the latest), or the current feedback: ``{"source",
        "run_id", "rows": {part: [row, ...]}}`` for learning/export.py to write."""
        ...

    def keys_list(self) -> list[dict[str, Any]]: ...

    def keys_create(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        """A new API key for ``name`` (``admin``: with the admin role, else the user role):
        ``{"name", "role", "key", "created_at"}``, the only time the key is shown."""
        ...

    def keys_revoke(self, name: str) -> dict[str, Any]: ...

    def prepare(self) -> None:
        """Load what answering needs (the model), so that the first answer comes quickly
        and a missing model is said before anything is asked."""

    def idle(self) -> None:
        """Nothing is asked for a while (a REPL waiting for input): let go of the database."""

    def close(self) -> None: ...
