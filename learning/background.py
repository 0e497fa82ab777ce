"""``python -m learnloop.learning.background JOB``: one learning cycle, started by a trigger.

``JOB`` is a JSON object ``{"model": spec | null, "config": {LearnConfig fields},
"who": str}``. The cycle is exactly the one ``learnloop learn`` runs (learning/cycle.py),
so it records its run, trains in its own child, and publishes through the gate. One
line per event goes to stdout (the caller points it at ``runs/background.log``).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from learnloop.learning.config import LearnConfig


def say(text: str) -> None:
    print(f"{datetime.now():%Y-%m-%d %H:%M:%S} {text}", flush=True)


def main(argv: list[str]) -> int:
    from learnloop.learning.cycle import Cancelled, CycleFailed, NothingToLearn, run_cycle
    from learnloop.learning.models import resolve_model
    from learnloop.storage.errors import Conflict
    from learnloop.storage.store import Store

    job = json.loads(argv[0])
    config = LearnConfig(**job["config"])
    with Store() as store:
        try:
            result = run_cycle(store, resolve_model(job["model"]), config, who=job["who"])
        except NothingToLearn as exc:
            say(f"no cycle: {exc}")
            return 0
        except CycleFailed as exc:
            say(f"cycle failed: {exc}")
            return 1
        except Cancelled as exc:
            say(str(exc))
            return 0
        except Conflict as exc:  # another cycle got in first
            say(f"no cycle: {exc}")
            return 0
    say(f"run {result.run_id}: {result.version} {result.summary}; " + "; ".join(result.reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
