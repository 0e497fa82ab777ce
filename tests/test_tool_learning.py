"""Learning to use tools: feedback on trajectories becomes TRL's tool-format rows, the
trainer child trains on them for real (loss on the assistant steps only), and the gate
measures a tool task by running the candidate's trajectories with the real tools."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from learnloop.agent.config import GenerationConfig
from learnloop.agent.runtime import Agent
from learnloop.agent.service import LocalService
from learnloop.learning import chat_format
from learnloop.learning.datasets import build_datasets
from learnloop.learning.toolbox import load_tools
from learnloop.storage.errors import UsageError
from learnloop.storage.store import Store
from tests.helpers import run_cli, run_json
from tests.scripted import SHARED_TOOLS, ScriptedBackend, call
from tests.test_trainer import make_run, run_trainer, tiny_config, write_jsonl

pytestmark = pytest.mark.skipif(not SHARED_TOOLS.is_file(), reason="../shared/data is absent")

QUESTION = "A warehouse holds 2824 boxes with 82 items in each box. How many items are there?"


def test_only_the_assistant_steps_carry_the_loss(smol_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tools = load_tools([str(SHARED_TOOLS)]).schemas()
    made = chat_format.tool_call("calculate", {"expression": "2824 * 82"}, "c1")
    completion = [
        {"role": "assistant", "content": None, "tool_calls": [made]},
        {"role": "tool", "tool_call_id": "c1", "content": "231568"},
        {"role": "assistant", "content": "There are 231568 items."},
    ]
    ids = chat_format.training_ids(
        tokenizer, [{"role": "user", "content": QUESTION}], completion, tools
    )
    pairs = zip(ids["input_ids"], ids["completion_mask"], strict=True)
    trained = tokenizer.decode([t for t, m in pairs if m])
    assert trained == (
        '<tool_call>\n{"name": "calculate", "arguments": {"expression": "2824 * 82"}}\n'
        "</tool_call><|im_end|>\nThere are 231568 items.<|im_end|>\n"
    )  # the call and the answer; never the tool's result, the prompt or the tools


def test_a_plain_row_is_tokenized_exactly_as_trl_does(smol_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    completion = [{"role": "assistant", "content": "Hello! How can I help?"}]
    ours = chat_format.training_ids(tokenizer, prompt, completion)
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    whole = tokenizer.apply_chat_template(prompt + completion)["input_ids"]
    assert ours["input_ids"] == whole
    assert ours["completion_mask"] == [0] * len(head) + [1] * (len(whole) - len(head))


def test_a_template_that_knows_tools_renders_them_itself(smol_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    tokenizer.chat_template = (
        "{% if tools %}TOOLS:{{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}"
        "{% for c in m.tool_calls %}CALL {{ c.function.name }} "
        "{{ c.function.arguments.expression }}{% endfor %}"
        "{% else %}{{ m.content }}{% endif %}\n{% endfor %}"
    )
    made = chat_format.tool_call("calculate", {"expression": "6 * 7"})
    messages = [
        {"role": "user", "content": "6 * 7?"},
        {"role": "assistant", "content": None, "tool_calls": [made]},
        {"role": "tool", "tool_call_id": made["id"], "content": "42"},
    ]
    tools = load_tools([str(SHARED_TOOLS)]).schemas()
    text = chat_format.render(tokenizer, messages, tools, add_generation_prompt=False)
    # (chat templates trim the newline after a block tag)
    assert text == "TOOLS:calculate\nuser:6 * 7?assistant:CALL calculate 6 * 7tool:42"


def tool_service(tokenizer: Path, outputs: list[str]) -> LocalService:
    store = Store()
    toolbox = load_tools([str(SHARED_TOOLS)])
    agent = Agent(store, ScriptedBackend(tokenizer, outputs), GenerationConfig(), toolbox=toolbox)
    return LocalService(store, agent=agent, toolbox=toolbox)


def test_trajectory_feedback_exports_tool_rows_that_trl_trains_on(
    smol_tokenizer_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    script = [
        call("calculate", expression="2824 + 82"),  # the wrong call: corrected below
        "There are 2906 items.",
        call("calculate", expression="4202 - 165"),
        "4037",
    ]
    with closing(tool_service(smol_tokenizer_dir, script)) as service:
        wrong = service.ask(QUESTION)
        right = service.ask("What is 4202 - 165?")
        fixed = [
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "calculate",
                                                  "arguments": '{"expression": "2824 * 82"}'}}
            ]},
            {"role": "assistant", "content": "There are 231568 items."},
        ]  # fmt: skip
        service.feedback(wrong["turn_id"], "down", correction_messages=fixed)
        service.feedback(right["turn_id"], "up")
        turn = service.thread(wrong["thread_id"])["turns"][0]
    stored = turn["feedback"][0]["correction_messages"]
    assert stored[1] == {"role": "tool", "tool_call_id": stored[0]["tool_calls"][0]["id"],
                         "content": "231568"}  # fmt: skip  # the call's result, run by the agent
    assert turn["feedback"][0]["correction"] == "There are 231568 items."

    manifest = run_json(None, "export", "--out", str(tmp_path / "out"), "--current")
    rows = {
        name: [json.loads(line) for line in (tmp_path / "out" / f"{name}.jsonl").open()]
        for name in ("sft", "kto")  # what `learn` would train on now (auto: SFT, then KTO)
    }
    listed = {f["file"]: f["columns"] for f in manifest["files"]}
    assert listed["sft.jsonl"] == ["prompt", "completion", "tools"]
    with Store() as store:  # the pair the builder makes, for `--method dpo`
        rows["dpo"] = build_datasets(store.feedback_examples()).dpo
    sft = {row["completion"][-1]["content"]: row for row in rows["sft"]}
    taught = sft["There are 231568 items."]
    assert [m["role"] for m in taught["completion"]] == ["assistant", "tool", "assistant"]
    assert taught["tools"][0]["function"]["name"] == "calculate"
    (pair,) = rows["dpo"]
    assert "2824 * 82" in pair["chosen"][0]["tool_calls"][0]["function"]["arguments"]
    assert "2824 + 82" in pair["rejected"][0]["tool_calls"][0]["function"]["arguments"]

    config = tiny_config(max_length=512)  # the tools in the system prompt take ~200 tokens
    run_dir = make_run(tmp_path / "run", tiny_model_dir, rows["sft"], rows["dpo"], **config)
    request = json.loads((run_dir / "request.json").read_text())
    write_jsonl(run_dir / "kto.jsonl", rows["kto"])
    request["kto"] = "kto.jsonl"
    (run_dir / "request.json").write_text(json.dumps(request))
    result = run_trainer(run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["sft"]["examples"] == 2 and metrics["dpo"]["examples"] == 1
    assert metrics["kto"]["examples"] == len(rows["kto"])


def test_a_corrected_trajectory_that_does_not_hold_together_is_refused(
    smol_tokenizer_dir: Path,
) -> None:
    with closing(tool_service(smol_tokenizer_dir, ["Hello."])) as service:
        turn = service.ask("Hi")["turn_id"]
        for bad, words in (
            ([{"role": "tool", "tool_call_id": "x", "content": "1"}], "no step just before"),
            ([{"role": "assistant", "content": None, "tool_calls": [
                {"function": {"name": "calculate", "arguments": '{"expression": "1"}'}}]}],
             "ends with the final answer"),
            ([{"role": "assistant", "content": None, "tool_calls": [
                {"function": {"name": "weather", "arguments": "{}"}}]},
              {"role": "assistant", "content": "Sunny."}], "no tool 'weather'"),
            ([{"role": "user", "content": "Hi"}], "role 'user'"),
        ):  # fmt: skip
            with pytest.raises(UsageError, match=words):
                service.feedback(turn, "down", correction_messages=bad)
        with pytest.raises(UsageError, match="with `down`"):
            service.feedback(
                turn, "up", correction_messages=[{"role": "assistant", "content": "Hey."}]
            )
        assert service.store.status().feedback == 0  # nothing was stored


def test_the_gate_runs_a_tool_task_and_needs_its_tools(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    task = tmp_path / "task.jsonl"
    rows = [
        {"text": f"What is {a} * 7?", "answer": str(a * 7),
         "calls": [{"name": "calculate", "arguments": {"expression": f"{a} * 7"}}]}
        for a in (123, 456)
    ]  # fmt: skip
    write_jsonl(task, rows)
    model = str(tiny_model_dir)
    turn = run_json(tiny_model_dir, "ask", "Say hello", "--max-new-tokens", "4")["turn_id"]
    run_cli(tiny_model_dir, "feedback", str(turn), "down", "--correction", "Hello!")
    refused = run_cli(tiny_model_dir, "learn", "--eval-file", str(task), "--max-steps", "1")
    assert (
        refused.exit_code == 1 and "give the tools its answers need with --tools" in refused.output
    )
    flags = ["--eval-file", str(task), "--tools", str(SHARED_TOOLS), "--max-steps", "1"]
    learned: dict[str, Any] = run_json(tiny_model_dir, "learn", *flags, "--model", model)
    gate = run_json(None, "versions")[1]["gate"]  # [0] is the base
    assert learned["version"] == "v1"
    for side in ("candidate", "active"):
        assert gate[side]["task_rows"] == 2
        assert gate[side]["task_tool_use"] is not None  # the random model calls no tool
