"""Progress for a learning cycle: in a terminal one tqdm bar per stage with the loss as
postfix; elsewhere (a log, a pipe, a test) plain lines, one when a stage starts and one
when it ends, so no cursor codes end up in the file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

UNITS = {"gate": "prompt"}  # what a stage counts (training stages: optimizer steps)


class CycleProgress:
    """Callable fed with the trainer's progress events (learning/trainer.py)."""

    def __init__(self, enabled: bool = True, terminal: bool | None = None) -> None:
        self.enabled = enabled
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.stage: str | None = None
        self.counted = False  # the stage's count (steps, prompts) has been shown
        self.bar: Any = None
        self.last: dict[str, Any] = {}  # the latest event of a stage shown as lines

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        stage = event.get("stage", "")
        if stage != self.stage:
            self.close()
            self.stage, self.counted = stage, False
            if not event.get("total"):  # load / save / done, the gate's start: a line
                if stage != "done":
                    tqdm.write(f"learn: {stage}…", file=sys.stderr)
                return
        if event.get("total") and not self.counted:  # the stage's first counted event
            self.counted = True
            unit = UNITS.get(stage, "step")
            if not self.terminal:
                print(f"learn: {stage}: {event['total']} {unit}s…", file=sys.stderr)
            else:
                self.bar = tqdm(total=event["total"], desc=f"learn: {stage}", unit=unit)
        if not self.terminal and event.get("total"):
            self.last = event
        if self.bar is not None:
            step = int(event.get("step") or 0)
            if event.get("total") and self.bar.total != event["total"]:
                self.bar.total = event["total"]
            self.bar.update(max(0, step - self.bar.n))
            if event.get("loss") is not None:
                self.bar.set_postfix(loss=f"{event['loss']:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.last:
            e, self.last = self.last, {}
            loss = f", loss {e['loss']:.4f}" if e.get("loss") is not None else ""
            unit = UNITS.get(e["stage"], "step")
            print(
                f"learn: {e['stage']}: {unit} {e.get('step')}/{e['total']}{loss}", file=sys.stderr
            )

    def __enter__(self) -> CycleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
