"""A chat request's ``tools`` and ``tool_choice``, checked as OpenAI's API has them.

Each check raises one UsageError (a 400) naming the first problem, before anything is
stored or generated (agent/server/chat.py calls them while preparing a request).
"""

from __future__ import annotations

import json
import re
from typing import Any

from learnloop.learning import chat_format
from learnloop.storage.errors import UsageError

TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for a function's name


def check_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A request's ``tools``, each kept as ``{"type": "function", "function": {"name",
    "description"?, "parameters"?}}`` (what the model is shown); None when none were sent
    (``[]`` too: then the server's own tools are offered, as without the field). One
    UsageError names the first tool that is not an OpenAI function schema."""
    if not tools:
        return None
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for n, tool in enumerate(tools):
        where = f"tools[{n}]"
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise UsageError(
                f'{where} is not a function: a tool is {{"type": "function", "function": '
                '{"name", "description", "parameters"}}'
            )
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise UsageError(
                f"{where}: the function's name {name!r} must be 1 to 64 letters, digits, _ or -"
            )
        if name in names:
            raise UsageError(f"{where}: two tools are named {name!r}; each name is one tool")
        names.add(name)
        schema: dict[str, Any] = {"name": name}
        description, parameters = fn.get("description"), fn.get("parameters")
        if description is not None:
            if not isinstance(description, str):
                raise UsageError(f"{where}: the description of {name} must be text")
            schema["description"] = description
        if parameters is not None:
            if (
                not isinstance(parameters, dict)
                or parameters.get("type", "object") != "object"
                or not isinstance(parameters.get("properties", {}), dict)
            ):
                raise UsageError(
                    f"{where}: the parameters of {name} must be a JSON Schema object: "
                    '{"type": "object", "properties": {...}}'
                )
            schema["parameters"] = parameters
        out.append({"type": "function", "function": schema})
    return out


def check_tool_choice(choice: Any, offered: list[dict[str, Any]] | None) -> Any:
    """``tool_choice`` as learning/chat_format.py :func:`~chat_format.choose` takes it,
    checked against the tools ``offered`` (the request's, else the server's): one that
    forces a call needs tools, and a named function must be one of them."""
    if choice is None or choice in ("auto", "none"):
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    named = isinstance(fn, dict) and isinstance(fn.get("name"), str)
    if choice != "required" and not (named and choice.get("type") == "function"):
        raise UsageError(
            'tool_choice is "auto", "none", "required" or '
            '{"type": "function", "function": {"name": ...}}'
        )
    if not offered:
        raise UsageError(
            f"tool_choice {json.dumps(choice)} needs tools, and this request sends none "
            "(nor has this server tools of its own)"
        )
    try:
        chat_format.choose(choice, offered)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return choice
