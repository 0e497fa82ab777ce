"""learnloop's chat model in a graph of the user's own (agent/logged.py): every call is a
logged turn in the graph's thread, its id comes back in the reply, feedback on it trains,
and the version active at the call answers.

Real parts: the tiny model, a real LangGraph graph, the test's own DuckDB file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

from benchmarks.random_adapter import register_adapter, save_random_adapter
from learnloop.agent.config import GenerationConfig
from learnloop.agent.logged import LoggedChatModel, logged_chat_model
from learnloop.agent.service import LocalService
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import UsageError
from learnloop.storage.home import adapters_dir
from learnloop.storage.store import Store

SYSTEM = "You answer in one word."


class State(TypedDict, total=False):
    question: str
    reply: AIMessage


@pytest.fixture
def service(tiny_model_dir: Path) -> Iterator[LocalService]:
    generation = GenerationConfig(max_new_tokens=6, temperature=0)
    trigger = TriggerConfig(auto_learn=False)
    local = LocalService(Store(), str(tiny_model_dir), generation=generation, trigger=trigger)
    yield local
    local.close()


def one_node_graph(model: LoggedChatModel) -> Any:
    def draft(state: State) -> State:
        return {"reply": model.invoke([SystemMessage(SYSTEM), HumanMessage(state["question"])])}

    graph = StateGraph(State)
    graph.add_node("draft", draft)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", END)
    return graph.compile()


def in_thread(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def test_a_call_in_a_graph_is_a_turn_in_the_graphs_thread(service: LocalService) -> None:
    graph = one_node_graph(logged_chat_model(service))
    reply = graph.invoke({"question": "Capital of Italy?"}, in_thread("mine-1"))["reply"]

    meta = reply.response_metadata
    assert meta["thread_id"] == "mine-1" and meta["version"] == "base"
    turn = service.store.get_turn(meta["turn_id"])
    assert turn.log.thread_id == "mine-1"
    assert turn.log.user_message == "Capital of Italy?"
    assert turn.log.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Capital of Italy?"},
    ]
    assert turn.log.answer == reply.content
    assert "Capital of Italy?" in turn.log.prompt
    assert turn.log.nodes == ["draft"]
    assert turn.log.completion_tokens == 6 and turn.log.truncated  # the tiny model never stops
    assert turn.log.settings["max_new_tokens"] == 6


def test_streamed_tokens_reach_the_graph_and_the_last_chunk_names_the_turn(
    service: LocalService,
) -> None:
    graph = one_node_graph(logged_chat_model(service))
    chunks = [
        chunk
        for chunk, _ in graph.stream(
            {"question": "Tell me a story"}, in_thread("mine-2"), stream_mode="messages"
        )
    ]
    turn_ids = [c.response_metadata["turn_id"] for c in chunks if "turn_id" in c.response_metadata]
    assert len(turn_ids) == 1
    text = "".join(str(c.content) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1
    assert service.store.get_turn(turn_ids[0]).log.answer == text


def test_outside_a_graph_a_call_is_a_new_thread_unless_its_metadata_names_one(
    service: LocalService,
) -> None:
    model = logged_chat_model(service)
    first, second = (model.invoke("Hello").response_metadata for _ in range(2))
    assert first["thread_id"] != second["thread_id"]
    named = model.invoke("Hello", {"metadata": {"thread_id": "mine-3"}}).response_metadata
    assert service.store.get_turn(named["turn_id"]).log.thread_id == "mine-3"
    assert service.store.get_turn(named["turn_id"]).log.nodes == []


def test_a_call_without_a_user_message_is_refused_and_logs_nothing(
    service: LocalService,
) -> None:
    model = logged_chat_model(service)
    with pytest.raises(UsageError, match="needs a user message"):
        model.invoke([SystemMessage(SYSTEM)])
    assert service.store.recent_turns(10) == []


def test_feedback_on_a_logged_turn_is_learnable_and_a_new_active_version_answers_next(
    service: LocalService, tiny_model_dir: Path
) -> None:
    graph = one_node_graph(logged_chat_model(service))
    turn_id = graph.invoke({"question": "2 + 2?"}, in_thread("mine-4"))["reply"].response_metadata[
        "turn_id"
    ]
    service.feedback(turn_id, "down", correction="4", who="tester")
    [example] = service.store.feedback_examples()
    assert example.correction == "4" and example.messages[-1]["content"] == "2 + 2?"

    folder = adapters_dir() / "v1"
    save_random_adapter(tiny_model_dir, folder, seed=1, modules=["q_proj"], r=4)
    register_adapter(service.store, "v1", folder, tiny_model_dir.name, "test", "random adapter")
    service.activate("v1", why="test: the next call answers from it")

    reply = graph.invoke({"question": "2 + 2?"}, in_thread("mine-4"))["reply"]
    assert reply.response_metadata["version"] == "v1"
    assert service.store.get_turn(reply.response_metadata["turn_id"]).log.version == "v1"
