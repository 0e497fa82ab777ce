"""The local model as a LangChain chat model, so the graph uses it like any other.

Token streaming goes through LangChain's callbacks, which is what LangGraph's
``stream_mode="messages"`` listens to. The final chunk carries the trajectory details the
agent logs with the turn: the exact rendered prompt, the version that answered, the
generation settings (as applied to this message: see ``GenerationConfig.for_message``),
what ended the answer, token counts and timings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from learnloop.agent.backend import Backend, Pin
from learnloop.agent.config import GenerationConfig
from learnloop.storage.records import Message

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_dicts(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages to the plain ``{"role", "content"}`` dicts chat templates take."""
    out = []
    for m in messages:
        if m.type not in _ROLES:
            raise ValueError(f"message type {m.type!r} is not supported by the local model")
        out.append({"role": _ROLES[m.type], "content": str(m.content)})
    return out


class LocalChatModel(BaseChatModel):
    """A :class:`BaseChatModel` over a learnloop :class:`Backend`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any  # a Backend; Any because pydantic cannot validate a Protocol
    generation: GenerationConfig = GenerationConfig()

    @property
    def _llm_type(self) -> str:
        return "learnloop-local"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = list(self._stream(messages, stop, run_manager, **kwargs))
        merged = chunks[0].message
        for c in chunks[1:]:
            merged = merged + c.message
        assert isinstance(merged, AIMessageChunk)
        message = AIMessage(
            content=merged.content,
            response_metadata=merged.response_metadata,
            usage_metadata=merged.usage_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        backend: Backend = self.backend
        dicts = to_dicts(messages)
        # per call, from the graph: the version to answer with and the request's settings
        pin: Pin | None = kwargs.get("pin")
        generation: GenerationConfig = kwargs.get("generation") or self.generation
        generation = generation.for_attempt(kwargs.get("attempt", 0))
        generation = generation.for_message(_last_user_message(dicts))
        if stop:  # LangChain's own stop sequences (``invoke(..., stop=[...])``)
            generation = replace(generation, stop=tuple(stop))
        started = time.perf_counter()
        first: float | None = None
        stream = backend.stream(dicts, generation, pin)
        for piece in stream:  # an interrupted answer ends early; it is still a turn
            if not piece:
                continue
            if first is None:
                first = time.perf_counter()
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        total = time.perf_counter() - started
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                response_metadata={
                    "prompt": backend.render(dicts),
                    "version": stream.version,
                    "model": backend.model_name,
                    "settings": generation.to_dict(),
                    "first_token_ms": None if first is None else (first - started) * 1000,
                    "total_ms": total * 1000,
                    "interrupted": stream.interrupted,
                    "truncated": stream.truncated,
                    "stopped_by": stream.stopped_by,
                },
                usage_metadata={
                    "input_tokens": stream.prompt_tokens,
                    "output_tokens": stream.completion_tokens,
                    "total_tokens": stream.prompt_tokens + stream.completion_tokens,
                },
            )
        )


def _last_user_message(messages: list[Message]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
