"""Hyperparameters of a learning cycle, saved as ``config.json`` beside every adapter.

Defaults are chosen for a 135M model on a 2-core CPU: one cycle on ~50 feedback items
should finish in well under three minutes (see README, benchmarks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

METHODS = ("auto", "sft", "dpo", "kto")
GATE_METRICS = ("preference_accuracy", "correction_match", "task_accuracy", "task_macro_f1")


@dataclass(frozen=True)
class LearnConfig:
    method: str = field(
        default="auto",
        metadata={
            "help": "auto | sft | dpo | kto. auto: SFT on the good answers, then DPO when "
            "there are at least --min-pairs preference pairs, else KTO on the thumbs alone"
        },
    )
    min_pairs: int = field(
        default=4, metadata={"help": "fewest DPO pairs for auto to choose DPO over KTO"}
    )
    cut_off_sentences: bool = field(
        default=True,
        metadata={
            "help": "train on the complete sentences of a thumbs-up answer the token limit "
            "cut off; false: such an answer is no SFT target at all"
        },
    )
    max_user_share: float = field(
        default=0.5,
        metadata={"help": "largest share of the examples one user may supply (with 2+ users)"},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r)"})
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "LoRA dropout; 0 saves ~10% of CPU step time (dropout masks)"},
    )
    target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj",
        metadata={"help": "comma-separated module names that get a LoRA adapter"},
    )
    sft_epochs: float = field(default=3.0, metadata={"help": "passes over the SFT examples"})
    sft_learning_rate: float = field(default=2e-4, metadata={"help": "SFT learning rate"})
    dpo_epochs: float = field(default=2.0, metadata={"help": "passes over the DPO pairs"})
    dpo_learning_rate: float = field(default=5e-5, metadata={"help": "DPO learning rate"})
    dpo_beta: float = field(
        default=0.1, metadata={"help": "DPO beta: how far the policy may move from the reference"}
    )
    held_out_share: float = field(
        default=0.2,
        metadata={"help": "share of threads whose feedback is held out to judge the candidate"},
    )
    gate: bool = field(
        default=True, metadata={"help": "compare the candidate with the active version first"}
    )
    gate_metric: str = field(
        default="preference_accuracy",
        metadata={
            "help": "metric the candidate must win on: preference_accuracy | correction_match "
            "(held-out feedback) | task_accuracy | task_macro_f1 (--eval-file; macro-F1 "
            "does not reward answering every row with the commonest label)"
        },
    )
    promote_without_heldout: bool = field(
        default=False, metadata={"help": "promote when there is no held-out feedback at all"}
    )
    control_max_drop: float = field(
        default=0.1, metadata={"help": "largest allowed drop in control-set accuracy"}
    )
    control_max_logp_drop: float = field(
        default=0.25,
        metadata={"help": "largest allowed drop in the control answers' log-prob per token"},
    )
    gate_max_new_tokens: int = field(
        default=48, metadata={"help": "answer length when the gate compares greedy answers"}
    )
    eval_file: str = field(
        default="",
        metadata={
            "help": "labelled JSONL file (text, label per line) the gate measures task "
            "accuracy on; '' = none"
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
        default=200, metadata={"help": "use at most this many rows of --eval-file"}
    )
    eval_max_new_tokens: int = field(
        default=16, metadata={"help": "answer length when the gate answers --eval-file texts"}
    )
    task_max_drop: float = field(
        default=0.0,
        metadata={"help": "largest allowed drop in task accuracy on --eval-file"},
    )
    kto_epochs: float = field(default=2.0, metadata={"help": "passes over the KTO rows"})
    kto_learning_rate: float = field(default=5e-5, metadata={"help": "KTO learning rate"})
    kto_beta: float = field(default=0.1, metadata={"help": "KTO beta"})
    batch_size: int = field(default=4, metadata={"help": "examples per optimizer step"})
    max_length: int = field(
        default=512, metadata={"help": "longest tokenized example; longer ones are truncated"}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "cap on optimizer steps per stage (-1 = run all epochs)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed for training"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0 < self.max_user_share <= 1:
            raise ValueError("--max-user-share must be in (0, 1]")
        if not 0 <= self.held_out_share < 1:
            raise ValueError("--held-out-share must be in [0, 1)")
        if self.gate_metric not in GATE_METRICS:
            raise ValueError(f"--gate-metric must be one of {', '.join(GATE_METRICS)}")
        if self.gate_metric.startswith("task_") and not self.eval_file:
            raise ValueError(f"--gate-metric {self.gate_metric} needs --eval-file")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]
