"""Messages with tool calls, as a chat template takes them and as a model writes them.

learnloop's messages have OpenAI's and TRL's shape everywhere (storage/records.py):
``role`` (system, user, assistant, tool), ``content`` (None on an assistant message that
only calls tools), ``tool_calls`` (``[{"id", "type": "function", "function": {"name",
"arguments"}}]``, arguments a JSON string) and ``tool_call_id`` on a tool result.

A chat template either knows tools (it reads ``tools`` and ``tool_calls``: Qwen2.5,
Hermes, Llama 3.1...) or does not (SmolLM2's: it joins ``role`` and ``content`` strings).
For one that does not, :func:`template_messages` writes the tools into the system prompt
and the calls into the assistant's text in the ChatML convention of the Hermes and
Qwen2.5 templates::

    <tool_call>
    {"name": "calculate", "arguments": {"expression": "37 * 24"}}
    </tool_call>

and a result as a ``tool`` message wrapping it in ``<tool_response>``. Either way a model
answers in that convention, and :func:`parse_output` reads its calls back.

Invariants: one rendering serves generation (agent/backend.py), the gate and training
(learning/trainer.py), so a model is trained on exactly the text it is prompted with; a
call that does not parse is never dropped: it stays in the answer's text, and is named in
``malformed``.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from learnloop.storage.records import Message

OPEN, CLOSE = "<tool_call>", "</tool_call>"

TOOLS_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def knows_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's own chat template renders ``tools`` (and tool calls)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in str(template)


def call_text(name: str, arguments: str) -> str:
    """One call in the ChatML convention (``arguments`` a JSON string; kept as given
    when it is not JSON, so a stored malformed call renders as it was)."""
    try:
        args: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return f'{OPEN}\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n{CLOSE}'
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': args})}\n{CLOSE}"


def assistant_text(message: Message) -> str:
    """An assistant message as the text a model writes: its content, then its calls."""
    parts = [message["content"]] if message.get("content") else []
    for call in message.get("tool_calls") or []:
        parts.append(call_text(call["function"]["name"], call["function"]["arguments"]))
    return "\n".join(parts)


def first_step(messages: list[Message]) -> str:
    """What a trajectory's first assistant step says: its text and its calls as the
    model writes them; the answer itself for a turn without tools."""
    return assistant_text(messages[0])


def template_messages(
    messages: list[Message], tools: list[dict[str, Any]] | None, native: bool
) -> list[dict[str, Any]]:
    """``messages`` as the chat template takes them (see the module docstring). With
    ``native``, the template renders tools itself: only the calls' arguments become the
    objects such templates expect. Without, every message becomes a role and a string."""
    if native:
        return [_with_argument_objects(m) for m in messages]
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant":
            out.append({"role": "assistant", "content": assistant_text(m)})
        elif m["role"] == "tool":
            out.append(
                {"role": "tool", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
            )
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    if tools:
        block = TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] == "system" and out[0]["content"]:
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        elif out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _with_argument_objects(message: Message) -> dict[str, Any]:
    if not message.get("tool_calls"):
        return dict(message)
    calls = []
    for call in message["tool_calls"]:
        raw = call["function"]["arguments"]
        args = arguments_object(raw)
        fn = {**call["function"], "arguments": raw if args is None else args}
        calls.append({**call, "function": fn})
    return {**message, "tool_calls": calls}


def arguments_object(arguments: object) -> dict[str, Any] | None:
    """A call's arguments as a dict when they are a JSON object: a dict, or a JSON string
    of one (none, or an empty string, means no arguments: ``{}``); else None."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return arguments if isinstance(arguments, dict) else None


def render(
    tokenizer: Any,
    messages: list[Message],
    tools: list[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text of ``messages`` (and ``tools``) for this tokenizer's template."""
    native = knows_tools(tokenizer)
    kwargs: dict[str, Any] = {"tools": tools} if native and tools else {}
    text = tokenizer.apply_chat_template(
        template_messages(messages, tools, native),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )
    return str(text)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(6)}"


def tool_call(
    name: str, arguments: dict[str, Any] | str, call_id: str | None = None
) -> dict[str, Any]:
    """One call in OpenAI's shape (``arguments`` stored as a JSON string)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id or new_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


@dataclass(frozen=True)
class Parsed:
    """What a model wrote: its text without the well-formed calls (None when only calls
    were written), the calls, and each malformed call's text with what is wrong."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[dict[str, str]] = field(default_factory=list)  # {"text", "why"}


_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


def parse_output(text: str) -> Parsed:
    """The tool calls in ``text`` (``<tool_call>{"name", "arguments"}</tool_call>``; a
    last block the model did not close counts when its JSON is whole). A block that is
    not a JSON object with a string ``name`` and object ``arguments`` stays in the text
    and is listed in ``malformed``."""
    if OPEN not in text:
        return Parsed(text)
    calls: list[dict[str, Any]] = []
    malformed: list[dict[str, str]] = []
    kept: list[str] = []
    at = 0
    for match in _BLOCK.finditer(text):
        kept.append(text[at : match.start()])
        at = match.end()
        call, why = _read_call(match.group(1))
        if call is None:
            malformed.append({"text": match.group(0), "why": why})
            kept.append(match.group(0))
        else:
            calls.append(call)
    kept.append(text[at:])
    content = "".join(kept).strip()
    return Parsed(content or (None if calls else ""), calls, malformed)


def _read_call(body: str) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads(body.strip())
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg})"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None, 'not an object with a "name"'
    args = data.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None, "arguments are not JSON"
    if not isinstance(args, dict):
        return None, "arguments are not an object"
    return tool_call(data["name"], args), ""


