"""The agent: a LangGraph ``StateGraph`` of three nodes, built around a model and a store.

    load_history ──▶ respond ──▶ log_turn

- ``load_history`` rebuilds the conversation from the store (thread memory lives in the
  ``turns`` table, so a restarted chat resumes where it stopped); for a ``/regen`` it
  rebuilds the context the original answer saw; a caller that sends the whole
  conversation itself (an OpenAI-style client) gives it as ``context`` instead. Then it
  fits the prompt into the model's context (:func:`fit_prompt`): the oldest earlier
  messages are left out until prompt and answer fit, never the system prompt nor the new
  message; the turn logs the messages the model saw and how many were left out;
- ``respond`` calls the chat model (token streaming reaches ``graph.stream(...,
  stream_mode="messages")`` through LangChain callbacks);
- ``log_turn`` writes the trajectory: messages seen, rendered prompt, answer, version,
  settings, token counts, timings and the nodes passed through.

No graph is compiled at import time: :func:`build_graph` receives its model and store,
the way production and tests pass them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from learnloop.storage.errors import UsageError
from learnloop.storage.records import Message, TurnLog
from learnloop.storage.store import Store


class TurnState(TypedDict, total=False):
    thread_id: str
    user_message: str
    regen_of: int | None  # the turn to answer again, if this is a /regen
    attempt: int  # answers that prompt has had before this one (0 unless a /regen)
    context: list[Message]  # earlier messages sent by the caller, instead of the thread's
    messages: list[Message]  # what the model sees, system first, user message last
    fitted: Any  # the Fitted prompt: given by a caller that made it first (the server)
    max_prompt_tokens: int | None  # a bound below the model's context (the server's)
    trimmed: int  # earlier messages left out so that the prompt fits
    pin: Any  # agent.backend.Pin: answer with this version (default: the current one)
    generation: Any  # agent.config.GenerationConfig for this answer (default: the model's)
    answer: str
    meta: dict[str, Any]  # trajectory details from the model's final chunk
    turn_id: int  # reserved by the caller, or given by the store when logged
    nodes: Annotated[list[str], operator.add]


@dataclass(frozen=True)
class PromptBudget:
    """The most tokens a prompt may have, and what sets that bound (for messages)."""

    tokens: int
    by: str  # "the model's context of 1024 tokens (128 of them for the answer)"


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits its budget: ``trimmed`` earlier messages were left out."""

    messages: list[Message]
    tokens: int
    budget: PromptBudget
    trimmed: int = 0

    def note(self) -> str:
        """One line for the person asking, when something was left out."""
        return (
            f"the conversation is longer than {self.budget.by} allows: its {self.trimmed} "
            f"oldest message(s) were left out of this answer's prompt ({self.tokens} tokens)"
        )


class PromptTooLong(UsageError):
    """A prompt that does not fit even with every earlier message left out."""

    def __init__(self, tokens: int, budget: PromptBudget) -> None:
        self.tokens, self.limit = tokens, budget.tokens
        super().__init__(
            f"the prompt is {tokens} tokens even without earlier messages; at most "
            f"{budget.tokens} fit, set by {budget.by}: send a shorter message"
        )


