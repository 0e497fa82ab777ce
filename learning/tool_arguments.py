"""A tool call's arguments checked against the tool's schema, and the words that describe
a tool to the model (its signature, what it takes).

Invariant: :func:`check_arguments` returns keyword arguments that fit the schema's
properties, or raises :class:`BadArguments` whose message, written for the model, says
every problem at once and how to call the tool; it never calls the tool.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict[str, Any]  # {"type": "function", "function": {"name", "description", ...}}
    fn: Callable[..., Any]
    source: str  # "builtin", a file's absolute path, or a module name


class BadArguments(Exception):
    """A tool call's arguments do not fit the tool's schema; the message is for the model."""


_JSON_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def check_arguments(tool: Tool, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for the call, or BadArguments saying exactly what is wrong
    and what the tool takes. Integral floats become ints where an integer is expected."""
    if isinstance(arguments, str):
        # An empty string is how some models and clients write "no arguments".
        if not arguments.strip():
            arguments = "{}"
        try:
            arguments = json.loads(arguments)
        except ValueError as e:
            raise BadArguments(
                f"error: {tool.name} arguments are not JSON ({first_line(str(e))}); "
                f"{_takes(tool)}; got {shorten(repr(arguments), 200)}"
            ) from None
    if not isinstance(arguments, dict):
        raise BadArguments(
            f"error: {tool.name} arguments must be a JSON object; {_takes(tool)}; "
            f"got {short_json(arguments)}"
        )
    parameters = tool.schema["function"].get("parameters", {})
    properties: dict[str, Any] = parameters.get("properties", {})
    missing = [p for p in parameters.get("required", []) if p not in arguments]
    problems = [f'needs "{p}" ({_kind(properties.get(p, {}))})' for p in missing]
    problems += [f'takes no "{key}"' for key in arguments if key not in properties]
    kwargs: dict[str, Any] = {}
    for key, value in arguments.items():
        if key in properties:
            ok, kwargs[key] = _fits(value, properties[key])
            if not ok:
                wanted = _kind(properties[key])
                problems.append(f'needs "{key}" to be {wanted}, not {short_json(value, 60)}')
    if not problems:
        return kwargs
    # Where the message already names every parameter, the signature would only repeat it.
    signature = "" if set(missing) == set(properties) else f"; {_takes(tool)}"
    raise BadArguments(
        f"error: {tool.name} {'; '.join(problems)}{signature}; got {short_json(arguments)}"
    )


def _fits(value: Any, schema: dict[str, Any]) -> tuple[bool, Any]:
    """Whether ``value`` has the JSON type ``schema`` asks for (its simple ``type``,
    ``nullable``, ``enum``, ``anyOf`` and array ``items``), and the value to pass."""
    if value is None and schema.get("nullable"):
        return True, None
    if "enum" in schema and value not in schema["enum"]:
        return False, value
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            ok, converted = _fits(value, option)
            if ok:
                return True, converted
        return False, value
    wanted = schema.get("type")
    if wanted is None:
        return True, value  # Any: the tool takes whatever JSON it gets
    for kind in [wanted] if isinstance(wanted, str) else wanted:
        ok, converted = _fits_type(value, kind, schema)
        if ok:
            return True, converted
    return False, value


_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "null": type(None),
}
_PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "object": "objects"}


def _fits_type(value: Any, kind: str, schema: dict[str, Any]) -> tuple[bool, Any]:
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind == "array":
        if not isinstance(value, list):
            return False, value
        if "items" not in schema:
            return True, value
        items = [_fits(item, schema["items"]) for item in value]
        return all(ok for ok, _ in items), [item for _, item in items]
    if kind not in _PYTHON_TYPES:
        return True, value  # a type this check does not know: the tool judges it
    if isinstance(value, bool) and kind != "boolean":
        return False, value  # JSON true is no number, although Python's True is an int
    return isinstance(value, _PYTHON_TYPES[kind]), value


def _kind(schema: dict[str, Any]) -> str:
    """What a parameter takes, in words: "a string", "an array of integers", "one of ..."."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_kind(option) for option in schema["anyOf"])
    wanted = schema.get("type")
    if wanted is None:
        return "any value"
    kinds = [wanted] if isinstance(wanted, str) else wanted
    text = " or ".join(_JSON_TYPE_NAMES.get(k, k) for k in kinds)
    item_type = schema.get("items", {}).get("type")
    if kinds == ["array"] and item_type in _PLURALS:
        text += f" of {_PLURALS[item_type]}"
    return text + (" or null" if schema.get("nullable") else "")


def _takes(tool: Tool) -> str:
    return f"call it as {_signature(tool)}"


def _signature(tool: Tool, with_types: bool = True) -> str:
    """``calculate(expression: string)``; optional parameters show their default."""
    parameters = tool.schema["function"].get("parameters", {})
    required = set(parameters.get("required", []))
    defaults = {
        p.name: p.default
        for p in inspect.signature(tool.fn).parameters.values()
        if p.default is not p.empty
    }
    parts = []
    for name, schema in parameters.get("properties", {}).items():
        part = name
        if with_types:
            kind = schema.get("type", "any")
            part += f": {kind if isinstance(kind, str) else ' | '.join(kind)}"
        if name not in required and name in defaults:
            equals = " = " if with_types else "="
            part += f"{equals}{short_json(defaults[name], 30)}"
        parts.append(part)
    return f"{tool.name}({', '.join(parts)})"


def describe(tool: Tool) -> str:
    description = first_line(tool.schema["function"].get("description", ""))
    return f"{_signature(tool, with_types=False)} — {description}".rstrip(" —")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_json(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text, limit)
