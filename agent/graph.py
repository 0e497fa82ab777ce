"""The agent: a LangGraph ``StateGraph`` that loops between the model and its tools.

    load_history ──▶ model ──▶ tools ──▶ model ──▶ ... ──▶ log_turn
                       └────────▶ (a final answer) ────────▶ log_turn
                       └──▶ capped (step or time cap reached) ──▶ log_turn

- ``load_history`` rebuilds the conversation from the store (thread memory lives in the
  ``turns`` table, so a restarted chat resumes where it stopped); for a ``/regen`` it
  rebuilds the context the original answer saw; a caller that sends the whole
  conversation itself (an OpenAI-style client) gives it as ``context`` instead. Then it
  fits the prompt into the model's context (agent/fitting.py): the oldest earlier
  messages are left out until prompt and answer fit;
- ``model`` calls the chat model (token streaming reaches ``graph.stream(...,
  stream_mode="messages")`` through LangChain callbacks) with the tools offered;
- ``tools`` runs the calls the model made (learning/toolbox.py): an error, a timeout, an
  unknown tool or bad arguments come back to the model as a tool result that says so.
  Each call and result is also written to ``stream_mode="custom"`` as it happens;
- ``capped`` ends a turn that reached ``max_steps`` model calls or ``turn_seconds``
  without a final answer, with an answer that says so;
- ``log_turn`` writes the trajectory: messages seen, every step (rendered prompt, output,
  version, timings; each tool call and result), the answer, settings and token counts.

Tools are either the operator's (``--tools``: run here, in ``tools``) or a caller's own
(an API request's ``tools``: the client runs them, so a turn that calls one ends there,
its calls returned). No graph is compiled at import time: :func:`build_graph` receives
its model, store and toolbox, the way production and tests pass them.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel

from learnloop.agent.chat_model import to_langchain
from learnloop.agent.config import LoopLimits
from learnloop.agent.fitting import Fitted
from learnloop.learning.toolbox import NO_TOOLS, Toolbox
from learnloop.storage.records import LOCAL_USER, Message, TurnLog
from learnloop.storage.store import Store


class TurnState(TypedDict, total=False):
    thread_id: str
    user_message: str
    user: str  # who asks (storage/records.py TurnLog.user_name; default: local)
    regen_of: int | None  # the turn to answer again, if this is a /regen
    attempt: int  # answers that prompt has had before this one (0 unless a /regen)
    context: list[Message]  # earlier messages sent by the caller, instead of the thread's
    resume: bool  # the context ends with tool results: go on from them, no new message
    messages: list[Message]  # what the first model call sees, system first, user last
    fitted: Any  # the Fitted prompt: given by a caller that made it first (the server)
    max_prompt_tokens: int | None  # a bound below the model's context (the server's)
    trimmed: int  # earlier messages left out so that the prompt fits
    pin: Any  # agent.backend.Pin: answer with this version (default: the current one)
    generation: Any  # agent.config.GenerationConfig for this answer (default: the model's)
    tools: list[dict[str, Any]] | None  # a caller's own tool schemas (None: the operator's)
    tool_choice: Any  # "auto", "none", "required" or a function (learning/chat_format.py)
    convo: list[Message]  # ``messages`` and the trajectory so far: what the model sees next
    calls: list[dict[str, Any]]  # the last model step's tool calls
    started: float  # time.perf_counter() when the turn began
    steps: Annotated[list[dict[str, Any]], operator.add]
    answer: str
    meta: dict[str, Any]  # the last model call's details (agent/chat_model.py)
    ended_by: str | None  # "step cap" or "time cap" when a cap ended the turn
    log: TurnLog  # what log_turn stored
    turn_id: int  # reserved by the caller, or given by the store when logged
    nodes: Annotated[list[str], operator.add]


def conversation(
    store: Store,
    thread_id: str | None,
    context: list[Message] | None,
    system_prompt: str,
    text: str | None,
) -> list[Message]:
    """What the model sees for a new message ``text``: the system prompt unless the
    context starts with one, the context (the caller's, else the thread's stored
    history: each turn's question and its whole trajectory) and the new message (none
    when ``text`` is None: a caller's context that ends with its tools' results, which
    the model goes on from). The server counts a prompt's tokens from this too."""
    if context is None:
        context = []
        for turn in store.thread_history(thread_id) if thread_id is not None else []:
            context.append({"role": "user", "content": turn.log.user_message})
            context.extend(turn.log.trajectory)
    messages: list[Message] = []
    if system_prompt and not (context and context[0]["role"] == "system"):
        messages.append({"role": "system", "content": system_prompt})
    new = [] if text is None else [{"role": "user", "content": text}]
    return [*messages, *context, *new]


