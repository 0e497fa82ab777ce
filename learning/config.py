"""Hyperparameters of a learning cycle, saved as ``config.json`` beside every adapter.

Defaults are chosen for a 135M model on a 2-core CPU: one cycle on ~50 feedback items
should finish in well under three minutes (see README, benchmarks). The SFT rate and
``sft_min_steps`` were chosen on the README's walkthrough (one correction of a fact the
model cannot know, three liked answers), SmolLM2-135M, one cycle each:

=============================================  ===========================================
SFT rate x steps                               the new version
=============================================  ===========================================
2e-4 x 3 (before), x 8, x 32; 1e-3 x 16         does not give the correction
2e-3 x 16, all rows gone over 16 times          gives it; control logp -1.16 -> -2.62:
                                               rejected (and promoted on other feedback)
2e-3 x 18, only the correction repeated         gives it; control accuracy 8/12 -> 6/12
                                               once: rejected (promoted on other feedback)
1e-3 x 18, only the correction repeated         gives it, promoted on both feedback sets
(the defaults)                                 (control 10/12 and 8/12, the base 8/12)
=============================================  ===========================================

``learnloop bench`` pins its own rates (agent/bench/simulated_user.py), so its figures do
not move with these defaults.

Every setting is checked when a config is made, wherever its values come from (CLI
flags, a ``POST /v1/learn`` body, a run's ``request.json``), so a value that would fail
in the trainer or do nothing useful is refused before a run starts, in one line naming
the setting. The bounds live beside each field, in its metadata: ``min`` / ``max``
(inclusive), ``above`` / ``below`` (exclusive), ``choices``, and ``also`` (one more value
allowed outside the bounds, such as -1 for "no cap").
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from learnloop.learning.tasks import label_words
from learnloop.storage.errors import UsageError

METHODS = ("auto", "sft", "dpo", "kto")
STARTS = ("fresh", "active", "auto", "both")
GATE_METRICS = ("preference_accuracy", "correction_match", "task_accuracy", "task_macro_f1")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
MAX_EPOCHS = 1000.0
MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class LearnConfig:
    method: str = field(
        default="auto",
        metadata={
            "choices": METHODS,
            "help": "auto | sft | dpo | kto. auto: SFT on the good answers, then DPO when "
            "there are at least --min-pairs preference pairs, else KTO on the thumbs alone",
        },
    )
    min_pairs: int = field(
        default=4, metadata={"min": 1, "help": "fewest DPO pairs for auto to choose DPO over KTO"}
    )
    cut_off_sentences: bool = field(
        default=True,
        metadata={
            "help": "train on the complete sentences of a thumbs-up answer the token limit "
            "cut off; false: such an answer is no SFT target at all"
        },
    )
    liked_as_label: bool = field(
        default=False,
        metadata={
            "help": "a labelled task (--eval-labels): a thumbs-up answer that names exactly "
            "one label trains as that label word alone, the form the task asks for (a 👍 "
            "says the label is right, not that a sentence around it is wanted)",
        },
    )
    max_user_share: float = field(
        default=0.5,
        metadata={
            "above": 0.0,
            "max": 1.0,
            "help": "largest share of the examples one user may supply (with 2+ users)",
        },
    )
    lora_r: int = field(default=16, metadata={"min": 1, "help": "LoRA rank"})
    lora_alpha: int = field(
        default=32, metadata={"min": 1, "help": "LoRA scaling numerator (alpha / r)"}
    )
    lora_dropout: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "below": 1.0,
            "help": "LoRA dropout; 0 saves ~10% of CPU step time (dropout masks)",
        },
    )
    target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj",
        metadata={"help": "comma-separated module names that get a LoRA adapter"},
    )
    lora_freeze_a: bool = field(
        default=False,
        metadata={
            "help": "train only LoRA's B matrices, A stays at its seeded start (FFA-LoRA): "
            "federated nodes that share A average their adapters exactly "
            "(learnloop federate --aggregation ffa)",
        },
    )
    sft_epochs: float = field(
        default=3.0,
        metadata={"above": 0.0, "max": MAX_EPOCHS, "help": "passes over the SFT examples"},
    )
    sft_min_steps: int = field(
        default=16,
        metadata={
            "min": 0,
            "help": "fewest SFT optimizer steps when there are corrections: a handful of "
            "them is repeated so that a first correction is learned (0 = just the epochs)",
        },
    )
    sft_learning_rate: float = field(
        default=1e-3,
        metadata={
            "above": 0.0,
            "max": 1.0,
            "help": "SFT learning rate (a LoRA-sized rate: 2e-4 did not teach a first "
            "correction even in 32 steps)",
        },
    )
    sft_group_by_length: bool = field(
        default=False,
        metadata={
            "help": "SFT batches of rows of about the same length (transformers' "
            "group_by_length sampling): less padding to compute, about 19% of a "
            "sentiment batch's tokens; the order of the rows changes",
        },
    )
    sft_continue_learning_rate: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "max": 1.0,
            "help": "SFT learning rate when a cycle trains the active version's adapter "
            "further (--start active, auto, both); 0: --sft-learning-rate. A fresh adapter "
            "gains from a large rate; steps from a trained one can undo what it knew",
        },
    )
    dpo_epochs: float = field(
        default=2.0, metadata={"above": 0.0, "max": MAX_EPOCHS, "help": "passes over the DPO pairs"}
    )
    dpo_learning_rate: float = field(
        default=5e-5, metadata={"above": 0.0, "max": 1.0, "help": "DPO learning rate"}
    )
    dpo_balance: bool = field(
        default=False,
        metadata={
            "help": "keep DPO pairs balanced by what they reject: no kind of rejected answer "
            "(its first words: a label) in more pairs than the next most rejected kind "
            "(unbalanced thumbs pairs once taught a model never to say one label)",
        },
    )
    dpo_beta: float = field(
        default=0.1,
        metadata={"above": 0.0, "help": "DPO beta: how far the policy may move from the reference"},
    )
    held_out_share: float = field(
        default=0.2,
        metadata={
            "min": 0.0,
            "below": 1.0,
            "help": "share of threads whose feedback is held out to judge the candidate",
        },
    )
    min_heldout: int = field(
        default=8,
        metadata={
            "min": 1,
            "help": "fewest held-out feedback items worth judging by (corrections, or "
            "answers rated up and down for the same prompt); with fewer, nothing is held "
            "out: all of it trains and the gate judges by what was taught",
        },
    )
    gate: bool = field(
        default=True, metadata={"help": "compare the candidate with the active version first"}
    )
    gate_metric: str = field(
        default="preference_accuracy",
        metadata={
            "choices": GATE_METRICS,
            "help": "metric the candidate must win on: preference_accuracy | correction_match "
            "(held-out feedback) | task_accuracy | task_macro_f1 (--eval-file; macro-F1 "
            "does not reward answering every row with the commonest label)",
        },
    )
    gate_min_margin: float = field(
        default=1.0,
        metadata={
            "min": 0.0,
            "help": "smallest gain in the mean log-prob margin of held-out pairs (nats) that "
            "counts as a win when the accuracies tie",
        },
    )
    taught_min_gain: float = field(
        default=0.05,
        metadata={
            "min": 0.0,
            "help": "judged by what was taught: smallest rise in the liked answers' mean "
            "log-prob per token that counts as learned them",
        },
    )
    promote_without_heldout: bool = field(
        default=False,
        metadata={"help": "promote when there is nothing at all to judge the candidate by"},
    )
    control_max_drop: float = field(
        default=0.1,
        metadata={"min": 0.0, "max": 1.0, "help": "largest allowed drop in control-set accuracy"},
    )
    control_max_logp_drop: float = field(
        default=0.25,
        metadata={
            "min": 0.0,
            "help": "largest allowed drop in the control answers' log-prob per token",
        },
    )
    gate_max_kl: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "help": "the most the candidate's next-token distributions on the control set may "
            "move from the active version's (mean KL per token, nats; 0: measured and "
            "reported, not bounded)",
        },
    )
    gate_max_new_tokens: int = field(
        default=48,
        metadata={
            "min": 1,
            "max": MAX_NEW_TOKENS,
            "help": "answer length when the gate compares greedy answers",
        },
    )
    eval_file: str = field(
        default="",
        metadata={
            "help": "JSONL file the gate measures task accuracy on: labelled rows (text, "
            "label) or a tool task (text, answer: the answer its trajectory must give, "
            "with --tools); '' = none"
        },
    )
    tools: str = field(
        default="",
        metadata={
            "help": "the tools a tool task's trajectories call (--eval-file rows of text "
            "and answer): --tools specs, comma-separated (builtin, FILE.py, package.module)"
        },
    )
    eval_instruction: str = field(
        default="", metadata={"help": "instruction put before each --eval-file text, as in chat"}
    )
    eval_labels: str = field(
        default="",
        metadata={"help": "comma-separated label words of --eval-file ('' = those in the file)"},
    )
    eval_limit: int = field(
        default=200, metadata={"min": 1, "help": "use at most this many rows of --eval-file"}
    )
    eval_max_new_tokens: int = field(
        default=16,
        metadata={
            "min": 1,
            "max": MAX_NEW_TOKENS,
            "help": "answer length when the gate answers --eval-file texts",
        },
    )
    task_max_drop: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "max": 1.0,
            "help": "largest allowed drop in task accuracy on --eval-file",
        },
    )
    kto_epochs: float = field(
        default=2.0, metadata={"above": 0.0, "max": MAX_EPOCHS, "help": "passes over the KTO rows"}
    )
    kto_learning_rate: float = field(
        default=5e-5, metadata={"above": 0.0, "max": 1.0, "help": "KTO learning rate"}
    )
    kto_beta: float = field(default=0.1, metadata={"above": 0.0, "help": "KTO beta"})
    batch_size: int = field(default=4, metadata={"min": 1, "help": "examples per optimizer step"})
    max_length: int = field(
        default=512,
        metadata={"min": 1, "help": "longest tokenized example; longer ones are truncated"},
    )
    max_steps: int = field(
        default=-1,
        metadata={
            "min": 1,
            "also": -1,
            "help": "cap on optimizer steps per stage (-1 = run all epochs)",
        },
    )
    processes: int = field(
        default=1,
        metadata={
            "min": 1,
            "max": 64,
            "help": "training processes: more than 1 launches the trainer with `accelerate "
            "launch` (DDP: one process per GPU, or on the CPU over gloo); an optimizer step "
            "still holds --batch-size examples in all",
        },
    )
    accelerate_config: str = field(
        default="",
        metadata={
            "help": "an accelerate config file to launch the trainer with (`accelerate "
            "config` writes one: DeepSpeed, FSDP, mixed precision); '' = plain DDP",
        },
    )
    start: str = field(
        default="active",
        metadata={
            "choices": STARTS,
            "help": "fresh | active | auto | both. fresh: a new adapter trained on all "
            "feedback so far; active: the active version's adapter trained further on the "
            "feedback new since that version, plus --replay older rows (a cycle's cost then "
            "stays flat as feedback grows); both: active, then fresh, each gated against the "
            "version active then, so the gate keeps the better (twice the cost); auto: "
            "active, and fresh too when the gate rejects it. All but fresh train fresh when "
            "the base model is active. active is the default: on the sentiment bench it "
            "matched fresh's accuracy at a flat cost per cycle (docs/benchmarks.md)",
        },
    )
    replay: int = field(
        default=150,
        metadata={
            "min": 0,
            "help": "with --start active, auto or both: at most this many older feedback rows "
            "trained on again, taken in turn from each kind (correction, up, down) and "
            "label so that every one stays represented",
        },
    )
    max_new: int = field(
        default=300,
        metadata={
            "min": 0,
            "help": "with --start active, auto or both: train on at most this many of the feedback "
            "rows new since the active version, the newest (0: all); the older of them join "
            "the rows --replay draws from, so cycles the gate rejected do not make the next "
            "one cost more",
        },
    )
    watts_per_cpu: float = field(
        default=4.0,
        metadata={
            "above": 0.0,
            "help": "the power one busy logical CPU draws, for a cycle's energy estimate "
            "(CPU-seconds x this); 4 W: a hardware thread's share of a server CPU's TDP, "
            "with memory and power supply",
        },
    )
    force: bool = field(
        default=False,
        metadata={
            "switch": "--no-force",
            "help": "learn even when no feedback arrived since the last cycle",
        },
    )
    seed: int = field(
        default=0, metadata={"min": 0, "max": 2**32 - 1, "help": "random seed for training"}
    )

    def __post_init__(self) -> None:
        """Refuse a value out of its field's bounds, or of the wrong type, with a
        UsageError naming the setting (not a CLI flag: the API sends the same names)."""
        for item in dataclasses.fields(self):
            check_setting(item.name, getattr(self, item.name), _kinds()[item.name], item.metadata)
        if not self.modules:
            raise UsageError("target_modules must name at least one module")
        for name in self.modules:
            if not MODULE_NAME.fullmatch(name):
                raise UsageError(f"target_modules: {name!r} is not a module name")
        if self.liked_as_label and not self.label_words:
            raise UsageError("liked_as_label needs the task's labels: set eval_labels")
        if self.gate_metric.startswith("task_") and not self.eval_file.strip():
            raise UsageError(f"gate_metric {self.gate_metric} needs an eval_file")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @property
    def label_words(self) -> list[str]:
        """The task's labels (--eval-labels), lower case."""
        return label_words(self.eval_labels)

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


