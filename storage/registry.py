"""The learning side of the store: runs, snapshots, versions, activations, control set.

Part of :class:`storage.store.Store` (split off by responsibility; still the only SQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from storage.connection import BASE_VERSION, Connection, NotFound
from storage.records import Activation, ControlPrompt, Run, Version

_VERSION_COLUMNS = (
    "id, parent, run_id, method, base_model, adapter_path, sft_count, dpo_count, metrics, "
    "created_at, kto_count, status, gate"
)
_RUN_COLUMNS = (
    "id, status, method, config, run_dir, pid, snapshot_id, version_id, metrics, error, "
    "started_at, finished_at"
)


class Registry(Connection):
    """Learning runs and their snapshots, model versions and which one is active."""

    # -- learning runs, snapshots, versions ------------------------------------------------

    def start_run(self, method: str, config: dict[str, Any], run_dir: str, pid: int) -> int:
        row = self.db.execute(
            """INSERT INTO runs (status, method, config, run_dir, pid)
               VALUES ('running', ?, ?, ?, ?) RETURNING id""",
            [method, json.dumps(config), run_dir, pid],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def record_snapshot(
        self,
        run_id: int,
        content_hash: str,
        upto: int,
        rows: dict[str, list[int]],
        counts: dict[str, int],
        quality: dict[str, Any] | None = None,
    ) -> int:
        """Record which feedback rows went into which dataset of a run's snapshot; ``upto``
        is the newest feedback id the cycle considered, ``counts`` the dataset sizes,
        ``quality`` the report of the cleaning before the builders."""
        with self.transaction() as db:
            row = db.execute(
                """INSERT INTO snapshots (run_id, content_hash, upto_feedback_id, sft_count,
                       dpo_count, kto_count, quality) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                [
                    run_id,
                    content_hash,
                    upto,
                    counts.get("sft", 0),
                    counts.get("dpo", 0),
                    counts.get("kto", 0),
                    json.dumps(quality) if quality is not None else None,
                ],
            ).fetchone()
            assert row is not None
            snapshot_id = int(row[0])
            pairs = [
                (snapshot_id, fid, dataset) for dataset, ids in rows.items() for fid in set(ids)
            ]
            if pairs:
                db.executemany("INSERT INTO snapshot_feedback VALUES (?, ?, ?)", pairs)
            db.execute("UPDATE runs SET snapshot_id = ? WHERE id = ?", [snapshot_id, run_id])
        return snapshot_id

    def set_run_dir(self, run_id: int, run_dir: str) -> None:
        self.db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", [run_dir, run_id])

    def fail_run(self, run_id: int, error: str, metrics: dict[str, Any] | None = None) -> None:
        self.db.execute(
            """UPDATE runs SET status = 'failed', error = ?, metrics = ?,
                   finished_at = current_timestamp WHERE id = ?""",
            [error, json.dumps(metrics) if metrics else None, run_id],
        )

    def fail_stale_runs(self, is_alive: Callable[[int | None], bool]) -> list[int]:
        """Mark as failed every 'running' run whose process is gone; return their ids."""
        rows = self.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall()
        stale = [run_id for run_id, pid in rows if not is_alive(pid)]
        for run_id in stale:
            self.fail_run(run_id, "the process running this cycle ended before it finished")
        return stale

    def running_run(self) -> int | None:
        return self._one("SELECT max(id) FROM runs WHERE status = 'running'")

    def last_run_start(self) -> datetime | None:
        """When the newest learning run started, whatever became of it."""
        return self._one("SELECT max(started_at) FROM runs")

    def run_dir_of(self, run_id: int) -> str:
        return str(self._one("SELECT run_dir FROM runs WHERE id = ?", [run_id]) or "")

    def runs(self) -> list[Run]:
        rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id").fetchall()
        return [
            Run(
                r[0],
                r[1],
                r[2],
                json.loads(r[3]),
                r[4],
                r[5],
                r[6],
                r[7],
                json.loads(r[8]) if r[8] else None,
                r[9],
                r[10],
                r[11],
            )
            for r in rows
        ]

    def next_version_id(self) -> str:
        count = self._one("SELECT count(*) FROM versions")
        return f"v{int(count) + 1}"

    def add_version(self, version: Version, *, activate: bool, who: str, why: str) -> None:
        """Register a finished version (its adapter folder complete on disk), close its run,
        and make it active, all in one transaction."""
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                [
                    version.id,
                    version.parent,
                    version.run_id,
                    version.method,
                    version.base_model,
                    version.adapter_path,
                    version.sft_count,
                    version.dpo_count,
                    json.dumps(version.metrics),
                    version.created_at,
                    version.kto_count,
                    version.status,
                    json.dumps(version.gate) if version.gate is not None else None,
                ],
            )
            db.execute(
                """UPDATE runs SET status = 'succeeded', version_id = ?, metrics = ?,
                       finished_at = current_timestamp WHERE id = ?""",
                [version.id, json.dumps(version.metrics), version.run_id],
            )
            if activate:
                db.execute(
                    "INSERT INTO activations (version_id, who, why) VALUES (?, ?, ?)",
                    [version.id, who, why],
                )

    def versions(self) -> list[Version]:
        rows = self.db.execute(
            f"SELECT {_VERSION_COLUMNS} FROM versions ORDER BY created_at, id"
        ).fetchall()
        return [
            Version(
                id=r[0],
                parent=r[1],
                run_id=r[2],
                method=r[3],
                base_model=r[4],
                adapter_path=r[5],
                sft_count=r[6],
                dpo_count=r[7],
                metrics=json.loads(r[8]),
                created_at=r[9],
                kto_count=r[10],
                status=r[11],
                gate=json.loads(r[12]) if r[12] else None,
            )
            for r in rows
        ]

    def get_version(self, version_id: str) -> Version:
        for v in self.versions():
            if v.id == version_id:
                return v
        raise NotFound(f"no version {version_id!r}; `learnloop versions` lists them")

    def active_version(self) -> str:
        return (
            self._one("SELECT version_id FROM activations ORDER BY id DESC LIMIT 1") or BASE_VERSION
        )

    def activate(self, version_id: str, *, who: str, why: str) -> None:
        """Make ``version_id`` ('base' or a registered version) active, recording the switch."""
        if version_id != BASE_VERSION:
            self.get_version(version_id)  # raises NotFound
        self.db.execute(
            "INSERT INTO activations (version_id, who, why) VALUES (?, ?, ?)",
            [version_id, who, why],
        )

    def activations(self) -> list[Activation]:
        rows = self.db.execute(
            "SELECT id, version_id, who, why, created_at FROM activations ORDER BY id"
        ).fetchall()
        return [Activation(*r) for r in rows]

    # -- the control set ---------------------------------------------------------------

    def add_control_prompt(self, item: ControlPrompt) -> int:
        row = self.db.execute(
            "INSERT INTO control_prompts (prompt, answer, expect) VALUES (?, ?, ?) RETURNING id",
            [item.prompt, item.answer, item.expect],
        ).fetchone()
        assert row is not None
        return int(row[0])

    def control_prompts(self) -> list[ControlPrompt]:
        """The users' own control prompts (the shipped default set lives in learning/)."""
        rows = self.db.execute(
            "SELECT prompt, answer, expect FROM control_prompts ORDER BY id"
        ).fetchall()
        return [ControlPrompt(*r) for r in rows]

    def record_control_answers(self, version_id: str, answers: list[dict[str, Any]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM control_answers WHERE version_id = ?", [version_id])
            if answers:
                db.executemany(
                    "INSERT INTO control_answers (version_id, prompt, answer, correct) "
                    "VALUES (?, ?, ?, ?)",
                    [(version_id, a["prompt"], a["answer"], a["correct"]) for a in answers],
                )

    def control_answers(self, version_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT prompt, answer, correct FROM control_answers WHERE version_id = ? "
            "ORDER BY rowid",
            [version_id],
        ).fetchall()
        return [{"prompt": r[0], "answer": r[1], "correct": r[2]} for r in rows]
