"""Generation settings: a frozen dataclass whose fields are also CLI flags (agent/options.py).

The resolved settings are logged with every turn, so any answer can be replayed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

MIN_SAMPLING_TEMPERATURE = 1e-3  # below it, sampling is greedy decoding in all but name


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = field(default=256, metadata={"help": "longest answer, in tokens"})
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

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that sampling would divide the logits into
        infinities (a temperature of 1e-54 made torch's sampler fail): the top token."""
        return self.temperature < MIN_SAMPLING_TEMPERATURE
