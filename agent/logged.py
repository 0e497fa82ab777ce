"""learnloop's chat model for a LangGraph graph of your own: every question is a logged turn.

    from learnloop.agent.logged import logged_chat_model
    from learnloop.agent.service import open_local

    service = open_local()                     # the data root's store, the default model
    model = logged_chat_model(service)         # a LangChain BaseChatModel
    reply = model.invoke(messages)             # in a node of your graph, as any chat model
    service.feedback(reply.response_metadata["turn_id"], "up")
    service.learn({}, who="me")                # the next call answers from the new version

What a call does, whether it is ``invoke`` or ``stream``, in a graph or not:

- The active version answers: before each call the model loads the version that is
  active now (the check learnloop's own chat makes before each answer, including its
  fallback from a damaged adapter), so a version a cycle promoted, or ``activate`` chose,
  answers from the next call on.
- The call is logged as a turn, as learnloop's own graph logs one (agent/graph.py,
  :func:`~learnloop.agent.graph.turn_log`): the messages the model saw, the rendered
  prompt, the answer, the version, the settings, token counts, timings, and the graph
  node that called. Its thread is the LangGraph config's ``configurable.thread_id``
  (LangGraph hands it to the model as run metadata; outside a graph pass
  ``config={"metadata": {"thread_id": ...}}``); without one each call is a new thread.
  The turn's user (whose it is for ``learnloop forget``) is the metadata's ``user``, else
  ``local``.
- The answer's ``response_metadata`` carries ``turn_id`` and ``thread_id``. Feedback on
  that turn trains the next cycle like any other: the messages are the prompt, the
  answer (or the correction) the completion.

Tools: ``bind_tools`` (or ``tools=`` per call) offers tools as on
:class:`~learnloop.agent.chat_model.LocalChatModel`; a reply that calls them is an
``AIMessage`` with ``tool_calls``, and your graph runs them (LangGraph's ``ToolNode``, or
a node of your own) and asks the model again. One question is one turn, however many
calls it takes. A call *continues* a turn when, in the same thread, its messages are

    that turn's ``messages`` + its ``trajectory`` (so far)  + one or more ``tool`` messages

where the trajectory's last step made tool calls and each new ``tool`` message answers
one of them (by ``tool_call_id``). Messages compare by role, text (stripped), tool calls
(id, name, parsed arguments) and ``tool_call_id``; the turn is the thread's latest, and
when its prompt was fitted by leaving out old messages, its ``messages`` need only end
what the call was given (the system prompt still first). Such a call is logged into that
turn: a tool step per new ``tool`` message (``ms`` and ``error`` None: your graph ran it,
learnloop did not time it) and a model step for the call; the turn's answer, version
(the last call's), token sums, nodes and settings become the latest, and the reply's
``turn_id`` is that turn's. Anything else is a new turn. Feedback on the turn, given
after any of its calls, rates the whole trajectory, and a corrected trajectory
(``service.feedback(turn_id, "down", correction_messages=[...])``) trains the calls.

- A conversation longer than the model's context has its oldest earlier messages left
  out (never the system prompt nor the last message), as in learnloop's own chat: one
  line on stderr says so, the turn logs the messages the model saw, and
  ``response_metadata["trimmed"]`` counts those left out.

Invariants: a turn is logged once its answer is complete (an answer stopped early is
logged as interrupted, as in chat); a call refused before generation (no user message,
an unsupported message type) logs nothing and leaves a turn it would continue as it was.
The model, the store and the version check are the service's own, so feedback, ``learn``
and ``activate`` through that service act on exactly what this model answers with.
Calls in one thread are expected one after another, as a graph makes them; two at once
in the same thread may both continue its latest turn, the second one's log winning.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables import ensure_config

from learnloop.agent.chat_model import LocalChatModel, to_dicts, to_langchain
from learnloop.agent.graph import model_step, turn_log
from learnloop.agent.runtime import Agent, new_thread_id
from learnloop.agent.service import LocalService
from learnloop.learning import chat_format
from learnloop.storage.errors import UsageError
from learnloop.storage.records import LOCAL_USER, Message, Turn, TurnLog
from learnloop.storage.store import Store


class LoggedChatModel(LocalChatModel):
    """A :class:`LocalChatModel` whose every answer is logged as a turn in ``agent``'s
    store (or as further steps of the turn it continues) and comes from the version
    active at the call. Make one with :func:`logged_chat_model`."""

    agent: Any  # the Agent whose store logs the turns and whose version check runs first

    @property
    def _llm_type(self) -> str:
        return "learnloop-logged"

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        agent: Agent = self.agent
        seen = to_dicts(messages)
        metadata = call_metadata(run_manager)
        named = metadata.get("thread_id")
        thread_id = str(named or new_thread_id())
        node = str(metadata["langgraph_node"]) if metadata.get("langgraph_node") else None
        going_on = continued_turn(agent.store, thread_id, seen) if named else None
        user_message = going_on.log.user_message if going_on else last_user_message(seen)
        agent.sync_version()
        tools, _ = chat_format.choose(kwargs.get("tool_choice"), kwargs.get("tools"))
        fitted = agent.fit(seen, kwargs.get("generation") or self.generation, None, tools)
        if fitted.trimmed:
            agent.warn(fitted.note())
            messages = to_langchain(fitted.messages)
        for chunk in super()._stream(messages, stop, run_manager, **kwargs):
            meta = chunk.message.response_metadata
            if not meta:  # a piece of the answer; the final chunk carries the metadata
                yield chunk
                continue
            usage = dict(getattr(chunk.message, "usage_metadata", None) or {})
            step = model_step({**meta, "usage": usage}, node)
            if going_on is not None:
                log = continued_log(going_on, tool_steps(going_on.log, seen), step, meta)
                agent.store.replace_trajectory(going_on.id, log)
                turn_id = going_on.id
            else:
                log = turn_log(
                    [step],
                    meta,
                    thread_id=thread_id,
                    user_message=user_message,
                    messages=fitted.messages,
                    answer=meta.get("content") or "",
                    nodes=[node] if node else [],
                    trimmed=fitted.trimmed,
                    user_name=str(metadata.get("user") or LOCAL_USER),
                )
                turn_id = agent.store.add_turn(log)
            meta.update(turn_id=turn_id, thread_id=thread_id, trimmed=fitted.trimmed)
            yield chunk


def call_metadata(run_manager: CallbackManagerForLLMRun | None) -> Mapping[str, Any]:
    """The run metadata of this call: its run manager's, else that of the runnable config
    it runs in. LangChain streams a model inside a streamed graph (``stream_mode=
    "messages"``) by calling ``_stream`` without a run manager, and the thread id and node
    must not be lost there: the graph's config still names them."""
    if run_manager is not None and run_manager.metadata:
        return run_manager.metadata
    return ensure_config().get("metadata") or {}


