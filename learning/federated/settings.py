"""The settings of one federation run (``learnloop federate serve``), saved as
``OUT/federation.json`` beside its rounds; checked when made."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from learnloop.learning.config import LearnConfig, check_setting
from learnloop.learning.federated.aggregate import RULES
from learnloop.storage.errors import UsageError

SETTINGS_FILE = "federation.json"


@dataclass(frozen=True)
class FederationSettings:
    name: str = field(
        default="",
        metadata={"help": "the federation's name, recorded in each node's versions (default: "
                  "the --out folder's name)"},
    )  # fmt: skip
    rounds: int = field(default=3, metadata={"min": 1, "help": "training rounds"})
    min_nodes: int = field(
        default=2, metadata={"min": 1, "help": "nodes online that a round waits for"}
    )
    min_updates: int = field(
        default=0,
        metadata={
            "min": 0,
            "help": "the fewest usable updates that make a round (0: --min-nodes); fewer and "
            "the run stops, the rounds before kept",
        },
    )
    wait_nodes: float = field(
        default=600.0,
        metadata={"above": 0.0, "help": "seconds a round waits for --min-nodes nodes online"},
    )
    round_timeout: float = field(
        default=3600.0,
        metadata={
            "above": 0.0,
            "help": "seconds a round waits for the nodes' updates (and again for their "
            "verdicts); a node that has not answered by then is left out of the round",
        },
    )
    aggregation: str = field(
        default="fedavg",
        metadata={
            "choices": RULES,
            "help": "fedavg: mean of A and B apart; svd: mean of the products B@A, factored "
            "back to rank r (exact while the mean's rank <= r); ffa: A frozen at the shared "
            "seed, mean of B (exact; sets --lora-freeze-a on every node)",
        },
    )
    adopt: bool = field(
        default=True,
        metadata={
            "help": "after each round, every node gates the global adapter on its own "
            "held-out feedback and registers it as a version (false: only train)"
        },
    )
    learn: str = field(
        default="{}",
        metadata={
            "cli": False,  # `--set FIELD=VALUE` on the command line
            "help": "learn settings every node trains with, as JSON; they override the node's own",
        },
    )

    def __post_init__(self) -> None:
        kinds = get_type_hints(FederationSettings)
        for item in dataclasses.fields(self):
            check_setting(item.name, getattr(self, item.name), kinds[item.name], item.metadata)
        LearnConfig(**self.learn_settings)  # a bad learn setting fails here, named

    @property
    def needed(self) -> int:
        """The fewest usable updates a round needs."""
        return self.min_updates or self.min_nodes

    @property
    def learn_settings(self) -> dict[str, Any]:
        """The learn settings the nodes get: --set's, plus what the aggregation needs."""
        try:
            given = json.loads(self.learn)
        except json.JSONDecodeError as exc:
            raise UsageError(f"learn settings are not JSON: {exc}") from exc
        if not isinstance(given, dict):
            raise UsageError("learn settings must be a JSON object of FIELD: VALUE")
        return {**given, "lora_freeze_a": True} if self.aggregation == "ffa" else given

    def save(self, out: Path) -> None:
        (out / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, out: Path) -> FederationSettings:
        return cls(**json.loads((out / SETTINGS_FILE).read_text()))
