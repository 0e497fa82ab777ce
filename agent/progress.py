"""Terminal progress for a learning cycle: one tqdm bar per stage, loss as postfix."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class CycleProgress:
    """Callable fed with the trainer's progress events (learning/trainer.py)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        stage = event.get("stage", "")
        if stage != self.stage:
            self.close()
            self.stage = stage
            if not event.get("total"):  # load / save / done: a line, not a bar
                if stage != "done":
                    tqdm.write(f"learn: {stage}…", file=sys.stderr)
                return
            self.bar = tqdm(total=event["total"], desc=f"learn: {stage}", unit="step")
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

    def __enter__(self) -> CycleProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
