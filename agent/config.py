"""Generation settings: a frozen dataclass whose fields are also CLI flags (agent/options.py).

The resolved settings are logged with every turn, so any answer can be replayed.

Answer length on CPU, measured by benchmarks/answer_length.py (SmolLM2-135M, 20 everyday
questions): at the old cap of 256 new tokens answers averaged 161 tokens and 7 of 20 were
cut mid-sentence; a cap of 128 alone cut 8; 128 with the stop at the first paragraph
averaged 91 tokens (about 3.3 s at the 28 tokens/s of 2 idle cores, never over 128) and
cut 5; 96 with it cut 9. So the default cap is 128 new tokens, and an answer ends at its
first paragraph (a blank line after a complete sentence) unless the message asks for
something longer (:func:`asks_for_more`) or ``whole_answer`` is set.

A paragraph stop is not a cut-off (the turn's ``truncated`` stays false; its settings say
``stopped_by: paragraph``): the answer ends on a complete sentence, so a thumbs-up on it
is a clean SFT target as it is (learning/datasets.py trims only what the token limit cut).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

MIN_SAMPLING_TEMPERATURE = 1e-3  # below it, sampling is greedy decoding in all but name
MAX_STOP_STRINGS = 4  # as OpenAI's API
PARAGRAPH = "\n\n"  # a blank line: where the first paragraph ends

# Words that ask for more than one paragraph. Kept small and plain: a false positive costs
# a longer answer, a miss costs a one-paragraph answer the user can ask again for ("more").
# "list" only as a request ("List five...", "give me a list"): "a list of three things"
# in a grammar question asks for no list (measured: benchmarks/answer_length.py).
_LONGER = re.compile(
    r"^\W*(please\W+)?list\b|\b(give|make|write|show)\s+(me\s+)?a\s+list\b|"
    r"\b(steps?|step[- ]by[- ]step|how to|how do i|instructions|"
    r"details?|detailed|in depth|thorough(ly)?|elaborate|essay|article|story|poem|letter|"
    r"code|program|script|function|write|draft|outline|examples|paragraphs|"
    r"more|continue|go on|compare|pros and cons)\b",
    re.IGNORECASE,
)


def asks_for_more(message: str) -> bool:
    """Whether ``message`` asks for more than a paragraph: a list, steps, detail, code,
    a text to write ("write a poem"), or more of the last answer ("go on")."""
    return _LONGER.search(message) is not None


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = field(
        default=128,
        metadata={"help": "longest answer, in tokens (128: quick on a CPU, see the README)"},
    )
    temperature: float = field(
        default=0.2, metadata={"help": "sampling temperature; 0 = greedy (deterministic)"}
    )
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling: keep this much mass"})
    repetition_penalty: float = field(
        default=1.05, metadata={"help": "penalty on repeated tokens (1 = none)"}
    )
    system_prompt: str = field(
        default="",
        metadata={"help": "system message for new turns ('' = the model's own default)"},
    )
    seed: int = field(default=-1, metadata={"help": "sampling seed (-1 = random)"})
    whole_answer: bool = field(
        default=False,
        metadata={
            "help": "generate up to --max-new-tokens; by default an answer ends at its first "
            "paragraph unless the message asks for more (a list, steps, detail, code, "
            "'write ...', 'more')",
            "switch": "--first-paragraph",  # a flag pair, not a value: agent/options.py
        },
    )
    stop: tuple[str, ...] = field(
        default=(),
        metadata={"help": "strings that end the answer (not part of it)", "cli": False},
    )

    def __post_init__(self) -> None:
        # the bounds the OpenAI-compatible API puts on a request (agent/server/chat.py),
        # less its cap on max_tokens, which guards the server, not the model
        if self.max_new_tokens < 1:
            raise ValueError("--max-new-tokens must be at least 1")
        if not 0 <= self.temperature <= 2:
            raise ValueError("--temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise ValueError("--top-p must be above 0 and at most 1")
        if self.repetition_penalty <= 0:
            raise ValueError("--repetition-penalty must be above 0")
        if isinstance(self.stop, str) or len(self.stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop takes a list of at most {MAX_STOP_STRINGS} strings")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError("every stop string must be a non-empty string")

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def for_attempt(self, attempt: int) -> GenerationConfig:
        """The settings for the ``attempt``-th answer to one prompt (0 = the first).

        A fixed seed makes one answer reproducible, but a regeneration asks for a different
        answer: with the same seed it would repeat the first one word for word. So each
        attempt samples with its own seed, still reproducible from the log."""
        if attempt <= 0 or self.seed < 0 or self.greedy:
            return self
        return dataclasses.replace(self, seed=self.seed + attempt)

    def for_message(self, message: str) -> GenerationConfig:
        """The settings for an answer to ``message``: the whole answer when it asks for
        more than a paragraph (logged so, the turn replays as it was generated)."""
        if self.whole_answer or not asks_for_more(message):
            return self
        return dataclasses.replace(self, whole_answer=True)

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that sampling would divide the logits into
        infinities (a temperature of 1e-54 made torch's sampler fail): the top token."""
        return self.temperature < MIN_SAMPLING_TEMPERATURE


