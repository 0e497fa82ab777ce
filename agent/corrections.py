"""A corrected trajectory: what a person says a turn should have done, checked and made
whole before it is stored.

A correction is either a better final answer (text) or a trajectory: the assistant
steps with the right ``tool_calls``, the tools' results, and the final answer, in
learnloop's message shape (storage/records.py). A person who fixes a call's arguments
or adds a call (the web page, the API) need not type its result: a call without one is
run with the operator's tool (learning/toolbox.py), as the agent would have run it.

Invariants: a trajectory that is stored is complete (every call has its result, right
after the step that made it, and it ends with a final answer in text); anything else is
refused with one UsageError naming the problem, and nothing is stored.
"""

from __future__ import annotations

from typing import Any

from learnloop.learning import chat_format
from learnloop.learning.toolbox import Toolbox
from learnloop.storage.errors import UsageError
from learnloop.storage.records import Message

MAX_STEPS = 32  # messages in one corrected trajectory


def check_trajectory(messages: Any, toolbox: Toolbox, timeout_s: float = 10.0) -> list[Message]:
    """``messages`` as a complete trajectory (see the module docstring), with ids given
    to calls that have none and the results of calls that have none run now."""
    if not isinstance(messages, list) or not messages or len(messages) > MAX_STEPS:
        raise UsageError(
            f"a corrected trajectory is a list of 1 to {MAX_STEPS} assistant and tool messages"
        )
    out: list[Message] = []
    waiting: dict[str, dict[str, Any]] = {}  # calls of the last step still without a result
    for n, message in enumerate(messages, start=1):
        where = f"correction message {n}"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            _run_waiting(waiting, out, toolbox, timeout_s)
            step = _assistant_step(message, where)
            waiting = {c["id"]: c for c in step.get("tool_calls", [])}
            out.append(step)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in waiting:
                raise UsageError(
                    f"{where} is a tool result for {call_id!r}, which no step just before "
                    "it called; each result follows the step that made its call"
                )
            content = message.get("content")
            if not isinstance(content, str):
                raise UsageError(f'{where}: a tool result\'s "content" must be text')
            del waiting[call_id]
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        else:
            raise UsageError(
                f"{where} has role {role!r}: a trajectory holds assistant and tool messages"
            )
    if waiting or not out or out[-1]["role"] != "assistant" or not out[-1].get("content"):
        raise UsageError(
            "a corrected trajectory ends with the final answer: an assistant message "
            "with text and no calls"
        )
    return out


def _assistant_step(message: dict[str, Any], where: str) -> Message:
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise UsageError(f'{where}: "content" must be text or null')
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise UsageError(f'{where}: "tool_calls" must be a list')
    step: Message = {"role": "assistant", "content": content or None}
    if calls:
        step["tool_calls"] = [_call(call, f"{where} call {i}") for i, call in enumerate(calls, 1)]
    elif not content:
        raise UsageError(f"{where} says nothing: give it text or tool calls")
    return step


def _call(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise UsageError(f'{where}: a call is {{"function": {{"name", "arguments"}}}}')
    arguments = fn.get("arguments")
    parsed = chat_format.arguments_object(arguments)
    if parsed is None:
        raise UsageError(f"{where}: the arguments of {fn['name']} must be a JSON object")
    call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
    # A string is kept as written; a dict (or nothing) is stored as its JSON.
    kept = arguments if isinstance(arguments, str) and arguments.strip() else parsed
    return chat_format.tool_call(fn["name"], kept, call_id)


def _run_waiting(
    waiting: dict[str, dict[str, Any]], out: list[Message], toolbox: Toolbox, timeout_s: float
) -> None:
    """Results for the calls of the last step that came without one, from the tools."""
    for call_id, call in list(waiting.items()):
        name = call["function"]["name"]
        if name not in toolbox.tools:
            raise UsageError(
                f"the call of {name} ({call_id}) has no result, and this agent has no tool "
                f"{name!r} to run it with; give its result as a tool message"
            )
        result = toolbox.run(name, call["function"]["arguments"], timeout_s)
        out.append({"role": "tool", "tool_call_id": call_id, "content": result.content})
        del waiting[call_id]


def final_text(trajectory: list[Message]) -> str:
    """The final answer of a complete trajectory."""
    return str(trajectory[-1]["content"])
