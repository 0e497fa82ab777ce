"""The settings of one ``learnloop bench`` run (its flags, through agent/options.py),
checked when made: a bad combination is one clear line before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from learnloop.learning.tasks import label_words

MODES = ("correct", "thumbs")


@dataclass(frozen=True)
class BenchConfig:
    train: str = field(
        default="", metadata={"help": "JSONL file of {text, label} rows the user sends (required)"}
    )
    eval: str = field(
        default="",
        metadata={
            "help": "JSONL file of {text, label} rows every version is measured on "
            "(never trained on; required)"
        },
    )
    instruction: str = field(
        default="", metadata={"help": "sent before each text, as a person would (required)"}
    )
    labels: str = field(
        default="",
        metadata={"help": "comma-separated label words, e.g. yes,no (required unless --tools)"},
    )
    tools: str = field(
        default="",
        metadata={
            "help": "a tool task: the tools its answers need (--tools specs, comma-separated: "
            "a .py file, builtin, package.module); rows are then {text, answer, calls}"
        },
    )
    out: str = field(
        default="",
        metadata={
            "help": "a new folder: results.json, learning_curve.png and the bench's data "
            "root (required)"
        },
    )
    interactions: int = field(default=600, metadata={"help": "training texts to send"})
    cycle_every: int = field(
        default=150,
        metadata={
            "help": "interactions between learning cycles (each started by the chat's "
            "trigger; a thumbs interaction may rate several answers)"
        },
    )
    feedback: str = field(
        default="correct",
        metadata={
            "help": "correct: a miss gets the gold label as a correction; thumbs: only "
            "up/down, plus --regen regenerations after a miss"
        },
    )
    regen: int = field(
        default=0, metadata={"help": "thumbs mode: regenerations (each rated) after a miss, 0-3"}
    )
    seed: int = field(default=0, metadata={"help": "shuffles the texts and seeds sampling"})
    gate_rows: int = field(
        default=100, metadata={"help": "training rows set aside as the gate's --eval-file"}
    )
    eval_limit: int = field(
        default=0, metadata={"help": "measure on a seeded sample of this many (0 = all)"}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature of the chat (evals are greedy)"}
    )
    max_new_tokens: int = field(
        default=0, metadata={"help": "longest answer, in tokens (0: 16, or 64 for a tool task)"}
    )
    switch_at: int = field(
        default=0,
        metadata={
            "help": "the job changes: after this many interactions the user teaches a second "
            "task (--train2, --eval2, --instruction2, --labels2 or --tools2); every "
            "evaluation measures both (0: one task)"
        },
    )
    users: int = field(
        default=1,
        metadata={"help": "simulated users taking turns, user1, user2, ... (1: one, bench)"},
    )
    forget: str = field(
        default="",
        metadata={
            "help": "at the end, forget this user (`learnloop forget`): the time it takes, what "
            "it retired and the replacement's scores go into results.json"
        },
    )
    train2: str = field(default="", metadata={"help": "the second task's --train"})
    eval2: str = field(default="", metadata={"help": "the second task's --eval"})
    instruction2: str = field(default="", metadata={"help": "the second task's --instruction"})
    labels2: str = field(default="", metadata={"help": "the second task's --labels"})
    tools2: str = field(default="", metadata={"help": "the second task's --tools"})

    def __post_init__(self) -> None:
        for name in ("train", "eval", "out"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.feedback not in MODES:
            raise ValueError(f"--feedback must be correct or thumbs, not {self.feedback!r}")
        if not 0 <= self.regen <= 3:
            raise ValueError("--regen must be 0, 1, 2 or 3")
        if self.interactions < 1 or self.cycle_every < 1:
            raise ValueError("--interactions and --cycle-every must be at least 1")
        if not self.instruction.strip():
            raise ValueError("--instruction is empty; say what the model should answer")
        if not self.tools.strip() and len(self.label_list) < 2:
            raise ValueError("--labels needs at least two comma-separated label words")
        if self.users < 1:
            raise ValueError("--users must be at least 1")
        users = {user_name(n, self.users) for n in range(1, self.users + 1)}
        if self.forget and self.forget not in users:
            raise ValueError(f"--forget names a simulated user: user1 to user{self.users}")
        if self.switch_at and not 0 < self.switch_at < self.interactions:
            raise ValueError("--switch-at must lie between 0 and --interactions")
        if self.switch_at and not (self.train2 and self.eval2 and self.instruction2):
            raise ValueError("--switch-at needs the second task: --train2, --eval2, --instruction2")

    def second(self) -> BenchConfig | None:
        """The second task's settings, as a bench of its own after the switch."""
        if not self.switch_at:
            return None
        return replace(
            self,
            train=self.train2,
            eval=self.eval2,
            instruction=self.instruction2,
            labels=self.labels2,
            tools=self.tools2,
            interactions=self.interactions - self.switch_at,
            max_new_tokens=0,
            switch_at=0,
        )

    @property
    def answer_tokens(self) -> int:
        """A tool call takes about 40 tokens; a label, a few."""
        return self.max_new_tokens or (64 if self.tools.strip() else 16)

    @property
    def label_list(self) -> list[str]:
        return label_words(self.labels)


def user_name(interaction: int, users: int) -> str:
    """Who sends interaction number ``interaction`` (from 1): the users take turns."""
    return "bench" if users == 1 else f"user{(interaction - 1) % users + 1}"
