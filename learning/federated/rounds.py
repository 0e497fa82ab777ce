"""The aggregator's record of a federation run, in its folder (``--out``):

    OUT/federation.json         the settings (learning/federated/settings.py)
    OUT/rounds/round-R.json     who trained, who was refused and why, bytes, seconds,
                                each node's verdict on the round's adapter
    OUT/rounds/round-R.safetensors  the global adapter after round R
    OUT/results.json            the summary, written when the last round is done

Invariants: a round's adapter is written (to a temporary name, then renamed) before its
JSON, and the JSON says "done" only then, so a killed aggregator leaves every round
either complete or visibly not; :meth:`RoundLog.resume` continues after the last
complete round, so ``learnloop federate serve`` run again on the same folder picks up
where a crash left off instead of starting over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

from learnloop.learning.federated.aggregate import Adapter, Aggregate
from learnloop.learning.federated.node import load_weights, save_weights

RESULTS_FILE = "results.json"


class RoundFailed(RuntimeError):
    """A round could not be made (too few nodes, no usable update); the rounds before
    it stand."""


class RoundLog:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.folder = out / "rounds"
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, rnd: int, suffix: str) -> Path:
        return self.folder / f"round-{rnd}{suffix}"

    def read(self, rnd: int) -> dict[str, Any] | None:
        try:
            value: dict[str, Any] = json.loads(self.path(rnd, ".json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return value

    def complete(self) -> int:
        """The last complete round (0: none yet)."""
        done = 0
        while (self.read(done + 1) or {}).get("status") == "done":
            done += 1
        return done

    def stopped(self) -> tuple[int, str | None]:
        """The round after the last complete one, and why it failed (None: not recorded)."""
        rnd = self.complete() + 1
        return rnd, (self.read(rnd) or {}).get("reason")

    def resume(self) -> tuple[int, Adapter | None]:
        """(the last complete round, its adapter); (0, None) for a new run."""
        done = self.complete()
        return done, load_weights(self.path(done, ".safetensors")) if done else None

    def _write(self, rnd: int, record: dict[str, Any]) -> None:
        write_json(self.path(rnd, ".json"), record)

    def save(
        self,
        rnd: int,
        result: Aggregate,
        failures: dict[str, str],
        losses: dict[str, float],
        sent: int,
        received: int,
        seconds: float,
    ) -> None:
        tmp = self.path(rnd, ".tmp")
        save_weights(result.adapter, tmp)
        os.replace(tmp, self.path(rnd, ".safetensors"))
        self._write(
            rnd,
            {
                "round": rnd,
                "status": "done",
                "aggregation": result.rule,
                "nodes": result.nodes,
                "examples": result.examples,
                "train_loss": losses,
                "failed": failures,  # node -> why it gave no update
                "rejected": result.rejected,  # node -> why its update was refused
                "truncation_error": result.truncation_error,
                "bytes_to_nodes": sent,
                "bytes_from_nodes": received,
                "seconds": round(seconds, 2),
            },
        )

    def verdicts(self, rnd: int, verdicts: dict[str, dict[str, Any]], lost: dict[str, str]) -> None:
        """Each node's gate verdict on the round's adapter (promoted 0/1, its score)."""
        record = self.read(rnd) or {}
        self._write(rnd, {**record, "adopted": verdicts, "adopt_failed": lost})

    def fail(self, rnd: int, reason: str, failures: dict[str, str] | None = None) -> NoReturn:
        self._write(rnd, {"round": rnd, "status": "failed", "reason": reason,
                          "failed": failures or {}})  # fmt: skip
        raise RoundFailed(f"round {rnd} failed: {reason}")

    def finish(self) -> dict[str, Any]:
        done = self.complete()
        rounds = [self.read(r) for r in range(1, done + 1)]
        summary = {
            "rounds": rounds,
            "final_adapter": str(self.path(done, ".safetensors")) if done else None,
        }
        write_json(self.out / RESULTS_FILE, summary)
        return summary


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)
