"""The local model as a LangChain chat model, so the graph uses it like any other.

Token streaming goes through LangChain's callbacks, which is what LangGraph's
``stream_mode="messages"`` listens to. The final chunk carries the trajectory details the
agent logs with the turn: the exact rendered prompt, the version that answered, the
generation settings (as applied to this message: see ``GenerationConfig.for_message``),
what ended the answer, token counts and timings.

Tools: ``bind_tools`` (or ``tools=[...]`` per call) offers tool schemas; the model writes
calls in the convention of learning/chat_format.py, and the reply is an ``AIMessage``
with LangChain's ``tool_calls``. While it streams, the text of a call is not handed out
as tokens (a person sees the call once it is whole); a call that does not parse stays in
the reply's text and is named in ``response_metadata["malformed"]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from learnloop.agent.backend import Backend, Pin
from learnloop.agent.config import GenerationConfig
from learnloop.learning import chat_format
from learnloop.storage.records import Message

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def to_dicts(messages: list[BaseMessage]) -> list[Message]:
    """LangChain messages to learnloop's (OpenAI-shaped) message dicts."""
    out: list[Message] = []
    for m in messages:
        if m.type not in _ROLES:
            raise ValueError(f"message type {m.type!r} is not supported by the local model")
        text = m.content if isinstance(m.content, str) else str(m.content)
        message: Message = {"role": _ROLES[m.type], "content": text}
        if isinstance(m, AIMessage) and m.tool_calls:
            message["content"] = text or None
            message["tool_calls"] = [
                chat_format.tool_call(c["name"], c["args"], c.get("id")) for c in m.tool_calls
            ]
        if isinstance(m, ToolMessage):
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    """learnloop's message dicts to LangChain messages (the reverse of :func:`to_dicts`)."""
    out: list[BaseMessage] = []
    for m in messages:
        content = m.get("content") or ""
        if m["role"] == "assistant":
            calls = [_langchain_call(c) for c in m.get("tool_calls") or []]
            out.append(AIMessage(content=content, tool_calls=calls))
        elif m["role"] == "tool":
            out.append(ToolMessage(content=content, tool_call_id=m.get("tool_call_id", "")))
        else:
            out.append((SystemMessage if m["role"] == "system" else HumanMessage)(content))
    return out


def _langchain_call(call: dict[str, Any]) -> dict[str, Any]:
    try:
        args = json.loads(call["function"]["arguments"] or "{}")
    except json.JSONDecodeError:
        args = {}
    return {"name": call["function"]["name"], "args": args, "id": call["id"], "type": "tool_call"}


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
        meta = merged.response_metadata
        message = AIMessage(
            content=meta.get("content") or "",  # the text without its calls
            tool_calls=[_langchain_call(c) for c in meta.get("tool_calls", [])],
            response_metadata=meta,
            usage_metadata=merged.usage_metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` (schemas, LangChain tools, functions, pydantic classes) on every
        call; ``tool_choice`` as in learning/chat_format.py :func:`choose`."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        schemas = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=schemas, tool_choice=tool_choice, **kwargs)

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
        generation = generation.for_message(last_user_text(dicts))
        if stop:  # LangChain's own stop sequences (``invoke(..., stop=[...])``)
            generation = replace(generation, stop=tuple(stop))
        tools, prefix = chat_format.choose(kwargs.get("tool_choice"), kwargs.get("tools"))
        if tools:
            generation = chat_format.for_tools(generation)
        started = time.perf_counter()
        first: float | None = None
        stream = backend.stream(dicts, generation, pin, tools, prefix)
        hider = chat_format.CallHider(enabled=bool(tools))
        hider.feed(prefix)
        raw: list[str] = [prefix]
        for piece in stream:  # an interrupted answer ends early; it is still a turn
            if not piece:
                continue
            if first is None:
                first = time.perf_counter()
            raw.append(piece)
            yield from self._token(hider.feed(piece), run_manager)
        yield from self._token(hider.finish(), run_manager)
        total = time.perf_counter() - started
        output = "".join(raw)
        parsed = chat_format.parse_output(output) if tools else chat_format.Parsed(output)
        calls = [
            tool_call_chunk(
                name=c["function"]["name"], args=c["function"]["arguments"], id=c["id"], index=i
            )
            for i, c in enumerate(parsed.tool_calls)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=calls,
                response_metadata={
                    "prompt": backend.render(dicts, tools, prefix),
                    "output": output,
                    "content": parsed.content,
                    "tool_calls": parsed.tool_calls,
                    "malformed": parsed.malformed,
                    "tools": tools or [],
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

    @staticmethod
    def _token(
        piece: str, run_manager: CallbackManagerForLLMRun | None
    ) -> Iterator[ChatGenerationChunk]:
        if piece:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


def last_user_text(messages: list[Message]) -> str:
    """The question a conversation is on: its last user message ('' when it has none)."""
    return next((m["content"] or "" for m in reversed(messages) if m["role"] == "user"), "")
