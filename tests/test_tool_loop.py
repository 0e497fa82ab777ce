"""The agent's loop between the model and its tools (agent/graph.py), end to end through
the real graph, store and tools, with a scripted model (tests/scripted.py): what the
model writes is set by each test; what the agent does with it is what is tested."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from learnloop.agent.config import GenerationConfig, LoopLimits
from learnloop.agent.report import turn_dict, turns_text
from learnloop.agent.runtime import Agent
from learnloop.learning.toolbox import load_tools
from learnloop.storage.store import Store
from tests.scripted import SHARED_TOOLS, ScriptedBackend, call
from tests.tool_clients import WEATHER

pytestmark = pytest.mark.skipif(not SHARED_TOOLS.is_file(), reason="../shared/data is absent")


def agent_with(
    tokenizer: Path, outputs: list[str], *, tools: list[str] | None = None, **limits: Any
) -> tuple[Agent, ScriptedBackend, Store]:
    store = Store()
    backend = ScriptedBackend(tokenizer, outputs)
    toolbox = load_tools(tools if tools is not None else [str(SHARED_TOOLS)])
    agent = Agent(store, backend, GenerationConfig(), toolbox=toolbox, limits=LoopLimits(**limits))
    return agent, backend, store


def test_a_call_runs_the_tool_and_its_result_goes_back_to_the_model(
    smol_tokenizer_dir: Path,
) -> None:
    script = [call("calculate", expression="2824 * 82"), "There are 231568 items."]
    agent, backend, store = agent_with(smol_tokenizer_dir, script)
    events: list[dict[str, Any]] = []
    shown: list[str] = []
    answer = agent.ask(
        "2824 boxes of 82 items: how many items?", on_step=events.append, on_token=shown.append
    )

    assert answer.answer == "There are 231568 items."
    assert "".join(shown) == "There are 231568 items."  # the call's text is never streamed
    assert [list(e) for e in events] == [["tool_call"], ["tool_result"]]
    assert events[1]["tool_result"]["content"] == "231568"
    first, second = backend.prompts
    assert '"name": "calculate"' in first and "<tools>" in first  # the tools are offered
    assert "<tool_response>\n231568\n</tool_response>" in second

    log = store.get_turn(answer.turn_id).log
    assert [s["type"] for s in log.steps] == ["model", "tool", "model"]
    assert log.prompt == first and log.answer == answer.answer
    assert log.tools[0]["function"]["name"] == "calculate"
    roles = [m["role"] for m in log.trajectory]
    assert roles == ["assistant", "tool", "assistant"]
    made = log.trajectory[0]["tool_calls"][0]
    assert json.loads(made["function"]["arguments"]) == {"expression": "2824 * 82"}
    assert log.trajectory[1]["tool_call_id"] == made["id"]
    text = turns_text([turn_dict(store.get_turn(answer.turn_id))])
    assert '→ calculate({"expression": "2824 * 82"})' in text and "← 231568" in text


def test_the_next_turn_sees_the_whole_trajectory_of_the_last(smol_tokenizer_dir: Path) -> None:
    script = [call("calculate", expression="6 * 7"), "42.", "You asked about 6 * 7."]
    agent, backend, _ = agent_with(smol_tokenizer_dir, script)
    first = agent.ask("What is 6 * 7?")
    agent.ask("What did I ask?", thread_id=first.thread_id)
    assert "<tool_response>\n42\n</tool_response>" in backend.prompts[-1]
    assert '"expression": "6 * 7"' in backend.prompts[-1]


@pytest.mark.parametrize(
    ("made", "told"),
    [
        (call("multiply", a=2, b=3), 'there is no tool "multiply"'),
        (call("calculate", expr="2 * 3"), 'needs "expression"'),
        (call("calculate", expression="2 ** 9999"), "calculate raised"),
    ],
    ids=["unknown tool", "bad arguments", "raises"],
)
def test_a_failing_call_comes_back_to_the_model_as_a_result_that_says_so(
    smol_tokenizer_dir: Path, made: str, told: str
) -> None:
    agent, backend, store = agent_with(
        smol_tokenizer_dir, [made, "Sorry."], tools=["builtin", str(SHARED_TOOLS)]
    )
    answer = agent.ask("Compute something")
    assert answer.answer == "Sorry."
    result = store.get_turn(answer.turn_id).log.steps[1]
    assert result["type"] == "tool" and result["error"] and told in result["content"]
    assert told in backend.prompts[1]


def test_a_slow_tool_times_out_and_the_turn_goes_on(
    smol_tokenizer_dir: Path, tmp_path: Path
) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\n\ndef wait(seconds: float) -> str:\n"
        '    """Wait.\n\n    Args:\n        seconds: how long\n    """\n'
        "    time.sleep(seconds)\n    return 'done'\n"
    )
    agent, _, store = agent_with(
        smol_tokenizer_dir,
        [call("wait", seconds=5), "It took too long."],
        tools=[str(slow)],
        tool_timeout=0.3,
    )
    started = time.perf_counter()
    answer = agent.ask("Wait five seconds")
    assert time.perf_counter() - started < 3
    assert answer.answer == "It took too long."
    assert store.get_turn(answer.turn_id).log.steps[1]["error"] == "timeout"


def test_the_step_cap_ends_the_turn_with_an_answer_that_says_so(
    smol_tokenizer_dir: Path,
) -> None:
    agent, backend, store = agent_with(
        smol_tokenizer_dir, [call("calculate", expression="1 + 1")] * 10, max_steps=3
    )
    shown: list[str] = []
    answer = agent.ask("Add forever", on_token=shown.append)
    assert "cap of 3 model calls" in answer.answer and "--max-steps" in answer.answer
    assert "".join(shown) == answer.answer  # streamed too: the REPL and the page show it
    assert answer.stopped_by == "step cap"
    log = store.get_turn(answer.turn_id).log
    assert [s["type"] for s in log.steps] == ["model", "tool", "model", "tool", "model"]
    assert len(backend.prompts) == 3
    assert log.trajectory[-1] == {"role": "assistant", "content": answer.answer}


def test_the_time_cap_ends_the_turn_between_steps(smol_tokenizer_dir: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import time\n\ndef nap() -> str:\n"
        '    """Nap a little."""\n'
        "    time.sleep(0.4)\n    return 'rested'\n"
    )
    agent, backend, _ = agent_with(
        smol_tokenizer_dir, [call("nap")] * 10, tools=[str(slow)], turn_seconds=0.2
    )
    shown: list[str] = []
    answer = agent.ask("Nap", on_token=shown.append)
    assert answer.stopped_by == "time cap" and "time cap of 0.2 s" in answer.answer
    assert "".join(shown) == answer.answer
    assert len(backend.prompts) == 1


def test_a_malformed_call_stays_text_and_is_logged_as_malformed(
    smol_tokenizer_dir: Path,
) -> None:
    bad = '<tool_call>\n{"name": "calculate", "arguments": {"expression": 6 * 7}}\n</tool_call>'
    agent, backend, store = agent_with(smol_tokenizer_dir, [bad])
    answer = agent.ask("What is 6 * 7?")
    assert answer.answer == bad and len(backend.prompts) == 1  # nothing ran
    log = store.get_turn(answer.turn_id).log
    assert log.steps[0]["malformed"][0]["why"].startswith("not JSON")
    assert "✗ malformed call" in turns_text([turn_dict(store.get_turn(answer.turn_id))])


def test_a_callers_own_tools_are_returned_not_run(smol_tokenizer_dir: Path) -> None:
    agent, backend, store = agent_with(smol_tokenizer_dir, [call("weather", city="Oslo")])
    answer = agent.ask("Weather in Oslo?", tools=[WEATHER])
    assert answer.answer == "" and len(backend.prompts) == 1
    assert answer.tool_calls[0]["function"]["name"] == "weather"
    assert '"weather"' in backend.prompts[0] and '"calculate"' not in backend.prompts[0]
    assert store.get_turn(answer.turn_id).log.trajectory[0]["tool_calls"] == answer.tool_calls


def test_a_required_or_named_choice_starts_the_answer_with_a_call(
    smol_tokenizer_dir: Path,
) -> None:
    rest = 'calculate", "arguments": {"expression": "2 + 2"}}\n</tool_call>'
    agent, backend, store = agent_with(smol_tokenizer_dir, [rest, "4."])
    answer = agent.ask("Two and two", tool_choice="required")
    assert backend.prompts[0].endswith('<tool_call>\n{"name": "')
    assert not backend.prompts[1].endswith('{"name": "')  # forced once, then the model decides
    assert answer.answer == "4."
    assert store.get_turn(answer.turn_id).log.steps[1]["content"] == "4"


def test_a_turn_without_tools_stores_no_steps_and_reads_back_as_before(
    smol_tokenizer_dir: Path,
) -> None:
    agent, _, store = agent_with(smol_tokenizer_dir, ["Hello there."], tools=[])
    answer = agent.ask("Hi")
    log = store.get_turn(answer.turn_id).log
    assert log.steps == [] and log.tools == []
    assert log.trajectory == [{"role": "assistant", "content": "Hello there."}]
    assert store.db.execute(
        "SELECT steps IS NULL AND tools IS NULL FROM turns WHERE id = ?", [answer.turn_id]
    ).fetchone() == (True,)


def test_a_context_that_ends_with_tool_results_is_gone_on_from(smol_tokenizer_dir: Path) -> None:
    agent, backend, store = agent_with(smol_tokenizer_dir, ["It is 12 degrees in Oslo."])
    asked = {"role": "user", "content": "Weather in Oslo?"}
    made = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "12 C"}
    answer = agent.ask("", context=[asked, made, result], tools=[])
    assert answer.answer == "It is 12 degrees in Oslo."
    assert backend.prompts[0].endswith(
        "<|im_start|>tool\n<tool_response>\n12 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    log = store.get_turn(answer.turn_id).log
    assert log.user_message == "Weather in Oslo?" and log.messages[-1] == result
