"""learnloop's chat model with tools in a graph of the user's own (agent/logged.py): the
graph binds tools, LangGraph's ``ToolNode`` runs the model's calls, the model is asked
again, and the whole question is ONE logged turn (model → tool → model) that feedback,
with a corrected trajectory, turns into a tool-use training row.

Real parts: a real LangGraph graph with the prebuilt ``ToolNode``, the shared
``calculate`` tool, the test's own DuckDB file, and the scripted model of tests/scripted.py
(the real tokenizer and tool-call format; the text it answers is set by each test, since
the random tiny model never makes a call).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from learnloop.agent.config import GenerationConfig
from learnloop.agent.logged import LoggedChatModel, logged_chat_model
from learnloop.agent.runtime import Agent
from learnloop.agent.service import LocalService
from learnloop.learning.datasets import build_sft
from learnloop.learning.toolbox import load_tools
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import NotFound
from learnloop.storage.records import Message
from learnloop.storage.store import Store
from tests.helpers import make_log, run_cli
from tests.scripted import SHARED_TOOLS, ScriptedBackend, call

pytestmark = pytest.mark.skipif(not SHARED_TOOLS.is_file(), reason="../shared/data is absent")

QUESTION = "2824 boxes of 82 items: how many items?"


def calculate() -> Callable[..., Any]:
    """The shared task's ``calculate(expression)``, as the user's graph would import it."""
    return load_tools([str(SHARED_TOOLS)]).tools["calculate"].fn


def serve(tokenizer: Path, outputs: list[str], **kwargs: Any) -> LocalService:
    """A service whose agent answers with ``outputs`` (tests/scripted.py)."""
    store = Store()
    agent = Agent(store, ScriptedBackend(tokenizer, outputs), GenerationConfig())
    return LocalService(store, agent=agent, trigger=TriggerConfig(auto_learn=False), **kwargs)


def scripted(service: LocalService) -> ScriptedBackend:
    backend = service.agent.backend
    assert isinstance(backend, ScriptedBackend)
    return backend


@pytest.fixture
def closing() -> Iterator[list[LocalService]]:
    opened: list[LocalService] = []
    yield opened
    for service in opened:
        service.close()


def tool_graph(model: LoggedChatModel, checkpointer: Any = None) -> Any:
    """The graph a LangGraph user writes: agent ⇄ ToolNode, ``tools_condition`` between."""
    tools = [calculate()]
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


def in_thread(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def test_a_call_run_by_the_graphs_tool_node_and_the_answer_after_it_are_one_turn(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    script = [call("calculate", expression="2824 * 82"), "There are 231568 items."]
    service = serve(smol_tokenizer_dir, script)
    closing.append(service)
    backend = scripted(service)
    out = tool_graph(logged_chat_model(service)).invoke(
        {"messages": [HumanMessage(QUESTION)]}, in_thread("mine-1")
    )

    asked, ran, answered = out["messages"][1:]
    assert asked.tool_calls[0]["args"] == {"expression": "2824 * 82"}
    assert isinstance(ran, ToolMessage) and ran.content == "231568"  # the graph ran it
    assert answered.content == "There are 231568 items."
    assert "<tool_response>\n231568\n</tool_response>" in backend.prompts[1]
    metas = [m.response_metadata for m in (asked, answered)]
    assert metas[0]["turn_id"] == metas[1]["turn_id"] and metas[1]["thread_id"] == "mine-1"

    [turn] = service.store.thread_turns("mine-1")
    log = turn.log
    assert turn.id == metas[1]["turn_id"]
    assert [s["type"] for s in log.steps] == ["model", "tool", "model"]
    tool = log.steps[1]
    assert (tool["name"], tool["content"], tool["error"], tool["ms"]) == (
        "calculate",
        "231568",
        None,
        None,
    )
    assert tool["tool_call_id"] == asked.tool_calls[0]["id"]
    assert log.answer == "There are 231568 items." and log.version == "base"
    assert log.user_message == QUESTION and log.messages == [{"role": "user", "content": QUESTION}]
    assert log.prompt == backend.prompts[0]  # the turn's prompt is its first call's
    assert log.steps[2]["prompt"] == backend.prompts[1]
    assert log.prompt_tokens == sum(s["prompt_tokens"] for s in log.steps[::2])
    assert log.nodes == ["agent", "agent"]
    assert log.tools[0]["function"]["name"] == "calculate"
    assert [m["role"] for m in log.trajectory] == ["assistant", "tool", "assistant"]

    service.store.release()  # `learnloop log` opens the same file, as from a shell
    shown = run_cli(None, "log").output
    assert '→ calculate({"expression": "2824 * 82"})' in shown and "← 231568" in shown
    assert "There are 231568 items." in shown


def test_streamed_through_the_graph_the_question_is_still_one_turn(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    script = [call("calculate", expression="6 * 7"), "It is 42."]
    service = serve(smol_tokenizer_dir, script)
    closing.append(service)
    graph = tool_graph(logged_chat_model(service))
    chunks = [
        chunk
        for chunk, _ in graph.stream(
            {"messages": [HumanMessage("What is 6 * 7?")]},
            in_thread("mine-2"),
            stream_mode="messages",
        )
    ]
    named = {c.response_metadata["turn_id"] for c in chunks if "turn_id" in c.response_metadata}
    [turn] = service.store.thread_turns("mine-2")
    assert named == {turn.id}
    assert [s["type"] for s in turn.log.steps] == ["model", "tool", "model"]
    assert turn.log.answer == "It is 42." and turn.log.steps[1]["content"] == "42"


def test_the_next_question_in_the_thread_is_a_new_turn_that_sees_the_last_trajectory(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    script = [call("calculate", expression="6 * 7"), "It is 42.", "You asked about 6 * 7."]
    service = serve(smol_tokenizer_dir, script)
    closing.append(service)
    graph = tool_graph(logged_chat_model(service), checkpointer=InMemorySaver())
    graph.invoke({"messages": [HumanMessage("What is 6 * 7?")]}, in_thread("mine-3"))
    out = graph.invoke({"messages": [HumanMessage("What did I ask?")]}, in_thread("mine-3"))

    first, second = service.store.thread_turns("mine-3")
    assert out["messages"][-1].response_metadata["turn_id"] == second.id
    assert [s["type"] for s in first.log.steps] == ["model", "tool", "model"]
    assert second.log.steps == [] and second.log.answer == "You asked about 6 * 7."
    assert second.log.user_message == "What did I ask?"
    roles = [m["role"] for m in second.log.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]  # the whole first turn


def test_tool_results_that_answer_no_call_of_the_threads_turn_start_a_new_turn(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    service = serve(smol_tokenizer_dir, ["Hi.", "Done.", "Still 42."])
    closing.append(service)
    model = logged_chat_model(service)
    made = {"name": "calculate", "args": {"expression": "6 * 7"}, "id": "call_mine"}
    theirs = [HumanMessage("6 * 7?"), AIMessage("", tool_calls=[made])]
    theirs.append(ToolMessage("42", tool_call_id="call_mine"))
    config: RunnableConfig = {"metadata": {"thread_id": "mine-4"}}
    first = model.invoke("Hello", config).response_metadata["turn_id"]
    second = model.invoke(theirs, config).response_metadata["turn_id"]  # calls made elsewhere
    third = model.invoke(theirs, config).response_metadata["turn_id"]  # that turn made none
    assert len({first, second, third}) == 3
    assert service.store.get_turn(second).log.answer == "Done."


def test_a_conversation_trimmed_to_fit_still_continues_its_turn(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    service = serve(smol_tokenizer_dir, [call("calculate", expression="6 * 7"), "It is 42."])
    closing.append(service)
    scripted(service).context_tokens = 600
    old = "An old question, long enough to fill the context. " * 12
    history: list[Any] = [SystemMessage("Be brief.")]
    for n in range(4):
        history += [HumanMessage(f"{n}: {old}"), AIMessage(f"Answer {n}.")]
    history.append(HumanMessage("What is 6 * 7?"))
    graph = tool_graph(logged_chat_model(service))
    graph.invoke({"messages": history}, in_thread("mine-5"))

    [turn] = service.store.thread_turns("mine-5")
    assert turn.log.settings["trimmed"] > 0
    assert [s["type"] for s in turn.log.steps] == ["model", "tool", "model"]
    assert turn.log.answer == "It is 42."


def test_a_corrected_trajectory_on_the_turn_is_an_sft_row_of_the_right_calls(
    smol_tokenizer_dir: Path, closing: list[LocalService]
) -> None:
    wrong = [call("calculate", expression="2824 * 28"), "There are 79072 items."]
    service = serve(smol_tokenizer_dir, wrong, toolbox=load_tools([str(SHARED_TOOLS)]))
    closing.append(service)
    out = tool_graph(logged_chat_model(service)).invoke(
        {"messages": [HumanMessage(QUESTION)]}, in_thread("mine-6")
    )
    turn_id = out["messages"][-1].response_metadata["turn_id"]
    fix = {"name": "calculate", "arguments": json.dumps({"expression": "2824 * 82"})}
    corrected: list[Message] = [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "fix1", "function": fix}]},
        {"role": "assistant", "content": "There are 231568 items."},
    ]  # the result of the fixed call is left out: the operator's tool runs it
    service.feedback(turn_id, "down", correction_messages=corrected)

    [example] = service.store.feedback_examples()
    assert [m["role"] for m in example.trajectory] == ["assistant", "tool", "assistant"]
    [row], _ = build_sft([example])
    assert row["prompt"] == [{"role": "user", "content": QUESTION}]
    made, result, final = row["completion"]
    assert json.loads(made["tool_calls"][0]["function"]["arguments"]) == {"expression": "2824 * 82"}
    assert (result["role"], result["tool_call_id"], result["content"]) == ("tool", "fix1", "231568")
    assert final == {"role": "assistant", "content": "There are 231568 items."}
    assert row["tools"][0]["function"]["name"] == "calculate"


def test_rewriting_a_turns_trajectory_keeps_its_feedback_and_an_unknown_turn_is_404() -> None:
    with Store() as store:
        turn_id = store.add_turn(make_log("q", "first"))
        store.add_feedback(turn_id, "up")
        store.replace_trajectory(turn_id, make_log("q", "second", version="v2", nodes=["a"]))
        turn = store.get_turn(turn_id)
        assert (turn.log.answer, turn.log.version, turn.log.nodes) == ("second", "v2", ["a"])
        assert [f.rating for f in turn.feedback] == ["up"]
        with pytest.raises(NotFound, match="no turn with id 999"):
            store.replace_trajectory(999, make_log())