def last_user_message(messages: list[Message]) -> str:
    """The text a turn answers: the last user message (a UsageError when there is none)."""
    for message in reversed(messages):
        if message["role"] == "user" and (message["content"] or "").strip():
            return message["content"]
    raise UsageError("a logged call needs a user message to answer; none was given")


# -- one question, one turn: recognising a call that goes on from a turn's tool calls --------


def continued_turn(store: Store, thread_id: str, seen: list[Message]) -> Turn | None:
    """The turn ``seen`` continues (the module docstring's rule), or None: a new turn."""
    new = new_results(seen)
    if not new or not store.thread_exists(thread_id):
        return None
    turns = store.thread_turns(thread_id)
    if not turns:
        return None
    turn = turns[-1]
    trajectory = turn.log.trajectory
    waiting = {c["id"] for c in trajectory[-1].get("tool_calls") or []}
    if not waiting or any(m.get("tool_call_id") not in waiting for m in new):
        return None
    before = seen[: len(seen) - len(new)]
    asked, said = before[: len(before) - len(trajectory)], before[len(before) - len(trajectory) :]
    if not same(said, trajectory) or not asked_the_same(asked, turn.log):
        return None
    return turn


def new_results(seen: list[Message]) -> list[Message]:
    """The ``tool`` messages that end ``seen`` (none when it ends otherwise)."""
    n = len(seen)
    while n and seen[n - 1]["role"] == "tool":
        n -= 1
    return seen[n:]


def asked_the_same(asked: list[Message], log: TurnLog) -> bool:
    """Whether ``asked`` is what the turn's first call was given: its ``messages``, or,
    when that call's prompt left old messages out, messages that end with what it kept
    and start with the same system prompt."""
    if same(asked, log.messages):
        return True
    if not log.settings.get("trimmed"):
        return False
    head = 0
    while head < len(log.messages) and log.messages[head]["role"] == "system":
        head += 1
    kept = log.messages[head:]
    return (
        len(asked) >= len(log.messages)
        and same(asked[:head], log.messages[:head])
        and same(asked[len(asked) - len(kept) :], kept)
    )


def same(a: list[Message], b: list[Message]) -> bool:
    """Messages equal as a model sees them: LangChain's round trip may rewrite a call's
    arguments JSON, and a streamed reply's text may differ from the parsed one in blanks."""
    return len(a) == len(b) and all(_key(x) == _key(y) for x, y in zip(a, b, strict=True))


def _key(message: Message) -> tuple[Any, ...]:
    calls = tuple(
        (c.get("id"), c["function"]["name"], _arguments(c["function"].get("arguments")))
        for c in message.get("tool_calls") or []
    )
    text = (message.get("content") or "").strip()
    return (message["role"], text, calls, message.get("tool_call_id"))


def _arguments(raw: Any) -> str:
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return str(raw)
    return json.dumps(parsed, sort_keys=True)


def tool_steps(log: TurnLog, seen: list[Message]) -> list[dict[str, Any]]:
    """A tool step per new ``tool`` message of ``seen``, for the call it answers in the
    turn's last step. ``error`` and ``ms`` are None: the caller's graph ran the tool."""
    calls = {c["id"]: c for c in log.trajectory[-1].get("tool_calls") or []}
    steps = []
    for message in new_results(seen):
        call = calls[message["tool_call_id"]]
        steps.append(
            {
                "type": "tool",
                "tool_call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
                "content": message.get("content") or "",
                "error": None,
                "ms": None,
            }
        )
    return steps


def continued_log(
    turn: Turn, tools: list[dict[str, Any]], step: dict[str, Any], meta: dict[str, Any]
) -> TurnLog:
    """``turn``'s log with the tool results and the model call that went on from them."""
    old = turn.log
    return turn_log(
        [*old.steps, *tools, step],
        meta,
        thread_id=old.thread_id,
        user_message=old.user_message,
        messages=old.messages,
        answer=meta.get("content") or "",
        nodes=[*old.nodes, step["node"]] if step["node"] else old.nodes,
        regen_of=old.regen_of,
        trimmed=int(old.settings.get("trimmed", 0)),
        user_name=old.user_name,
    )


def logged_chat_model(service: LocalService) -> LoggedChatModel:
    """learnloop's chat model for your own graph, over ``service``'s model (loaded now, if
    it is not yet), generation settings and store; give feedback, learn and activate
    through the same ``service``."""
    agent = service.agent
    return LoggedChatModel(backend=agent.backend, generation=agent.model.generation, agent=agent)
