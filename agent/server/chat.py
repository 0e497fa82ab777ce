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

Tools, as OpenAI's API has them: ``tools`` (function schemas) sent by a client are the
client's: the model is offered them and the answer returns its calls
(``message.tool_calls``, ``finish_reason: "tool_calls"``; streamed as tool-call deltas);
the client runs them and sends the results back as ``tool`` messages after the
assistant message that made the calls, with no new user message: the model goes on from
them. Without request tools, the operator's (``serve --tools``) are offered and run here,
inside the graph: the answer is the final text, and ``learnloop_steps`` (every chunk of a
stream: ``learnloop_step``, one per call and per result as it happens) says what ran.
``tool_choice`` (``auto``, ``none``, ``required``, a named function) applies to whichever
tools are offered. Every check of tools, calls and results comes before anything is
stored, and names the problem (400).

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
from typing import Any

from learnloop.agent.backend import Pin
from learnloop.agent.config import GenerationConfig
from learnloop.agent.fitting import Fitted
from learnloop.agent.report import answer_data, step_view
from learnloop.agent.runtime import (
    Answer,
    new_thread_id,
)
from learnloop.agent.server.chat_request import (
    MAX_PROMPT_TOKENS,
    ChatRequest,
    generation_for,
    prompt_messages,
    split_messages,
)
from learnloop.agent.server.service import visible_thread, visible_turn
from learnloop.agent.server.state import ServerState
from learnloop.agent.server.tool_requests import check_tool_choice, check_tools
from learnloop.learning import chat_format
from learnloop.storage.records import LOCAL_USER


class Prepared:
    """A request checked and pinned, its turn id reserved: ready to answer.

    ``owner``: the key user whose thread a new conversation becomes (None: the
    operator's), and whose turn this is (else the request's ``user``, else local);
    ``sees``: whose threads the caller may continue or regenerate (None: everyone's).
    Every check comes before the thread and the turn id are made, so a
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
        # the client's own tools (None: the server's are offered, and run here)
        self.tools = check_tools(request.tools)
        offered = self.tools if self.tools is not None else state.agent.toolbox.schemas()
        self.tool_choice = check_tool_choice(request.tool_choice, offered)
        shown, _ = chat_format.choose(self.tool_choice, offered)  # what the prompt renders
        self.regen_of = request.regen_of
        self.user = owner or request.user or LOCAL_USER
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
        self.fitted: Fitted = state.agent.fit(messages, self.generation, max_prompt_tokens, shown)
        state.agent.backend.check_room()  # a busy server says so (503) before storing anything
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

    def ask(self, on_token: Any = None, on_step: Any = None) -> Answer:
        return self.state.agent.ask(
            self.text,
            thread_id=None if self.regen_of is not None else self.thread_id,
            regen_of=self.regen_of,
            on_token=on_token,
            on_step=on_step,
            tools=self.tools,
            tool_choice=self.tool_choice,
            context=self.context,
            pin=self.pin,
            generation=self.generation,
            turn_id=self.turn_id,
            fitted=self.fitted,
            user=self.user,
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
        message: dict[str, Any] = {"role": "assistant", "content": answer.answer}
        if answer.tool_calls:  # the client's to run; no text is null, as OpenAI's
            message = {**message, "content": answer.answer or None, "tool_calls": answer.tool_calls}
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason(answer),
                    "logprobs": None,
                }
            ],
            "usage": usage(answer),
            "stopped_by": answer.stopped_by,
            **steps_of(answer),
        }

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice], **extra}


def finish_reason(answer: Answer) -> str:
    if answer.tool_calls:
        return "tool_calls"
    return "length" if answer.truncated else "stop"


def steps_of(answer: Answer) -> dict[str, Any]:
    """learnloop's extension: ``learnloop_steps``, the turn's model and tool steps as
    ``learnloop ask --json`` shows them, when it called tools (else nothing)."""
    steps = answer_data(answer).get("steps")
    return {"learnloop_steps": steps} if steps else {}


def step_event(event: dict[str, Any]) -> dict[str, Any]:
    """A step of the graph as it happens (agent/graph.py's custom stream), for a
    stream's ``learnloop_step``: a call as the model made it, a result as step_view."""
    if "tool_result" in event:
        return {"tool_result": step_view(event["tool_result"])}
    return {"tool_call": event["tool_call"]}


def call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's streamed tool calls: one delta per call, whole (id, name and all of its
    arguments at once), which clients accumulate by ``index`` as they do pieces."""
    return [{"tool_calls": [{"index": i, **call}]} for i, call in enumerate(calls)]


def usage(answer: Answer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def stream_answer(prepared: Prepared, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks as tokens arrive (and, as the
    server's own tools run, a ``learnloop_step`` chunk per call and per result), the
    calls left for the client as tool-call deltas, a final chunk with the finish reason
    (and usage when asked; ``learnloop_steps`` when tools were called), then ``[DONE]``.
    The answer is generated in its own thread. A client that goes away (the web page's
    Stop) stops it: the next token of this answer interrupts generation, and the partial
    answer is logged as an interrupted turn, as Ctrl-C does in the terminal.

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

    def on_step(event: dict[str, Any]) -> None:
        put("step", step_event(event))

    def work() -> None:
        try:
            put("done", prepared.ask(on_token=on_token, on_step=on_step))
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
            elif kind == "step":  # an extra chunk with an empty delta: OpenAI clients skip it
                yield _sse(prepared.chunk({}, learnloop_step=value))
            elif kind == "error":
                finished = True
                yield _sse({"error": {"message": str(value), "type": "server_error"}})
                return
            else:
                finished = True
                for delta in call_deltas(value.tool_calls):
                    yield _sse(prepared.chunk(delta))
                extra = {"usage": usage(value)} if include_usage else {}
                extra["stopped_by"] = value.stopped_by
                extra.update(steps_of(value))
                yield _sse(prepared.chunk({}, finish_reason(value), **extra))
                yield _sse("[DONE]")
                return
    finally:  # cancelled (the client disconnected) or closed early
        if not finished:
            gone.set()
