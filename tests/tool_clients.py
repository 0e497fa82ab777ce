"""Two real clients of the API's tools, the official ``openai`` client and LangChain's
``ChatOpenAI(...).bind_tools(...)``, read back as one ``Reply``; a real server whose model is
scripted (tests/scripted.py) so that it makes the calls each test needs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
)
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import SecretStr

from learnloop.learning import chat_format
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from tests.scripted import SHARED_TOOLS, ScriptedBackend
from tests.serving import Running, running_server

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "clock", "description": "The time now."},
}
ASK_WEATHER = [{"role": "user", "content": "Weather in Oslo?"}]
REQUIRED_PREFIX = '<tool_call>\n{"name": "'  # learning/chat_format.py choose()
has_shared_tools = pytest.mark.skipif(not SHARED_TOOLS.is_file(), reason="../shared is absent")


def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city
    """
    return f"sunny in {city}"


@contextmanager
def scripted_server(
    model_dir: Path,
    tokenizer_dir: Path,
    outputs: list[str],
    toolbox: Toolbox = NO_TOOLS,
    **options: Any,
) -> Iterator[tuple[Running, ScriptedBackend]]:
    """A real server whose model answers each model call with the next of ``outputs``."""
    backend = ScriptedBackend(tokenizer_dir, outputs)
    with running_server(model_dir, backend=backend, toolbox=toolbox, **options) as server:
        yield server, backend


def openai_client(server: Running) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0)


def chat_openai(server: Running) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.url + "/v1",
        api_key=SecretStr("unused-on-loopback"),
        model="learnloop",
        max_retries=0,
    )


def stored(server: Running) -> tuple[int, int]:
    """(turns, threads) in the server's store."""
    store = server.state.store
    return len(store.recent_turns(100)), len(store.threads(100))


@dataclass
class Reply:
    """What a client made of one answer: its text, its calls in OpenAI's shape (arguments
    as JSON text), the finish reason, and learnloop's extensions it carried."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    extra: dict[str, Any] = field(default_factory=dict)  # the completion's or last chunk's
    steps: list[dict[str, Any]] = field(default_factory=list)  # streamed learnloop_step

    @property
    def arguments(self) -> list[dict[str, Any]]:
        return [json.loads(c["function"]["arguments"]) for c in self.tool_calls]

    @property
    def names(self) -> list[str]:
        return [c["function"]["name"] for c in self.tool_calls]


def openai_reply(server: Running, stream: bool, **request: Any) -> Reply:
    """One request through the official client; a stream is put together as its users do."""
    client = openai_client(server)
    if not stream:
        completion = client.chat.completions.create(model="learnloop", **request)
        choice = completion.choices[0]
        calls = [c.model_dump() for c in choice.message.tool_calls or []]
        extra = completion.model_extra or {}
        return Reply(choice.message.content, calls, choice.finish_reason, extra)
    reply = Reply("", [], None)
    by_index: dict[int, dict[str, Any]] = {}
    for chunk in client.chat.completions.create(model="learnloop", stream=True, **request):
        reply.extra = chunk.model_extra or {}
        if "learnloop_step" in reply.extra:
            reply.steps.append(reply.extra["learnloop_step"])
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        reply.content = (reply.content or "") + (choice.delta.content or "")
        for delta in choice.delta.tool_calls or []:
            made = by_index.setdefault(
                delta.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            made["id"] += delta.id or ""
            if delta.function is not None:
                made["function"]["name"] += delta.function.name or ""
                made["function"]["arguments"] += delta.function.arguments or ""
        reply.finish_reason = choice.finish_reason or reply.finish_reason
    reply.tool_calls = [by_index[i] for i in sorted(by_index)]
    return reply


def langchain_message(
    server: Running,
    stream: bool,
    messages: Sequence[BaseMessage | dict[str, Any]],
    tools: list[Any] | None = None,
    tool_choice: Any = None,
) -> AIMessage | AIMessageChunk:
    """One request through LangChain's ChatOpenAI (with ``bind_tools`` when tools are
    given); a stream's chunks added up, as LangChain users do."""
    llm: Any = chat_openai(server)
    if tools is not None:
        llm = llm.bind_tools(tools, tool_choice=tool_choice)
    if not stream:
        message: AIMessage = llm.invoke(messages)
        return message
    merged: AIMessageChunk | None = None
    for chunk in llm.stream(messages):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    return merged


def langchain_reply(
    server: Running, stream: bool, messages: list[dict[str, Any]], **request: Any
) -> Reply:
    message = langchain_message(
        server, stream, messages, request.get("tools"), request.get("tool_choice")
    )
    calls = [chat_format.tool_call(c["name"], c["args"], c["id"]) for c in message.tool_calls]
    finish = message.response_metadata.get("finish_reason")
    return Reply(str(message.content), calls, finish)


def reply_from(kind: str, server: Running, stream: bool, **request: Any) -> Reply:
    if kind == "openai":
        return openai_reply(server, stream, **request)
    return langchain_reply(server, stream, **request)


CLIENTS = pytest.mark.parametrize(
    ("kind", "stream"),
    [("openai", False), ("openai", True), ("langchain", False), ("langchain", True)],
    ids=["openai", "openai-stream", "langchain", "langchain-stream"],
)
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
