"""The running agent: store + backend + graph, and the version check before each answer.

Both the REPL and the one-shot ``ask`` go through :class:`Agent`, so every answer is
produced by the graph, logged, and given by the version that is active at that moment.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from learnloop.agent.backend import Backend, Pin
from learnloop.agent.chat_model import LocalChatModel, last_user_text
from learnloop.agent.config import GenerationConfig, LoopLimits
from learnloop.agent.fitting import Fitted, fit_prompt, prompt_budget
from learnloop.agent.graph import CAPS, build_graph
from learnloop.learning.adapters import AdapterDamaged, fall_back, trusted_checksum
from learnloop.learning.models import same_base, trained_on
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.storage.errors import NotFound, UsageError
from learnloop.storage.records import Message, TurnLog
from learnloop.storage.store import Store

MAX_MESSAGE_CHARS = 16_000


@dataclass(frozen=True)
class Answer:
    turn_id: int
    thread_id: str
    answer: str
    version: str
    interrupted: bool
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stopped_by: str | None = None  # "stop", "paragraph", "step cap" or "time cap"
    trimmed: int = 0  # earlier messages left out of its prompt so that it fitted
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # the caller's to run
    steps: list[dict[str, Any]] = field(default_factory=list)  # TurnLog.steps

    @classmethod
    def of(cls, turn_id: int, log: TurnLog, calls: list[dict[str, Any]]) -> Answer:
        """The answer a logged turn gave; ``calls``: those left for the caller to run."""
        return cls(
            turn_id=turn_id,
            thread_id=log.thread_id,
            answer=log.answer,
            version=log.version,
            interrupted=log.interrupted,
            truncated=log.truncated,
            prompt_tokens=log.prompt_tokens,
            completion_tokens=log.completion_tokens,
            stopped_by=log.settings.get("stopped_by"),
            trimmed=int(log.settings.get("trimmed", 0)),
            tool_calls=calls,
            steps=log.steps,
        )


@dataclass(frozen=True)
class Switch:
    version: str
    seconds: float


def new_thread_id() -> str:
    return secrets.token_hex(4)


def say_on_stderr(text: str) -> None:
    print(f"learnloop: {text}", file=sys.stderr, flush=True)


def check_message(text: str) -> str:
    if not text or not text.strip():
        raise UsageError("the message is empty; type something to ask")
    if len(text) > MAX_MESSAGE_CHARS:
        raise UsageError(f"the message is {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}")
    return text.strip()


class Agent:
    """One loaded model answering through the graph, logging into ``store``."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        generation: GenerationConfig,
        warn: Callable[[str], None] = say_on_stderr,
        toolbox: Toolbox = NO_TOOLS,
        limits: LoopLimits | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.warn = warn  # one line about a fault the agent worked around
        self.toolbox = toolbox  # the operator's tools (--tools), run inside the graph
        self.model = LocalChatModel(backend=backend, generation=generation)
        self.graph = build_graph(
            self.model,
            store,
            system_prompt=generation.system_prompt,
            fit=self.fit,
            toolbox=toolbox,
            limits=limits,
        )

    def fit(
        self,
        messages: list[Message],
        generation: GenerationConfig | None = None,
        max_prompt_tokens: int | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Fitted:
        """``messages`` (with ``tools`` offered) fitted into the model's context with room
        for the answer (and within ``max_prompt_tokens`` when given): agent/fitting.py."""
        generation = generation or self.model.generation
        budget = prompt_budget(
            self.backend.context_tokens, generation.max_new_tokens, max_prompt_tokens
        )
        return fit_prompt(messages, lambda m: self.backend.prompt_tokens(m, tools), budget)

    def sync_version(self) -> Switch | None:
        """Load the active version's adapter if it is not the one loaded. A damaged
        adapter never stops the agent: it says so in one line, and the newest intact
        version (or the base) becomes active, recorded in the history, and answers."""
        active = self.store.active_version()
        skip: set[str] = set()
        while active != self.backend.version:
            try:
                return Switch(active, self._switch_to(active))
            except AdapterDamaged as damaged:
                skip.add(damaged.version)
                chosen = fall_back(
                    self.store,
                    self.backend.model_name,
                    damaged,
                    skip=frozenset(skip),
                    fingerprint=self.backend.fingerprint,
                )
                active = chosen.id if chosen is not None else "base"
                self.warn(f"{damaged}; answering with {active} instead (see `learnloop history`)")
        return None

    def _switch_to(self, active: str) -> float:
        path = checksum = None
        if active != "base":
            version = self.store.get_version(active)
            if not same_base(version, self.backend.model_name, self.backend.fingerprint):
                raise UsageError(
                    f"the active version {active} was trained on "
                    f"{trained_on(version, self.backend.model_name)}, "
                    f"not on {self.backend.model_name}; run with that --model"
                )
            path, checksum = version.adapter_path, trusted_checksum(self.store, version)
        return self.backend.switch(active, path, checksum)

    def check_thread(self, thread_id: str) -> str:
        if not self.store.thread_exists(thread_id):
            raise NotFound(f"no thread {thread_id!r}; `learnloop log` shows thread ids")
        return thread_id

    @contextmanager
    def _ctrl_c_stops_answer(self) -> Iterator[None]:
        """While answering, Ctrl-C ends the answer early instead of raising: the model runs
        in a LangGraph worker thread, so the partial answer is finished and logged as an
        interrupted turn. Only the main thread can own signal handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda *_: self.backend.interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def ask(
        self,
        text: str,
        *,
        thread_id: str | None = None,
        regen_of: int | None = None,
        on_token: Callable[[str], Any] | None = None,
        on_step: Callable[[dict[str, Any]], Any] | None = None,
        context: list[Message] | None = None,
        pin: Pin | None = None,
        generation: GenerationConfig | None = None,
        turn_id: int | None = None,
        fitted: Fitted | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        user: str | None = None,
    ) -> Answer:
        """Answer ``text`` (or answer turn ``regen_of`` again) in a thread; log the turn.

        ``context`` replaces the thread's history with the caller's own earlier messages;
        ``pin`` names the version that must answer; ``turn_id`` is one reserved with
        ``store.new_turn_id()``; ``fitted`` is the prompt the caller fitted already (see
        :meth:`fit`), which then is what the model sees; a ``context`` that ends with tool
        results and no ``text`` is gone on from (an API client sending its tools'
        results back); ``tools`` are the caller's own
        (its calls come back in the Answer instead of the operator's tools being
        offered and run), ``tool_choice`` as learning/chat_format.py :func:`choose`;
        ``user`` is who asks (default: local).
        ``on_step`` gets ``{"tool_call": ...}`` and ``{"tool_result": ...}`` as the
        operator's tools run. When this call fits the prompt itself and leaves messages
        out, it says so in one line (``warn``) before the answer."""
        state: dict[str, Any] = {"pin": pin, "generation": generation, "turn_id": turn_id}
        if user is not None:
            state["user"] = user
        if fitted is not None:
            state["fitted"] = fitted
        if tools is not None:
            state["tools"] = tools
        if tool_choice is not None:
            state["tool_choice"] = tool_choice
        if regen_of is not None:
            thread_id = self.store.get_turn(regen_of).log.thread_id
            state["regen_of"] = regen_of
        elif context and context[-1]["role"] == "tool" and not text:
            state.update(context=context, resume=True, user_message=last_user_text(context))
        else:
            state["user_message"] = check_message(text)
            if context is not None:
                state["context"] = context
        if regen_of is None and thread_id is not None:
            self.check_thread(thread_id)
        state["thread_id"] = thread_id or new_thread_id()
        final: dict[str, Any] = {}
        noted = streamed = False
        modes = ["messages", "values", "custom"]
        with self._ctrl_c_stops_answer():
            for mode, data in self.graph.stream(state, stream_mode=modes):
                if mode == "messages":
                    chunk = data[0]
                    if on_token and chunk.content:
                        on_token(str(chunk.content))
                        streamed = True
                elif mode == "custom":
                    if on_step:
                        on_step(data)
                else:
                    made = data.get("fitted")
                    if fitted is None and made is not None and made.trimmed and not noted:
                        self.warn(made.note())  # once, before the answer streams
                        noted = True
                    final = data
        answer = Answer.of(final["turn_id"], final["log"], final.get("calls") or [])
        if on_token and answer.stopped_by in CAPS:  # the graph wrote it: no model streamed it
            on_token(("\n\n" if streamed else "") + answer.answer)
        return answer


def load_agent(
    store: Store,
    model_spec: str | None,
    generation: GenerationConfig,
    toolbox: Toolbox = NO_TOOLS,
    limits: LoopLimits | None = None,
) -> Agent:
    """Resolve the model (converting a GGUF once), load it, and load the active version."""
    from learnloop.agent.transformers_engine import TransformersBackend
    from learnloop.learning.models import resolve_model

    resolved = resolve_model(model_spec)
    backend = TransformersBackend(resolved.path, resolved.name, fingerprint=resolved.fingerprint)
    agent = Agent(store, backend, generation, toolbox=toolbox, limits=limits)
    agent.sync_version()
    return agent
