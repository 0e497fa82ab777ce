"""Your own LangGraph graph with tools, on learnloop's model: one question, one logged turn.

The graph is the one LangGraph users write: an ``agent`` node with the model bound to a
tool of our own (``multiply``), LangGraph's prebuilt ``ToolNode`` that runs the calls, and
``tools_condition`` between them. The model is ``logged_chat_model(service)``: its first
call, the tool run by the graph and the call after it are logged as ONE turn (model →
tool → model). The example rates that turn with a corrected trajectory (the right call,
its result, the answer), runs a learning cycle (the new version is activated by hand if
the gate rejects it), and asks again: the second answer comes from the new version.

    python examples/own_tool_graph.py                  # the default model: a few minutes
    python examples/own_tool_graph.py --model DIR --max-steps 2 --no-gate

Everything is stored under $LEARNLOOP_HOME (default ~/.learnloop); `learnloop log` then
shows each turn with its calls (→) and results (←).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from learnloop.agent.config import GenerationConfig
from learnloop.agent.logged import logged_chat_model
from learnloop.agent.report import step_lines
from learnloop.agent.service import LocalService, open_local
from learnloop.learning.chat_format import tool_call
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import LearnloopError


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers exactly.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b


def build_graph(model: Any) -> Any:
    bound = model.bind_tools([multiply])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}  # LangGraph passes its config

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([multiply]))  # runs the calls the model made
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)  # calls? tools : END
    graph.add_edge("tools", "agent")
    return graph.compile()


def ask(service: LocalService, graph: Any, question: str, thread: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread}}
    state = graph.invoke({"messages": [HumanMessage(question)]}, config)
    meta = state["messages"][-1].response_metadata
    turn = service.store.get_turn(meta["turn_id"])
    print(f"answer:   {turn.log.answer!r}  [turn {turn.id} · {turn.log.version}]")
    for line in step_lines(turn.log.steps) or ["(no tool called)"]:
        print(f"          {line}")
    return dict(meta)


def teach(service: LocalService, turn_id: int, a: int, b: int, settings: dict[str, Any]) -> str:
    call = tool_call("multiply", {"a": a, "b": b})
    right = [  # what the turn should have done: call the tool, then say its result
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": str(multiply(a, b))},
        {"role": "assistant", "content": f"{a} times {b} is {multiply(a, b)}."},
    ]
    service.feedback(turn_id, "down", correction_messages=right, who="own-tool-graph-example")
    print(f"feedback: turn {turn_id} 👎 with the corrected trajectory; learning…")
    result = service.learn(settings, who="examples/own_tool_graph.py")
    version = str(result["version"])
    print(f"learned:  {version} ({result['method']}, {result['sft_examples']} SFT examples)")
    if not result["promoted"]:  # e.g. no held-out feedback yet to judge it by
        print(f"          not promoted: {'; '.join(result['reasons'])}; activating it anyway")
        service.activate(version, why="examples/own_tool_graph.py: try the new version")
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model id, checkpoint folder or .gguf (default SmolLM2)")
    parser.add_argument("-a", type=int, default=2824, help="the first number to multiply")
    parser.add_argument("-b", type=int, default=82, help="the second number to multiply")
    parser.add_argument("--thread", default="own-tool-graph", help="the graph's thread_id")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=-1, help="training steps (-1: all)")
    parser.add_argument("--no-gate", action="store_true", help="promote without the gate")
    args = parser.parse_args(argv)

    question = f"What is {args.a} times {args.b}?"
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0)
    trigger = TriggerConfig(auto_learn=False)  # this example starts its one cycle itself
    settings = {"max_steps": args.max_steps, "gate": not args.no_gate}
    try:
        with closing(open_local(args.model, generation=generation, trigger=trigger)) as service:
            graph = build_graph(logged_chat_model(service))
            before = ask(service, graph, question, args.thread)
            version = teach(service, before["turn_id"], args.a, args.b, settings)
            after = ask(service, graph, question, args.thread)
    except (LearnloopError, ValueError) as exc:  # bad input: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"the second answer came from {after['version']} (the new version: {version})")
    return 0 if after["version"] == version else 1


if __name__ == "__main__":
    sys.exit(main())
