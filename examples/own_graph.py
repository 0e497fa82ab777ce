"""Your own LangGraph graph on learnloop's model: its calls are logged turns, and learned from.

The graph here has its own state and two nodes: ``draft`` asks the model (with a system
prompt of its own), ``first_sentence`` keeps the draft's first sentence. The model is
``learnloop.agent.logged.logged_chat_model(service)``: each call is logged as a turn in
the thread the graph's config names, and the reply's ``response_metadata`` holds the
turn's id. The example rates that turn with a correction, runs a learning cycle (the
new version is activated by hand if the gate rejects it), and asks again: the second
answer comes from the new version.

    python examples/own_graph.py                       # the default model: a few minutes
    python examples/own_graph.py --model DIR --max-steps 2 --no-gate

Everything is stored under $LEARNLOOP_HOME (default ~/.learnloop); `learnloop log` then
shows the turns, `learnloop versions` the new version.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from typing import Any, TypedDict

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

from learnloop.agent.config import GenerationConfig
from learnloop.agent.logged import logged_chat_model
from learnloop.agent.service import LocalService, open_local
from learnloop.learning.triggers import TriggerConfig
from learnloop.storage.errors import LearnloopError

SYSTEM = "You are a concise geography tutor."


class QA(TypedDict, total=False):
    question: str
    reply: AIMessage  # the model's whole answer, with turn_id in its response_metadata
    answer: str  # what the graph returns: the reply's first sentence


def build_graph(model: Any) -> Any:
    def draft(state: QA) -> QA:
        messages = [SystemMessage(SYSTEM), HumanMessage(state["question"])]
        return {"reply": model.invoke(messages)}  # LangGraph passes its config along

    def first_sentence(state: QA) -> QA:
        text = str(state["reply"].content).strip()
        return {"answer": text.split(". ")[0].strip() or text}

    graph = StateGraph(QA)
    graph.add_node("draft", draft)
    graph.add_node("first_sentence", first_sentence)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "first_sentence")
    graph.add_edge("first_sentence", END)
    return graph.compile()


def ask(graph: Any, question: str, thread: str) -> dict[str, Any]:
    state = graph.invoke({"question": question}, {"configurable": {"thread_id": thread}})
    meta = state["reply"].response_metadata
    print(f"answer:   {state['answer']!r}  [turn {meta['turn_id']} · {meta['version']}]")
    return dict(meta)


def teach(service: LocalService, turn_id: int, correction: str, settings: dict[str, Any]) -> str:
    service.feedback(turn_id, "down", correction=correction, who="own-graph-example")
    print(f"feedback: turn {turn_id} 👎 with the correction {correction!r}; learning…")
    result = service.learn(settings, who="examples/own_graph.py")
    version = str(result["version"])
    print(f"learned:  {version} ({result['method']}, {result['sft_examples']} SFT examples)")
    if not result["promoted"]:  # e.g. no held-out feedback yet to judge it by
        print(f"          not promoted: {'; '.join(result['reasons'])}; activating it anyway")
        service.activate(version, why="examples/own_graph.py: try the new version")
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model id, checkpoint folder or .gguf (default SmolLM2)")
    parser.add_argument("--question", default="What is the capital of Italy?")
    parser.add_argument("--correction", default="The capital of Italy is Rome.")
    parser.add_argument("--thread", default="own-graph", help="the graph's thread_id")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-steps", type=int, default=-1, help="training steps (-1: all)")
    parser.add_argument("--no-gate", action="store_true", help="promote without the gate")
    args = parser.parse_args(argv)

    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=0)
    trigger = TriggerConfig(auto_learn=False)  # this example starts its one cycle itself
    settings = {"max_steps": args.max_steps, "gate": not args.no_gate}
    try:
        with closing(open_local(args.model, generation=generation, trigger=trigger)) as service:
            graph = build_graph(logged_chat_model(service))
            before = ask(graph, args.question, args.thread)
            version = teach(service, before["turn_id"], args.correction, settings)
            after = ask(graph, args.question, args.thread)
    except (LearnloopError, ValueError) as exc:  # bad input: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"the second answer came from {after['version']} (the new version: {version})")
    return 0 if after["version"] == version else 1


if __name__ == "__main__":
    sys.exit(main())
