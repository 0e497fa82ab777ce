"""What a ``POST /v1/chat/completions`` body may hold, checked (pydantic models and their
bounds), and what it means: the generation settings, the context the model sees, the
new message (agent/server/chat.py answers it; its docstring has the rules)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learnloop.agent.config import MAX_STOP_STRINGS, GenerationConfig
from learnloop.agent.graph import conversation
from learnloop.agent.runtime import (
    MAX_MESSAGE_CHARS,
    UsageError,
    check_message,
)
from learnloop.agent.server.state import ServerState
from learnloop.learning import chat_format
from learnloop.storage.records import Message

MAX_MESSAGES = 200
MAX_TOKENS = 2048
MAX_PROMPT_TOKENS = 4096  # the default of `serve --max-prompt-tokens`
MAX_STOP_CHARS = 200  # a stop string longer than this is no end marker but a mistake
MAX_TOOLS = 64  # tools in one request
MAX_CALLS = 16  # tool calls in one assistant message
MAX_ID_CHARS = 200  # a tool call's id

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class FunctionCall(BaseModel):
    name: str = Field(max_length=200)
    arguments: str = Field(default="{}", max_length=MAX_MESSAGE_CHARS, description="JSON text")


class ToolCall(BaseModel):
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message of a conversation in OpenAI's shape. What the schema cannot say (an
    assistant message has text or calls; a tool result answers an earlier call) is
    checked by :func:`context_of`, which names the message."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = Field(
        default=None,
        max_length=MAX_MESSAGE_CHARS,
        description="null only on an assistant message that calls tools",
    )
    tool_calls: list[ToolCall] | None = Field(
        default=None, max_length=MAX_CALLS, description="an assistant message's calls"
    )
    tool_call_id: str | None = Field(
        default=None, max_length=MAX_ID_CHARS, description="a tool result: the call it answers"
    )

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's request that a local model can honour; ``n`` above 1 is
    named so that a request asking for it is refused rather than answered as if it had
    been honoured; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(default="learnloop", max_length=200)
    messages: list[ChatMessage] = Field(default_factory=list, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    n: int | None = Field(default=None, ge=1, le=1, description="how many answers: only 1")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None = (
        Field(
            default=None,
            description="a string, or up to 4, that ends the answer (not included in it)",
        )
    )
    whole_answer: bool | None = Field(
        default=None,
        description="learnloop: true = no stop at the end of the first paragraph "
        "(default: the server's --whole-answer / --first-paragraph)",
    )
    thread_id: str | None = Field(
        default=None, max_length=64, description="learnloop: continue this stored thread"
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="who asks: the turn is theirs (`learnloop forget --user`); ignored when "
        "an API key names the user [default: local]",
    )
    regen_of: int | None = Field(
        default=None, ge=1, le=2**62, description="learnloop: answer this logged turn again"
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=MAX_TOOLS,
        description='functions the model may call, each {"type": "function", "function": '
        '{"name", "description", "parameters"}}; the client runs them: the answer returns '
        "the calls. Without, the server's own tools (serve --tools) run on the server",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None,
        description='"auto" (the default), "none", "required" or {"type": "function", '
        '"function": {"name"}}; applies to the tools offered (the request\'s, else the '
        "server's)",
    )


def generation_for(request: ChatRequest, default: GenerationConfig) -> GenerationConfig:
    changes: dict[str, Any] = {}
    limit = request.max_completion_tokens or request.max_tokens
    if limit is not None:
        changes["max_new_tokens"] = limit
    if request.temperature is not None:
        changes["temperature"] = request.temperature
    if request.top_p is not None:
        changes["top_p"] = request.top_p
    if request.seed is not None:
        changes["seed"] = request.seed
    if request.stop is not None:
        changes["stop"] = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop)
    if request.whole_answer is not None:
        changes["whole_answer"] = request.whole_answer
    try:
        return replace(default, **changes)
    except ValueError as exc:  # the schema's bounds are the config's: only a safety net
        raise UsageError(str(exc)) from exc


def split_messages(request: ChatRequest) -> tuple[list[Message] | None, str]:
    """(context, new user message). The request's last message is the user's, or a tool
    result (a client sending its tools' results back): then the whole conversation is
    the context and there is no new message (``""``: the model goes on from the
    results). With ``thread_id`` the context is the thread's (None)."""
    if request.regen_of is not None:
        return None, ""
    if not request.messages or request.messages[-1].role not in ("user", "tool"):
        raise UsageError("messages must end with the user's message or with tool results")
    last = request.messages[-1]
    if request.thread_id is not None:
        if last.role == "tool":
            raise UsageError(
                "thread_id continues a thread with a new user message; to send tool results "
                "back, send the whole conversation without thread_id"
            )
        check_message(last.text())  # here, not only in the answer: a refused request stores nothing
        return None, last.text()
    context = context_of(request.messages)
    if last.role == "tool":
        return context, ""
    check_message(last.text())
    return context[:-1], last.text()


def context_of(messages: list[ChatMessage]) -> list[Message]:
    """A request's messages as learnloop's (storage/records.py): ``developer`` is a
    system message, calls keep their ids with arguments as JSON text.

    Invariants, each refused with a UsageError naming the message: an assistant message
    has text or calls; a call's arguments are a JSON object and its id is used once; a
    tool result names the id of a call that an earlier assistant message made; only
    assistant messages have calls."""
    out: list[Message] = []
    called: set[str] = set()
    for n, m in enumerate(messages):
        where = f"messages[{n}] ({m.role})"
        if m.tool_calls and m.role != "assistant":
            raise UsageError(f"{where} has tool_calls; only an assistant message makes calls")
        if m.role == "assistant":
            out.append(_assistant(m, where, called))
        elif m.role == "tool":
            if m.tool_call_id is None or m.tool_call_id not in called:
                raise UsageError(
                    f"{where} is a result for tool call {m.tool_call_id!r}, which no earlier "
                    "assistant message made; a tool message's tool_call_id names the id of "
                    "the call it answers"
                )
            if m.content is None:
                raise UsageError(f"{where} has no content: give the tool's result as text")
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text()})
        else:
            if m.content is None:
                raise UsageError(f"{where} has no content")
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
    return out


def _assistant(m: ChatMessage, where: str, called: set[str]) -> Message:
    if not m.tool_calls:
        if m.content is None:
            raise UsageError(f"{where} has neither content nor tool_calls")
        return {"role": "assistant", "content": m.text()}
    calls = []
    for call in m.tool_calls:
        name = call.function.name
        if chat_format.arguments_object(call.function.arguments) is None:
            raise UsageError(f"{where}: the arguments of its call of {name!r} are no JSON object")
        if call.id in called:
            raise UsageError(f"{where}: the tool call id {call.id!r} is used twice")
        called.add(call.id)
        calls.append(chat_format.tool_call(name, call.function.arguments or "{}", call.id))
    return {"role": "assistant", "content": m.text() or None, "tool_calls": calls}


def prompt_messages(
    state: ServerState, context: list[Message] | None, text: str, thread_id: str | None
) -> list[Message]:
    """The messages the model will see for a new message (none when ``text`` is empty
    and the context ends with tool results): the graph's own
    :func:`~learnloop.agent.graph.conversation`."""
    system = state.agent.model.generation.system_prompt
    resume = bool(not text and context and context[-1]["role"] == "tool")
    new = None if resume else check_message(text)
    return conversation(state.store, thread_id, context, system, new)