def prompt_budget(
    context_tokens: int, max_new_tokens: int, max_prompt_tokens: int | None = None
) -> PromptBudget:
    """The budget of a prompt: the model's context less the room kept for the answer, or
    the caller's own bound when that is smaller. The room kept is ``max_new_tokens``, at
    most half the context: a limit meant as "no limit" (``--max-new-tokens 100000``, an
    answer stopped by Ctrl-C) leaves room for the prompt all the same."""
    answer = min(max_new_tokens, context_tokens // 2)
    room = context_tokens - answer
    if max_prompt_tokens is not None and max_prompt_tokens < room:
        by = f"this server's `learnloop serve --max-prompt-tokens` ({max_prompt_tokens})"
        return PromptBudget(max_prompt_tokens, by)
    by = f"the model's context of {context_tokens} tokens ({answer} of them for the answer)"
    return PromptBudget(room, by)


def fit_prompt(
    messages: list[Message], count: Callable[[list[Message]], int], budget: PromptBudget
) -> Fitted:
    """``messages`` with the oldest earlier ones left out until ``count`` (the rendered
    prompt's tokens) is within ``budget``.

    Invariants: the leading system message(s) and the last message (the new one) are
    always kept; what is kept of the rest is its newest part, starting at a user message
    when there is one (whole turns, not an answer without its question); a prompt that
    does not fit with nothing else kept raises :class:`PromptTooLong`. The count is
    monotonic in the messages kept, so a binary search renders about log2(n) prompts."""
    total = count(messages)
    if total <= budget.tokens:
        return Fitted(messages, total, budget)
    head = 0
    while head < len(messages) - 1 and messages[head]["role"] == "system":
        head += 1
    fixed, middle, last = messages[:head], messages[head:-1], messages[-1:]

    def kept(start: int) -> list[Message]:
        return [*fixed, *middle[start:], *last]

    turn_starts = [i for i, m in enumerate(middle) if m["role"] == "user"]
    starts = [*(turn_starts or range(len(middle))), len(middle)]
    least = count(kept(len(middle)))
    if least > budget.tokens:
        raise PromptTooLong(least, budget)
    low, high, best = 0, len(starts) - 1, (len(middle), least)  # starts[high] fits
    while low < high:  # the first start that fits; those after it keep less
        mid = (low + high) // 2
        tokens = count(kept(starts[mid]))
        if tokens <= budget.tokens:
            high, best = mid, (starts[mid], tokens)
        else:
            low = mid + 1
    start, tokens = best
    return Fitted(kept(start), tokens, budget, trimmed=start)


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


def conversation(
    store: Store,
    thread_id: str | None,
    context: list[Message] | None,
    system_prompt: str,
    text: str,
) -> list[Message]:
    """What the model sees for a new message ``text``: the system prompt unless the
    context starts with one, the context (the caller's, else the thread's stored
    history) and the new message. The server counts a prompt's tokens from this too."""
    if context is None:
        context = []
        for turn in store.thread_history(thread_id) if thread_id is not None else []:
            context.append({"role": "user", "content": turn.log.user_message})
            context.append({"role": "assistant", "content": turn.log.answer})
    messages: list[Message] = []
    if system_prompt and not (context and context[0]["role"] == "system"):
        messages.append({"role": "system", "content": system_prompt})
    return [*messages, *context, {"role": "user", "content": text}]


def turn_log(
    meta: dict[str, Any],
    *,
    thread_id: str,
    user_message: str,
    messages: list[Message],
    answer: str,
    nodes: list[str],
    regen_of: int | None = None,
    trimmed: int = 0,
) -> TurnLog:
    """A turn's log from what was asked and the chat model's final metadata (its
    ``response_metadata``, with its ``usage_metadata`` as ``meta["usage"]``; see
    agent/chat_model.py). One mapping for every graph that logs turns (agent/logged.py).

    ``messages`` are those the model saw (fitted). Two facts about the answer ride in
    its ``settings``, beside the settings that produced it: ``stopped_by`` ("stop": a stop
    string; "paragraph": the end of the first paragraph) when one ended it, and
    ``trimmed``, the earlier messages left out, when some were."""
    usage = meta.get("usage") or {}
    settings = dict(meta.get("settings", {}))
    if meta.get("stopped_by"):
        settings["stopped_by"] = meta["stopped_by"]
    if trimmed:
        settings["trimmed"] = trimmed
    return TurnLog(
        thread_id=thread_id,
        user_message=user_message,
        messages=messages,
        prompt=meta.get("prompt", ""),
        answer=answer,
        version=meta.get("version", "base"),
        model=meta.get("model", ""),
        settings=settings,
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        first_token_ms=meta.get("first_token_ms"),
        total_ms=float(meta.get("total_ms", 0.0)),
        nodes=nodes,
        regen_of=regen_of,
        interrupted=bool(meta.get("interrupted", False)),
        truncated=bool(meta.get("truncated", False)),
    )


Fit = Callable[[list[Message], Any, "int | None"], Fitted]  # messages, generation, bound


def build_graph(
    model: BaseChatModel, store: Store, *, system_prompt: str = "", fit: Fit | None = None
) -> Any:
    """Compile the agent graph. Input: ``{"thread_id", "user_message"}`` and optionally
    ``regen_of``, ``context``, ``pin``, ``generation``, ``max_prompt_tokens``, a
    ``fitted`` prompt and a reserved ``turn_id``; output state has ``turn_id``, ``answer``,
    ``meta`` and ``trimmed``. ``fit`` makes a prompt fit the model (Agent.fit); without
    it, the messages go to the model as they are."""
    from langgraph.graph import END, START, StateGraph

    def fitted(messages: list[Message], state: TurnState) -> TurnState:
        given = state.get("fitted")
        if given is not None:
            return {"messages": given.messages, "trimmed": given.trimmed}
        if fit is None:
            return {"messages": messages, "trimmed": 0}
        made = fit(messages, state.get("generation"), state.get("max_prompt_tokens"))
        return {"messages": made.messages, "trimmed": made.trimmed, "fitted": made}

    def load_history(state: TurnState) -> TurnState:
        regen_of = state.get("regen_of")
        if regen_of is not None:  # the very messages the original answer saw
            target = store.get_turn(regen_of)
            return {
                **fitted(target.log.messages, state),
                "user_message": target.log.user_message,
                "regen_of": target.log.regen_of or target.id,
                "attempt": store.answers_to(target.id),
                "nodes": ["load_history"],
            }
        messages = conversation(
            store, state["thread_id"], state.get("context"), system_prompt, state["user_message"]
        )
        return {**fitted(messages, state), "nodes": ["load_history"]}

    def respond(state: TurnState) -> TurnState:
        reply = model.invoke(
            to_langchain(state["messages"]),
            pin=state.get("pin"),
            generation=state.get("generation"),
            attempt=state.get("attempt", 0),
        )
        meta = dict(reply.response_metadata)
        meta["usage"] = dict(getattr(reply, "usage_metadata", None) or {})
        return {"answer": str(reply.content), "meta": meta, "nodes": ["respond"]}

    def log_turn(state: TurnState) -> TurnState:
        log = turn_log(
            state["meta"],
            thread_id=state["thread_id"],
            user_message=state["user_message"],
            messages=state["messages"],
            answer=state["answer"],
            nodes=[*state.get("nodes", []), "log_turn"],
            regen_of=state.get("regen_of"),
            trimmed=state.get("trimmed", 0),
        )
        turn_id = store.add_turn(log, turn_id=state.get("turn_id"))
        return {"turn_id": turn_id, "nodes": ["log_turn"]}

    graph = StateGraph(TurnState)
    graph.add_node("load_history", load_history)
    graph.add_node("respond", respond)
    graph.add_node("log_turn", log_turn)
    graph.add_edge(START, "load_history")
    graph.add_edge("load_history", "respond")
    graph.add_edge("respond", "log_turn")
    graph.add_edge("log_turn", END)
    return graph.compile()