class CallHider:
    """The text of a streaming answer that a person should see as it arrives: everything
    outside ``<tool_call>`` blocks (the calls are shown as calls, once parsed).

    Invariant: no character of a block is handed out; text that may be the start of
    ``<tool_call>`` is held back until it is known not to be."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off: no tools were offered, so no text is a call
        self.text = ""
        self.shown = 0

    def feed(self, piece: str) -> str:
        if not self.enabled:
            return piece
        self.text += piece
        return self._advance(final=False)

    def finish(self) -> str:
        """What is left to show once the answer has ended (an unclosed block is not)."""
        return self._advance(final=True) if self.enabled else ""

    def _advance(self, final: bool) -> str:
        out: list[str] = []
        while True:
            rest = self.text[self.shown :]
            start = rest.find(OPEN)
            if start < 0:
                keep = 0 if final else _partial_prefix(rest, OPEN)
                out.append(rest[: len(rest) - keep])
                self.shown += len(rest) - keep
                return "".join(out)
            out.append(rest[:start])
            end = rest.find(CLOSE, start)
            if end < 0:  # inside a block: wait for its end
                self.shown += start
                return "".join(out)
            self.shown += end + len(CLOSE)


def _partial_prefix(text: str, word: str) -> int:
    """How many last characters of ``text`` are a proper start of ``word``."""
    for n in range(min(len(word) - 1, len(text)), 0, -1):
        if text.endswith(word[:n]):
            return n
    return 0


def for_tools(generation: Any) -> Any:
    """Generation settings for an answer that may call tools: no first-paragraph stop (a
    call may follow a blank line), and the answer ends where its first call does (the
    closing tag is a stop string, so it is not in the text: :func:`parse_output` reads an
    unclosed last call). Measured on the arithmetic bench: a barely trained model wrote
    a second, broken call or the tool's result after its first call. The next call comes
    in the next step, once the first one's result is known. The stop is added only while
    the request leaves room among its stop strings."""
    import dataclasses

    stops = generation.stop
    if CLOSE not in stops and len(stops) < 4:  # agent/config.py MAX_STOP_STRINGS
        stops = (*stops, CLOSE)
    return dataclasses.replace(generation, whole_answer=True, stop=stops)


def choose(tool_choice: Any, tools: list[dict[str, Any]] | None) -> tuple[list[dict] | None, str]:
    """The tools to offer and the start of the answer that ``tool_choice`` forces:
    ``auto`` (or None) offers them; ``none`` offers none; ``required`` (LangChain's
    ``any``, or True) makes the answer begin a call; a function's name (or OpenAI's
    ``{"type": "function", "function": {"name"}}``) begins a call of that function.
    A ValueError names a choice that offers nothing to choose from."""
    if not tools or tool_choice in (None, "auto"):
        return tools or None, ""
    if tool_choice == "none":
        return None, ""
    if tool_choice in ("required", "any", True):
        return tools, OPEN + '\n{"name": "'
    name = tool_choice
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    names = [t["function"]["name"] for t in tools]
    if not isinstance(name, str) or name not in names:
        raise ValueError(
            f"tool_choice names {name!r}, which is not one of the tools: {', '.join(names)}"
        )
    return tools, OPEN + "\n" + '{"name": ' + json.dumps(name) + ', "arguments": '


def training_ids(
    tokenizer: Any,
    prompt: list[Message],
    completion: list[Message],
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, list[int]]:
    """``input_ids`` of prompt + completion as rendered for this tokenizer, and a
    ``completion_mask`` that is 1 on the tokens of the completion's assistant messages
    (their text, calls and end-of-turn) and 0 elsewhere: a model trained on it learns
    what to say and which tools to call, never to write a tool's result. For a
    completion of one assistant message this is exactly TRL's own completion mask."""
    text = render(tokenizer, prompt + completion, tools, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(completion):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, prompt + completion[:i], tools, add_generation_prompt=True)
        after = render(tokenizer, prompt + completion[: i + 1], tools, add_generation_prompt=False)
        if not (text.startswith(before) and text.startswith(after)):
            raise ValueError("the chat template renders a conversation's start differently alone")
        spans.append((len(before), len(after)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [
        int(any(start <= begin < end for start, end in spans))
        for begin, _ in encoded["offset_mapping"]
    ]
    return {"input_ids": list(encoded["input_ids"]), "completion_mask": mask}
