"""``POST /v1/chat/completions``: OpenAI's chat completions over the learnloop agent.

Every answer goes through the same graph as the terminal chat (so it is logged as a
turn and can be rated), pinned on arrival to one version (see ``state.py``). The turn id
is reserved before the answer starts, so a streamed response names its turn and version
in its headers (``X-Learnloop-Turn-Id``, ``X-Learnloop-Version``,
``X-Learnloop-Thread-Id``) and in every chunk; the JSON response has them in its body.

Conversations: an OpenAI client sends the whole conversation each time; it becomes the
context the model sees, and the answer starts a new stored thread. learnloop's own
extensions: ``thread_id`` continues a stored thread (send only the new user message: the
earlier ones come from the thread), and ``regen_of`` answers a logged turn again.

Where an answer ends: ``stop`` (a string or up to 4) ends it before the first stop string,
which is never sent, not even in part (finish_reason "stop"); by default an answer also
ends at its first paragraph unless the message asks for more (the server's
``--whole-answer`` or a request's ``"whole_answer": true`` turns that off; see
agent/config.py).

Bounds: a request's prompt, rendered as the model will see it (system prompt, context or
the thread's history, the new message), must fit the model's context with room for
``max_tokens``, and the server's ``--max-prompt-tokens``. A longer conversation has its
oldest earlier messages left out (never the system prompt nor the new message): the
response says how many in ``X-Learnloop-Trimmed`` and the body's (every chunk's)
``trimmed``, and the logged turn holds what the model saw. A prompt that does not fit
even so is refused with a 400 naming the limit, before anything is stored or generated:
generation is serialised and a long prompt would hold every other client up. A user key
may continue or regenerate only its own threads (another's is a 404).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from learnloop.agent.backend import Pin
from learnloop.agent.config import MAX_STOP_STRINGS, GenerationConfig
from learnloop.agent.graph import Fitted, conversation
from learnloop.agent.runtime import (
    MAX_MESSAGE_CHARS,
    Answer,
    UsageError,
    check_message,
    new_thread_id,
)
from learnloop.agent.server.service import visible_thread, visible_turn
from learnloop.agent.server.state import ServerState
from learnloop.storage.records import Message

MAX_MESSAGES = 200
MAX_TOKENS = 2048
MAX_PROMPT_TOKENS = 4096  # the default of `serve --max-prompt-tokens`
MAX_STOP_CHARS = 200  # a stop string longer than this is no end marker but a mistake

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] = Field(max_length=MAX_MESSAGE_CHARS)

    def text(self) -> str:
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
    regen_of: int | None = Field(
        default=None, ge=1, le=2**62, description="learnloop: answer this logged turn again"
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
    """(context, new user message): the request's last message must be the user's."""
    if request.regen_of is not None:
        return None, ""
    if not request.messages or request.messages[-1].role != "user":
        raise UsageError("messages must end with the user's message")
    text = request.messages[-1].text()
    check_message(text)  # here, not only in the answer: a refused request stores nothing
    if request.thread_id is not None:
        return None, text  # the thread's stored history is the context
    roles = {"developer": "system"}
    context: list[Message] = [
        {"role": roles.get(m.role, m.role), "content": m.text()} for m in request.messages[:-1]
    ]
    return context, text


def prompt_messages(
    state: ServerState, context: list[Message] | None, text: str, thread_id: str | None
) -> list[Message]:
    """The messages the model will see for a new message: the graph's own
    :func:`~learnloop.agent.graph.conversation`."""
    system = state.agent.model.generation.system_prompt
    return conversation(state.store, thread_id, context, system, check_message(text))


class Prepared:
    """A request checked and pinned, its turn id reserved: ready to answer.

    ``owner``: the key user whose thread a new conversation becomes (None: the
    operator's); ``sees``: whose threads the caller may continue or regenerate (None:
    everyone's). Every check comes before the thread and the turn id are made, so a
    refused request leaves nothing behind."""

    def __init__(
        self,
        state: ServerState,
        request: ChatRequest,
        default: GenerationConfig,
        *,
        owner: str | None = None,
        sees: str | None = None,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    ):
        self.state = state
        context, self.text = split_messages(request)
        self.context = context
        store = state.store
        self.pin: Pin = state.pin(request.model)
        self.generation = generation_for(request, default)
        self.regen_of = request.regen_of
        thread_id: str | None = None
        if self.regen_of is not None:
            turn = store.get_turn(visible_turn(store, self.regen_of, sees))  # 404 if unknown
            thread_id, messages = turn.log.thread_id, turn.log.messages
        else:
            if request.thread_id is not None:
                thread_id = visible_thread(store, request.thread_id, sees)
            messages = prompt_messages(state, context, self.text, thread_id)
        # fitted here, not only in the graph: the headers say what was left out, and a
        # prompt that cannot fit is refused before anything is stored
        self.fitted: Fitted = state.agent.fit(messages, self.generation, max_prompt_tokens)
        self.thread_id = thread_id or store.create_owned_thread(new_thread_id(), owner)
        self.turn_id = store.new_turn_id()
        self.created = int(time.time())

    def headers(self) -> dict[str, str]:
        return {
            "X-Learnloop-Turn-Id": str(self.turn_id),
            "X-Learnloop-Version": self.pin.version,
            "X-Learnloop-Thread-Id": self.thread_id,
            "X-Learnloop-Trimmed": str(self.fitted.trimmed),
        }

    def ask(self, on_token: Any = None) -> Answer:
        return self.state.agent.ask(
            self.text,
            thread_id=None if self.regen_of is not None else self.thread_id,
            regen_of=self.regen_of,
            on_token=on_token,
            context=self.context,
            pin=self.pin,
            generation=self.generation,
            turn_id=self.turn_id,
            fitted=self.fitted,
        )

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.turn_id}",
            "object": kind,
            "created": self.created,
            "model": self.pin.version,
            "system_fingerprint": f"learnloop-{self.pin.version}",
            "turn_id": self.turn_id,
            "version": self.pin.version,
            "thread_id": self.thread_id,
            "trimmed": self.fitted.trimmed,  # earlier messages left out of the prompt
        }

    def completion(self, answer: Answer) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.answer},
                    "finish_reason": finish_reason(answer),
                    "logprobs": None,
                }
            ],
            "usage": usage(answer),
            "stopped_by": answer.stopped_by,
        }

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice], **extra}


def finish_reason(answer: Answer) -> str:
    return "length" if answer.truncated else "stop"


def usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def stream_answer(prepared: Prepared, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks as tokens arrive, a final chunk with
    the finish reason (and usage when asked), then ``[DONE]``. The answer is generated in
    its own thread. A client that goes away (the web page's Stop) stops it: the next
    token of this answer interrupts generation, and the partial answer is logged as an
    interrupted turn, as Ctrl-C does in the terminal.

    Why at a token of this answer, not at once: the backend stops whichever answer it is
    generating, and answers wait their turn, so only while this one's tokens arrive is
    it surely this one. (One that finished generating meanwhile is logged whole.)"""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    gone = threading.Event()  # the client went away before the end
    stopped = threading.Event()  # its answer was interrupted: once, never a later answer

    def put(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def on_token(text: str) -> None:
        if gone.is_set() and not stopped.is_set():
            stopped.set()
            prepared.state.agent.backend.interrupt()
        put("token", text)

    def work() -> None:
        try:
            put("done", prepared.ask(on_token=on_token))
        except Exception as exc:  # reported in the stream: the status line is already sent
            put("error", exc)

    threading.Thread(target=work, daemon=True).start()
    finished = False
    try:
        yield _sse(prepared.chunk({"role": "assistant", "content": ""}))
        while True:
            kind, value = await queue.get()
            if kind == "token":
                yield _sse(prepared.chunk({"content": value}))
            elif kind == "error":
                finished = True
                yield _sse({"error": {"message": str(value), "type": "server_error"}})
                return
            else:
                finished = True
                extra = {"usage": usage(value)} if include_usage else {}
                extra["stopped_by"] = value.stopped_by
                yield _sse(prepared.chunk({}, finish_reason(value), **extra))
                yield _sse("[DONE]")
                return
    finally:  # cancelled (the client disconnected) or closed early
        if not finished:
            gone.set()