@functools.cache
def _kinds() -> dict[str, type]:
    return get_type_hints(LearnConfig)


def check_setting(name: str, value: object, kind: type, bounds: Mapping[str, Any]) -> None:
    """Raise a UsageError unless ``value`` is a ``kind`` within ``bounds`` (field metadata)."""
    if not _is_kind(value, kind):
        raise UsageError(f"{name} must be {_article(kind)}, not {value!r}")
    choices = bounds.get("choices")
    if choices is not None and value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    if kind in (int, float) and not _within(value, bounds):
        raise UsageError(f"{name} must be {_allowed(bounds)}, not {value!r}")


def _is_kind(value: object, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def _article(kind: type) -> str:
    return {int: "a whole number", float: "a finite number", bool: "true or false"}.get(
        kind, "a string"
    )


def _within(value: Any, bounds: Mapping[str, Any]) -> bool:
    if "also" in bounds and value == bounds["also"]:
        return True
    # "not (ok)" rather than "bad": a NaN compares false with everything, so it fails too
    return not (
        ("min" in bounds and not value >= bounds["min"])
        or ("above" in bounds and not value > bounds["above"])
        or ("max" in bounds and not value <= bounds["max"])
        or ("below" in bounds and not value < bounds["below"])
    )


def _allowed(bounds: Mapping[str, Any]) -> str:
    """The bounds in words: "above 0 and at most 1", "-1 or at least 1"."""
    words = {"min": "at least", "above": "above", "max": "at most", "below": "below"}
    parts = [f"{words[key]} {_number(bounds[key])}" for key in words if key in bounds]
    text = " and ".join(parts)
    return f"{_number(bounds['also'])} or {text}" if "also" in bounds else text


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"