def model_step(meta: dict[str, Any], node: str | None = None) -> dict[str, Any]:
    """One model call as a step of the trajectory (storage/records.py, TurnLog.steps),
    from the chat model's final metadata (with its usage as ``meta["usage"]``)."""
    usage = meta.get("usage") or {}
    return {
        "type": "model",
        "prompt": meta.get("prompt", ""),
        "output": meta.get("output", ""),
        "content": meta.get("content"),
        "tool_calls": meta.get("tool_calls", []),
        "malformed": meta.get("malformed", []),
        "version": meta.get("version", "base"),
        "prompt_tokens": int(usage.get("input_tokens", 0)),
        "completion_tokens": int(usage.get("output_tokens", 0)),
        "first_token_ms": meta.get("first_token_ms"),
        "total_ms": float(meta.get("total_ms", 0.0)),
        "node": node,
    }


def turn_log(
    steps: list[dict[str, Any]],
    last: dict[str, Any],
    *,
    thread_id: str,
    user_message: str,
    messages: list[Message],
    answer: str,
    nodes: list[str],
    total_ms: float | None = None,
    regen_of: int | None = None,
    trimmed: int = 0,
    user_name: str = LOCAL_USER,
) -> TurnLog:
    """A turn's log from its steps (:func:`model_step` and tool steps) and the last model
    call's metadata ``last``. One mapping for every graph that logs turns
    (agent/logged.py).

    ``messages`` are those the first call saw (fitted). The turn's prompt is the first
    call's, its version the last call's (the one that gave the answer), its token counts
    the sums over its calls. A turn of one plain model call stores no steps: it reads back
    exactly as turns did before tools. Facts about the answer ride in its ``settings``:
    ``stopped_by`` ("stop", "paragraph", "step cap", "time cap") when one ended it, and
    ``trimmed``, the earlier messages left out, when some were."""
    calls = [s for s in steps if s["type"] == "model"]
    settings = dict(last.get("settings", {}))
    if last.get("stopped_by"):
        settings["stopped_by"] = last["stopped_by"]
    if trimmed:
        settings["trimmed"] = trimmed
    plain = len(steps) == 1 and not steps[0]["tool_calls"] and not steps[0]["malformed"]
    return TurnLog(
        thread_id=thread_id,
        user_message=user_message,
        messages=messages,
        prompt=calls[0]["prompt"] if calls else "",
        answer=answer,
        version=calls[-1]["version"] if calls else "base",
        model=last.get("model", ""),
        settings=settings,
        prompt_tokens=sum(s["prompt_tokens"] for s in calls),
        completion_tokens=sum(s["completion_tokens"] for s in calls),
        first_token_ms=calls[0]["first_token_ms"] if calls else None,
        total_ms=total_ms if total_ms is not None else sum(s["total_ms"] for s in calls),
        nodes=nodes,
        regen_of=regen_of,
        interrupted=bool(last.get("interrupted", False)),
        truncated=bool(last.get("truncated", False)),
        steps=[] if plain else steps,
        tools=list(last.get("tools") or []),
        user_name=user_name,
    )


CAPS = ("step cap", "time cap")  # what a turn that a cap ended has as `stopped_by`


def cap_note(ended_by: str, limits: LoopLimits) -> str:
    """The answer of a turn a cap ended: what happened and which setting to raise."""
    if ended_by == "step cap":
        cap = f"its cap of {limits.max_steps} model calls (--max-steps)"
    else:
        cap = f"its time cap of {limits.turn_seconds:g} s (--turn-seconds)"
    return f"I stopped before a final answer: this turn reached {cap}."


Fit = Callable[..., Fitted]  # (messages, generation, max_prompt_tokens, tools) -> Fitted


