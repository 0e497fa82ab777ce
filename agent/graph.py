"""The agent: a LangGraph ``StateGraph`` of three nodes, built around a model and a store.

    load_history ──▶ respond ──▶ log_turn

- ``load_history`` rebuilds the conversation from the store (thread memory lives in the
  ``turns`` table, so a restarted chat resumes where it stopped); for a ``/regen`` it
  rebuilds the context the original answer saw; a caller that sends the whole
  conversation itself (an OpenAI-style client) gives it as ``context`` instead;
- ``respond`` calls the chat model (token streaming reaches ``graph.stream(...,
  stream_mode="messages")`` through LangChain callbacks);
- ``log_turn`` writes the trajectory: messages seen, rendered prompt, answer, version,
  settings, token counts, timings and the nodes passed through.

No graph is compiled at import time: :func:`build_graph` receives its model and store,
the way production and tests pass them.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from learnloop.storage.records import Message, TurnLog
from learnloop.storage.store import Store


class TurnState(TypedDict, total=False):
    thread_id: str
    user_message: str
    regen_of: int | None  # the turn to answer again, if this is a /regen
    attempt: int  # answers that prompt has had before this one (0 unless a /regen)
    context: list[Message]  # earlier messages sent by the caller, instead of the thread's
    messages: list[Message]  # what the model sees, system first, user message last
    pin: Any  # agent.backend.Pin: answer with this version (default: the current one)
    generation: Any  # agent.config.GenerationConfig for this answer (default: the model's)
    answer: str
    meta: dict[str, Any]  # trajectory details from the model's final chunk
    turn_id: int  # reserved by the caller, or given by the store when logged
    nodes: Annotated[list[str], operator.add]


def _to_langchain(messages: list[Message]) -> list[BaseMessage]:
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
) -> TurnLog:
    """A turn's log from what was asked and the chat model's final metadata (its
    ``response_metadata``, with its ``usage_metadata`` as ``meta["usage"]``; see
    agent/chat_model.py). One mapping for every graph that logs turns (agent/logged.py)."""
    usage = meta.get("usage") or {}
    return TurnLog(
        thread_id=thread_id,
        user_message=user_message,
        messages=messages,
        prompt=meta.get("prompt", ""),
        answer=answer,
        version=meta.get("version", "base"),
        model=meta.get("model", ""),
        settings=meta.get("settings", {}),
        prompt_tokens=int(usage.get("input_tokens", 0)),
        completion_tokens=int(usage.get("output_tokens", 0)),
        first_token_ms=meta.get("first_token_ms"),
        total_ms=float(meta.get("total_ms", 0.0)),
        nodes=nodes,
        regen_of=regen_of,
        interrupted=bool(meta.get("interrupted", False)),
        truncated=bool(meta.get("truncated", False)),
    )


def build_graph(model: BaseChatModel, store: Store, *, system_prompt: str = "") -> Any:
    """Compile the agent graph. Input: ``{"thread_id", "user_message"}`` and optionally
    ``regen_of``, ``context``, ``pin``, ``generation`` and a reserved ``turn_id``; output
    state has ``turn_id``, ``answer`` and ``meta``."""
    from langgraph.graph import END, START, StateGraph

    def load_history(state: TurnState) -> TurnState:
        regen_of = state.get("regen_of")
        if regen_of is not None:  # the very messages the original answer saw
            target = store.get_turn(regen_of)
            return {
                "messages": target.log.messages,
                "user_message": target.log.user_message,
                "regen_of": target.log.regen_of or target.id,
                "attempt": store.answers_to(target.id),
                "nodes": ["load_history"],
            }
        messages = conversation(
            store, state["thread_id"], state.get("context"), system_prompt, state["user_message"]
        )
        return {"messages": messages, "nodes": ["load_history"]}

    def respond(state: TurnState) -> TurnState:
        reply = model.invoke(
            _to_langchain(state["messages"]),
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
