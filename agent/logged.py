"""learnloop's chat model for a LangGraph graph of your own: every call is a logged turn.

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
- The answer's ``response_metadata`` carries ``turn_id`` and ``thread_id``. Feedback on
  that turn trains the next cycle like any other: the messages are the prompt, the
  answer (or the correction) the completion.

- A conversation longer than the model's context has its oldest earlier messages left
  out (never the system prompt nor the last message), as in learnloop's own chat: one
  line on stderr says so, the turn logs the messages the model saw, and
  ``response_metadata["trimmed"]`` counts those left out.

Invariants: a turn is logged once its answer is complete (an answer stopped early is
logged as interrupted, as in chat); a call refused before generation (no user message,
an unsupported message type) logs nothing. The model, the store and the version check
are the service's own, so feedback, ``learn`` and ``activate`` through that service act
on exactly what this model answers with.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from learnloop.agent.chat_model import LocalChatModel, to_dicts
from learnloop.agent.graph import to_langchain, turn_log
from learnloop.agent.runtime import Agent, new_thread_id
from learnloop.agent.service import LocalService
from learnloop.storage.errors import UsageError
from learnloop.storage.records import Message


class LoggedChatModel(LocalChatModel):
    """A :class:`LocalChatModel` whose every answer is logged as a turn in ``agent``'s
    store and comes from the version active at the call. Make one with
    :func:`logged_chat_model`."""

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
        user_message = last_user_message(seen)
        metadata: Mapping[str, Any] = run_manager.metadata if run_manager else {}
        thread_id = str(metadata.get("thread_id") or new_thread_id())
        node = metadata.get("langgraph_node")
        agent.sync_version()
        fitted = agent.fit(seen, kwargs.get("generation") or self.generation)
        if fitted.trimmed:
            agent.warn(fitted.note())
            messages = to_langchain(fitted.messages)
        pieces: list[str] = []
        for chunk in super()._stream(messages, stop, run_manager, **kwargs):
            meta = chunk.message.response_metadata
            if not meta:  # a piece of the answer; the final chunk carries the metadata
                pieces.append(str(chunk.message.content))
                yield chunk
                continue
            usage = dict(getattr(chunk.message, "usage_metadata", None) or {})
            log = turn_log(
                {**meta, "usage": usage},
                thread_id=thread_id,
                user_message=user_message,
                messages=fitted.messages,
                answer="".join(pieces),
                nodes=[str(node)] if node else [],
                trimmed=fitted.trimmed,
            )
            turn_id = agent.store.add_turn(log)
            meta.update(turn_id=turn_id, thread_id=thread_id, trimmed=fitted.trimmed)
            yield chunk


def last_user_message(messages: list[Message]) -> str:
    """The text a turn answers: the last user message (a UsageError when there is none)."""
    for message in reversed(messages):
        if message["role"] == "user" and message["content"].strip():
            return message["content"]
    raise UsageError("a logged call needs a user message to answer; none was given")


def logged_chat_model(service: LocalService) -> LoggedChatModel:
    """learnloop's chat model for your own graph, over ``service``'s model (loaded now, if
    it is not yet), generation settings and store; give feedback, learn and activate
    through the same ``service``."""
    agent = service.agent
    return LoggedChatModel(backend=agent.backend, generation=agent.model.generation, agent=agent)
