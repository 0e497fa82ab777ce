"""learnloop's use cases, each written once: :class:`LocalService`.

It implements :class:`~learnloop.agent.interface.Service`, which every surface talks to:
the CLI (``agent/cli.py``), the REPL (``agent/repl.py``) and the server's routes
(``agent/server/``). Surfaces only parse input and render output; what a use case does
lives here. It holds the store, the model (loaded on first need) and the cycle, in this
process. The CLI uses it when no server runs for the data root, the REPL always when it
runs locally, the server for its routes (agent/server/state.py adds what differs there:
swaps beside running answers, cycles in a thread). Its twin,
:class:`~learnloop.agent.remote.RemoteService`, sends the same calls to a running server.

Every method returns JSON-ready data: exactly the API's response bodies, which are the
CLI's ``--json`` output, so either side can render the other's (``agent/report.py``).
Errors are :class:`~learnloop.storage.errors.LearnloopError` subclasses on both sides.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from learnloop.agent.checks import (
    check_control,
    check_limit,
    check_query,
    check_title,
)
from learnloop.agent.config import GenerationConfig, LoopLimits
from learnloop.agent.report import (
    status_data,
    thread_summary,
    thread_view,
    turn_dict,
)
from learnloop.agent.service_versions import VersionCases
from learnloop.learning.config import LearnConfig
from learnloop.learning.toolbox import NO_TOOLS
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.store import Store


class LocalService(VersionCases):
    """The use cases on this process's store, model and cycle: chat
    (agent/service_chat.py), learning (agent/service_learning.py), versions
    (agent/service_versions.py), and here the turns, threads, control set, export and keys.

    The model loads on the first ``ask`` (commands that only read the store never pay for
    it); the active version is loaded before every answer, so a version made active
    meanwhile (by a cycle, another terminal) answers next."""

    # -- turns, threads, status ------------------------------------------------------------

    def log(self, limit: int) -> list[dict[str, Any]]:
        return [turn_dict(t) for t in self.store.recent_turns(check_limit(limit))]

    def threads(self, limit: int, q: str | None = None) -> list[dict[str, Any]]:
        found = self.store.threads(check_limit(limit), check_query(q))
        return [thread_summary(t) for t in found]

    def thread(self, thread_id: str) -> dict[str, Any]:
        from learnloop.storage.errors import NotFound

        if not self.store.thread_exists(thread_id):
            raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
        history = self.store.thread_history(thread_id)
        return thread_view(thread_id, history, self.store.thread_turns(thread_id))

    def rename_thread(self, thread_id: str, title: str) -> dict[str, Any]:
        title = check_title(title)
        self.store.rename_thread(thread_id, title)
        return {"id": thread_id, "title": title}

    def delete_thread(self, thread_id: str) -> dict[str, Any]:
        turns, feedback = self.store.delete_thread(thread_id)
        return {"id": thread_id, "turns": turns, "feedback": feedback}

    def status(self) -> dict[str, Any]:
        from learnloop.learning.child import latest_progress
        from learnloop.storage.home import data_root, pid_alive

        self.store.fail_stale_runs(pid_alive)
        s = self.store.status()
        running = s.running_run
        progress = latest_progress(Path(self.store.run_dir_of(running))) if running else None
        return status_data(s, self.model_name(), str(data_root()), progress)

    # -- the control set -------------------------------------------------------------------

    def control_list(self) -> list[dict[str, Any]]:
        from learnloop.learning.snapshot import control_set

        return control_set(self.store)

    def control_add(self, prompt: str, answer: str, expect: str | None) -> dict[str, Any]:
        item = check_control(prompt, answer, expect)
        self.store.add_control_prompt(item)
        return asdict(item)

    # -- export, keys ----------------------------------------------------------------------

    def export_data(self, run_id: int | None, current: bool) -> dict[str, Any]:
        from learnloop.learning.export import current_export, from_run, pick_run

        run = None if current else pick_run(self.store.runs(), run_id)
        if run is not None:
            return asdict(from_run(run))
        return asdict(current_export(self.store.feedback_examples()))

    def keys_list(self) -> list[dict[str, Any]]:
        return [
            {"name": k.name, "role": k.role, "created_at": k.created_at, "revoked_at": k.revoked_at}
            for k in self.store.api_keys()
        ]

    def keys_create(self, name: str, *, admin: bool = False) -> dict[str, Any]:
        record, key = self.store.create_api_key(name, role="admin" if admin else "user")
        return {
            "name": record.name,
            "role": record.role,
            "key": key,
            "created_at": record.created_at,
        }

    def keys_revoke(self, name: str) -> dict[str, Any]:
        record = self.store.revoke_api_key(name)
        return {"name": record.name, "revoked_at": record.revoked_at}

    # -- the process -----------------------------------------------------------------------

    def prepare(self) -> None:
        self.agent  # noqa: B018 (loads the model and the active version)

    def idle(self) -> None:
        self.store.release()

    def close(self) -> None:
        self.store.close()


def open_local(
    model_spec: str | None = None,
    *,
    generation: GenerationConfig | None = None,
    trigger: TriggerConfig | None = None,
    learn: LearnConfig | None = None,
    tools: tuple[str, ...] | list[str] = (),
    limits: LoopLimits | None = None,
) -> LocalService:
    """learnloop from Python: the use cases on the data root's store ($LEARNLOOP_HOME) and
    ``model_spec`` (default SmolLM2-135M-Instruct), the way the CLI runs them without a
    server, with the tools of ``tools`` (``--tools`` specs: learning/toolbox.py). Close it
    (or use ``contextlib.closing``) to let go of the database."""
    from learnloop.learning.toolbox import load_tools

    return LocalService(
        Store(),
        model_spec,
        generation=generation,
        trigger=trigger,
        learn=learn,
        toolbox=load_tools(tools) if tools else NO_TOOLS,
        limits=limits,
    )