ENGINES = ("auto", "llama.cpp", "transformers", "transformers-bf16", "vllm")


@dataclass(frozen=True)
class ServingConfig:
    """What generates the server's answers (agent/engines.py), how many at once and how
    many may wait (agent/batching.py)."""

    max_batch: int = field(
        default=8,
        metadata={
            "help": "most answers generated together, in one continuous batch (requests join "
            "it between decode steps)"
        },
    )
    max_queue: int = field(
        default=64,
        metadata={
            "help": "most requests waiting for a place in the batch; one more is refused "
            "with a 503 and Retry-After"
        },
    )

    engine: str = field(
        default="auto",
        metadata={
            "help": "what generates answers: llama.cpp (the model's GGUF in llama.cpp, each "
            "version's adapter converted; the fastest here; `make setup` builds it), "
            "transformers (PyTorch, fp32 on a CPU), transformers-bf16, vllm (a CUDA GPU "
            "with vLLM installed: its own batching, --max-loras adapters at once), or auto: "
            "llama.cpp when it is installed and the model is a GGUF, else transformers",
            "choices": ENGINES,
        },
    )
    max_loras: int = field(
        default=4,
        metadata={
            "help": "vllm: most versions' adapters on the GPU at once (vLLM's max_loras); "
            "answers of more versions wait for a place"
        },
    )
    llama_weights: str = field(
        default="f16",
        metadata={
            "help": "the weights llama.cpp computes with: f16 (fast; answers as the fp32 "
            "model the gate measures, see README), f32 (exact, slower) or bf16",
            "choices": ("f16", "f32", "bf16"),
        },
    )

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 0 or self.max_loras < 1:
            raise ValueError(
                "--max-batch and --max-loras must be at least 1 and --max-queue at least 0"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}")
        if self.llama_weights not in ("f16", "f32", "bf16"):
            raise ValueError("--llama-weights must be f16, f32 or bf16")


@dataclass(frozen=True)
class LoopLimits:
    """How far one turn's loop between the model and its tools may go (agent/graph.py)."""

    max_steps: int = field(
        default=4,
        metadata={
            "help": "most model calls in one turn: each tool result goes back to the model, "
            "and a turn that reaches this cap ends with an answer saying so"
        },
    )
    turn_seconds: float = field(
        default=60.0,
        metadata={"help": "most seconds one turn's steps may take (checked before each step)"},
    )
    tool_timeout: float = field(
        default=10.0,
        metadata={"help": "most seconds one tool call may take; then the model is told so"},
    )

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError("--max-steps must be at least 1")
        if self.turn_seconds <= 0 or self.tool_timeout <= 0:
            raise ValueError("--turn-seconds and --tool-timeout must be above 0")
