"""The versions' use cases: list, activate, roll back, compare, remove, and forget a user
(which retires versions and trains a replacement)."""

from __future__ import annotations

import contextlib
import getpass
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learnloop.agent.interface import Progress
from learnloop.agent.report import history_data, versions_data
from learnloop.agent.service_learning import LearningCases
from learnloop.storage.errors import Conflict, UsageError
from learnloop.storage.store import BASE_VERSION

if TYPE_CHECKING:
    from learnloop.storage.forgetting import Forgotten


class VersionCases(LearningCases):
    """Versions: which answers, which came from what, which go (and whose data)."""

    def active(self) -> str:
        """The version that answers new questions (the server's pointer may run a swap
        ahead of the store)."""
        return self.store.active_version()

    def versions(self) -> list[dict[str, Any]]:
        return versions_data(self.store.versions(), self.active(), self.store.version_users())

    def activate(self, version: str, *, why: str, who: str | None = None) -> dict[str, Any]:
        previous = self.store.active_version()
        if version != BASE_VERSION:
            from learnloop.learning.adapters import check, require_files

            record = require_files(self.store.get_version(version))
            # a damaged adapter is refused here, not found out by the next answer
            check(record.id, Path(record.adapter_path), record.checksum)
        self.store.activate(version, who=who or getpass.getuser(), why=why)
        return {"previous": previous, "active": version}

    def remove_versions(
        self, versions: list[str], *, rejected: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        from learnloop.learning.adapters import folder_bytes, removal_targets, remove

        targets, gone, kept = removal_targets(
            self.store, versions, rejected=rejected, active=self.active()
        )
        removed = [
            {"id": v.id, "status": v.status, "bytes": folder_bytes(Path(v.adapter_path))}
            for v in targets
        ]
        if targets and not dry_run:
            remove(self.store, targets)
        return {
            "dry_run": dry_run,
            "removed": removed,
            "already_removed": gone,
            "kept": kept,
            "bytes_freed": sum(r["bytes"] for r in removed),
        }

    def forget(
        self,
        user: str,
        *,
        settings: dict[str, Any] | None = None,
        who: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        from learnloop.learning.forget import finish_forgets
        from learnloop.storage.errors import NotFound

        started = time.perf_counter()
        settings = {**(settings or {}), "force": True}
        self.learn_settings(settings)  # bad settings fail before anything is deleted
        if not self.store.user_exists(user):
            raise NotFound(f"no turns or feedback of {user!r}: there is nothing to forget")
        who = who or getpass.getuser()
        self.stop_learning()  # a cycle under way may be training on their rows
        forgotten = self.forget_rows(user, who)
        finish_forgets(self.store)
        replaced = {"replacement": None, "replacement_verdict": None, "replacement_run": None}
        if forgotten.files.versions:
            replaced = self.replace(forgotten.forget_id, settings, f"forget:{who}", progress)
        return {
            "user": user,
            "turns_deleted": forgotten.turns_deleted,
            "feedback_deleted": forgotten.feedback_deleted,
            "versions_retired": forgotten.files.versions,
            **replaced,
            "active": self.active(),
            "seconds": round(time.perf_counter() - started, 2),
        }

    def stop_learning(self) -> None:
        """Cancel the cycle running now, if one is (and wait for it to record that)."""
        from learnloop.storage.home import pid_alive

        self.store.fail_stale_runs(pid_alive)
        if self.store.running_run() is not None:
            with contextlib.suppress(Conflict):  # it ended meanwhile
                self.cancel()

    def forget_rows(self, user: str, who: str) -> Forgotten:
        """The store's part of a forget (a server also moves its pointer)."""
        return self.store.forget_rows(user, who=who)

    def replace(
        self, forget_id: int, settings: dict[str, Any], who: str, progress: Progress | None
    ) -> dict[str, Any]:
        """A cycle with ``settings`` on the feedback left after forget ``forget_id``,
        gated as any (none when nothing is left to learn from, or the cycle failed: the
        forget itself is done either way): ``{"replacement", "replacement_verdict",
        "replacement_run"}``."""
        from learnloop.learning.child import CycleFailed
        from learnloop.learning.snapshot import NothingToLearn

        try:
            result = self.learn(settings, progress=progress, who=who)
        except (NothingToLearn, CycleFailed) as exc:
            return {"replacement": None, "replacement_verdict": str(exc), "replacement_run": None}
        self.store.record_replacement(forget_id, result["version"])
        return {
            "replacement": result["version"],
            "replacement_verdict": result["summary"],
            "replacement_run": result["run_id"],
        }

    def rollback(self, *, why: str, who: str | None = None) -> dict[str, Any]:
        return self.activate(self.rollback_target(), why=why, who=who)

    def rollback_target(self) -> str:
        current = self.active()
        if current == BASE_VERSION:
            raise UsageError("the base model is active: there is nothing to roll back to")
        return self.store.get_version(current).parent

    def history(self) -> list[dict[str, Any]]:
        return history_data(self.store.activations(), self.store.forgets())

    def compare(self, a: str | None = None, b: str | None = None) -> dict[str, Any]:
        from learnloop.agent.compare import compare_data
        from learnloop.learning.snapshot import control_set

        b = b or self.active()
        a = a or self.parent_of(b)
        expected = {c["prompt"]: c["expect"] for c in control_set(self.store)}
        return compare_data(a, self.control_answers_of(a), b, self.control_answers_of(b), expected)

    def parent_of(self, version: str) -> str:
        from learnloop.storage.errors import NotFound

        if version == BASE_VERSION:
            raise NotFound(
                "the base model has no parent to compare it with: name two versions "
                "(`learnloop versions` lists them)"
            )
        return self.store.get_version(version).parent  # NotFound for an unknown one

    def control_answers_of(self, version: str) -> list[dict[str, Any]]:
        """The version's stored control answers; NotFound, one message, for an unknown
        version or one whose answers were never measured."""
        from learnloop.storage.errors import NotFound

        if version != BASE_VERSION:
            self.store.get_version(version)
        answers = self.store.control_answers(version)
        if not answers:
            raise NotFound(
                f"no control answers are stored for {version}: they are stored when the "
                "gate measures a version, in a learning cycle with the gate on"
            )
        return answers
