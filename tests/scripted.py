"""A Backend that answers with scripted text: for tests of what the agent does with an
answer (its loop between model and tools), where the model is not what is tested.

It implements agent/backend.py's protocol over the real SmolLM2 tokenizer and
learning/chat_format.py, so every prompt is rendered exactly as the real model gets it;
only the text that comes back is set by the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from learnloop.agent.backend import Pin, TokenStream, Tools
from learnloop.agent.config import GenerationConfig
from learnloop.learning import chat_format
from learnloop.storage.records import Message

SHARED_TOOLS = Path(__file__).resolve().parents[1].parent / "shared/data/tool_arithmetic/tools.py"


def call(name: str, **arguments: Any) -> str:
    """A model's text for one tool call, in the convention it is read in."""
    import json

    return chat_format.call_text(name, json.dumps(arguments))


class ScriptedBackend:
    """Answers each model call with the next of ``outputs`` (the text after any forced
    prefix), streamed in pieces of a few characters; ``prompts`` keeps what it was given."""

    model_name = "scripted"
    engine = "scripted"
    fingerprint: str | None = None
    context_tokens = 8192

    def __init__(self, tokenizer_dir: Path, outputs: list[str]) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.version = "base"

    def render(self, messages: list[Message], tools: Tools = None, prefix: str = "") -> str:
        return chat_format.render(self.tokenizer, messages, tools) + prefix

    def prompt_tokens(self, messages: list[Message], tools: Tools = None) -> int:
        return len(self.tokenizer(self.render(messages, tools))["input_ids"])

    def stream(
        self,
        messages: list[Message],
        config: GenerationConfig,
        pin: Pin | None = None,
        tools: Tools = None,
        prefix: str = "",
    ) -> TokenStream:
        prompt = self.render(messages, tools, prefix)
        self.prompts.append(prompt)
        text = self.outputs.pop(0) if self.outputs else "(no more scripted answers)"
        pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
        return TokenStream(
            iter(pieces),
            prompt_tokens=self.prompt_tokens(messages, tools),
            completion_tokens=len(pieces),
            version=self.version,
        )

    def switch(self, version: str, adapter_path: str | None, checksum: str | None = None) -> float:
        self.version = version
        return 0.0

    def prepare(self, pin: Pin) -> float:
        self.version = pin.version
        return 0.0

    def ready_for_adapters(self) -> None:
        pass

    def interrupt(self) -> None:
        pass

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        yield

    def check_room(self) -> None:
        pass  # a script has no queue