def build_graph(
    model: BaseChatModel,
    store: Store,
    *,
    system_prompt: str = "",
    fit: Fit | None = None,
    toolbox: Toolbox = NO_TOOLS,
    limits: LoopLimits | None = None,
) -> Any:
    """Compile the agent graph. Input: ``{"thread_id", "user_message"}`` and optionally
    ``regen_of``, ``context``, ``pin``, ``generation``, ``max_prompt_tokens``, a
    ``fitted`` prompt, a caller's ``tools`` and ``tool_choice``, and a reserved
    ``turn_id``; output state has ``turn_id``, ``log`` (the stored TurnLog), ``answer``,
    ``calls`` (left for the caller when its own tools were called) and ``trimmed``.
    ``fit`` makes a prompt fit the model (Agent.fit); without it, the messages go to the
    model as they are."""
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    limits = limits or LoopLimits()

    def offered(state: TurnState) -> list[dict[str, Any]] | None:
        own = state.get("tools")
        return own if own is not None else (toolbox.schemas() or None)

    def fitted(messages: list[Message], state: TurnState) -> TurnState:
        made = state.get("fitted")
        if made is None and fit is not None:
            generation, bound = state.get("generation"), state.get("max_prompt_tokens")
            made = fit(messages, generation, bound, offered(state))
        out: TurnState = {"messages": messages, "trimmed": 0, "started": time.perf_counter()}
        if made is not None:
            out = {**out, "messages": made.messages, "trimmed": made.trimmed, "fitted": made}
        return {**out, "convo": out["messages"]}

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
        text = None if state.get("resume") else state["user_message"]
        messages = conversation(
            store, state["thread_id"], state.get("context"), system_prompt, text
        )
        return {**fitted(messages, state), "nodes": ["load_history"]}

    def model_calls(state: TurnState) -> int:
        return sum(1 for s in state.get("steps", []) if s["type"] == "model")

    def call_model(state: TurnState) -> TurnState:
        first = model_calls(state) == 0
        choice = state.get("tool_choice")
        if not first and choice != "none":
            choice = "auto"  # a forced call is made once; then the model answers or calls on
        reply = model.invoke(
            to_langchain(state["convo"]),
            pin=state.get("pin"),
            generation=state.get("generation"),
            attempt=state.get("attempt", 0),
            tools=offered(state),
            tool_choice=choice,
        )
        meta = dict(reply.response_metadata)
        meta["usage"] = dict(getattr(reply, "usage_metadata", None) or {})
        step = model_step(meta, "model")
        said: Message = {"role": "assistant", "content": step["content"]}
        if step["tool_calls"]:
            said["tool_calls"] = step["tool_calls"]
        return {
            "steps": [step],
            "convo": [*state["convo"], said],
            "calls": step["tool_calls"],
            "answer": step["content"] or "",
            "meta": meta,
            "nodes": ["model"],
        }

    def over_time(state: TurnState) -> bool:
        return time.perf_counter() - state["started"] > limits.turn_seconds

    def after_model(state: TurnState) -> str:
        if not state.get("calls") or state.get("tools") is not None:
            return "log_turn"  # a final answer, or calls the caller runs
        if model_calls(state) >= limits.max_steps or over_time(state):
            return "capped"
        return "tools"

    def run_tools(state: TurnState) -> TurnState:
        write = get_stream_writer()
        steps: list[dict[str, Any]] = []
        results: list[Message] = []
        for call in state["calls"]:
            name, arguments = call["function"]["name"], call["function"]["arguments"]
            write({"tool_call": call})
            result = toolbox.run(name, arguments, limits.tool_timeout)
            step = {
                "type": "tool",
                "tool_call_id": call["id"],
                "name": name,
                "arguments": arguments,
                "content": result.content,
                "error": result.error,
                "ms": result.ms,
            }
            write({"tool_result": step})
            steps.append(step)
            results.append({"role": "tool", "tool_call_id": call["id"], "content": result.content})
        return {"steps": steps, "convo": [*state["convo"], *results], "nodes": ["tools"]}

    def after_tools(state: TurnState) -> str:
        return "capped" if over_time(state) else "model"

    def capped(state: TurnState) -> TurnState:
        ended_by = "step cap" if model_calls(state) >= limits.max_steps else "time cap"
        meta = {**state["meta"], "stopped_by": ended_by}
        return {
            "answer": cap_note(ended_by, limits),
            "meta": meta,
            "ended_by": ended_by,
            "calls": [],
            "nodes": ["capped"],
        }

    def log_turn(state: TurnState) -> TurnState:
        log = turn_log(
            state["steps"],
            state["meta"],
            thread_id=state["thread_id"],
            user_message=state["user_message"],
            messages=state["messages"],
            answer=state["answer"],
            nodes=[*state.get("nodes", []), "log_turn"],
            total_ms=(time.perf_counter() - state["started"]) * 1000,
            regen_of=state.get("regen_of"),
            trimmed=state.get("trimmed", 0),
            user_name=state.get("user") or LOCAL_USER,
        )
        turn_id = store.add_turn(log, turn_id=state.get("turn_id"))
        return {"turn_id": turn_id, "log": log, "nodes": ["log_turn"]}

    graph = StateGraph(TurnState)
    graph.add_node("load_history", load_history)
    graph.add_node("model", call_model)
    graph.add_node("tools", run_tools)
    graph.add_node("capped", capped)
    graph.add_node("log_turn", log_turn)
    graph.add_edge(START, "load_history")
    graph.add_edge("load_history", "model")
    graph.add_conditional_edges("model", after_model, ["tools", "capped", "log_turn"])
    graph.add_conditional_edges("tools", after_tools, ["model", "capped"])
    graph.add_edge("capped", "log_turn")
    graph.add_edge("log_turn", END)
    return graph.compile()
