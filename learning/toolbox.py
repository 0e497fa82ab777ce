"""The tools the agent may call: loaded once, at start, from sources the operator named.

A *source* is named by a spec (``--tools SPEC``, repeatable):

- ``builtin``: the built-in tools below (:func:`calculator`, :func:`current_datetime`);
- a path to a ``.py`` file (relative or absolute): loaded by path under a unique module name;
- an importable dotted module name (``package.module``).

Every public function *defined in* a source (not imported into it) whose schema
``transformers.utils.get_json_schema`` can make, from its type hints and its Google-style
docstring with ``Args:``, is a tool; that schema, untouched, is what the model is shown. A
public function it cannot describe is skipped, and the reason kept for one warning.

Invariants:

- Tools come only from specs given at start (:func:`load_tools`), never from a request: a
  client's tools are the client's to run. Loading either gives a whole :class:`Toolbox` or
  raises one :class:`ToolsError` line; it never half-loads or shows a traceback.
- :meth:`Toolbox.run` never raises: an unknown tool, bad arguments, a tool that raises and a
  tool that runs too long all come back as a :class:`ToolResult` whose ``content`` tells the
  model what went wrong (it goes back as the ``tool`` message), with ``error`` saying which.
- Tool names are unique across all sources.

This module lives in learning/ because both the chat graph (agent/) and the gate in the
trainer child (learning/) execute tools. transformers is imported only when tools are loaded.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import itertools
import json
import math
import operator
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from types import ModuleType
from typing import Any

from learnloop.storage.errors import UsageError

BUILTIN = "builtin"
MAX_CONTENT = 4000  # characters of a tool result the model sees; the rest is cut
_WHAT_A_TOOL_IS = (
    "a tool is a public function with type hints and a Google-style docstring with Args"
)
_WHERE_TOOLS_COME_FROM = 'give the path of a .py file, "builtin", or an importable package.module'


class ToolsError(UsageError):
    """A ``--tools`` source that cannot be used: one line naming the spec and what to do."""


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict[str, Any]  # {"type": "function", "function": {"name", "description", ...}}
    fn: Callable[..., Any]
    source: str  # "builtin", a file's absolute path, or a module name


@dataclass(frozen=True)
class ToolResult:
    content: str  # what goes back to the model as the `tool` message's content
    # None: it ran. Else one of "unknown tool", "bad arguments", "raised", "timeout".
    error: str | None = None
    ms: float = 0.0  # wall time of the call


@dataclass(frozen=True)
class Toolbox:
    """The loaded tools, by name, in the order loaded; ``skipped`` lists the public
    functions that were not tools (``"tools.py: helper (has no docstring)"``)."""

    tools: dict[str, Tool]
    skipped: tuple[str, ...] = ()

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema for tool in self.tools.values()]

    def names(self) -> list[str]:
        return list(self.tools)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def describe(self) -> list[str]:
        """One line per tool: ``calculate(expression) — Evaluate an arithmetic expression.``"""
        return [_describe(tool) for tool in self.tools.values()]

    def run(
        self, name: str, arguments: str | dict[str, Any], timeout_s: float = 10.0
    ) -> ToolResult:
        """Call tool ``name`` with ``arguments`` (an OpenAI tool call's JSON string, or a
        dict) and say what happened; never raises (see the module's invariants)."""
        start = time.perf_counter()
        content, error = self._run(name, arguments, timeout_s)
        return ToolResult(_cut(content), error, (time.perf_counter() - start) * 1000)

    def _run(
        self, name: str, arguments: str | dict[str, Any], timeout_s: float
    ) -> tuple[str, str | None]:
        tool = self.tools.get(name)
        if tool is None:
            there = ", ".join(self.tools) or "none"
            content = f"error: there is no tool {_short_json(name)}; the tools are: {there}"
            return content, "unknown tool"
        try:
            kwargs = _check_arguments(tool, arguments)
        except _BadArguments as bad:
            return str(bad), "bad arguments"
        return _call(tool, kwargs, timeout_s)


NO_TOOLS = Toolbox({})


# --- the built-in tools -------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_ALLOWED = "only numbers, + - * / // % **, unary minus and parentheses are allowed"
_MAX_EXPRESSION = 1000  # characters: also bounds the depth of the tree _evaluate walks
_MAX_INT = 10**100
_MAX_POWER_BASE = 1e6
_MAX_EXPONENT = 100


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "2824 * 82" or "(3 + 4) ** 2 / 7".

    Args:
        expression: Numbers with + - * / // % ** and parentheses; nothing else.
    """
    if len(expression) > _MAX_EXPRESSION:
        raise ValueError(f"the expression is longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression ({e.msg}); {_ALLOWED}") from None
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except OverflowError:
        raise ValueError("the result is too large") from None
    except RecursionError:
        raise ValueError("the expression is nested too deeply") from None
    return _format_number(value)


def _evaluate(node: ast.expr) -> int | float:
    """The value of an arithmetic tree; every intermediate value stays small enough that
    no step can take long or fill memory (see :func:`_checked`)."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{_ALLOWED}, not {value!r}")
        return _checked(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ValueError(f"{_ALLOWED}, not {_what(node)}")


def _check_power(base: float, exponent: float) -> None:
    # Checked before computing: 9 ** 9 ** 9 would otherwise run for minutes and fill memory.
    if abs(exponent) > _MAX_EXPONENT:
        raise ValueError(f"exponents above {_MAX_EXPONENT} (in absolute value) are not allowed")
    if abs(base) >= _MAX_POWER_BASE:
        raise ValueError(f"** takes a base under {_MAX_POWER_BASE:.0e} in absolute value")


def _checked(value: Any) -> int | float:
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and abs(value) > _MAX_INT:
        raise ValueError("numbers above 10**100 are not allowed")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("the result is too large")
    return float(value) if isinstance(value, float) else int(value)


def _what(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"names ({node.id})"
    if isinstance(node, ast.Call):
        return "function calls"
    if isinstance(node, ast.Attribute):
        return "attribute access"
    return f"{type(node).__name__} expressions"


def _format_number(value: int | float) -> str:
    """An int when integral (``6.0`` → ``6``); else 12 significant digits (``0.1 + 0.2`` →
    ``0.3``), so float noise never reaches the model."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return format(value, ".12g")


def current_datetime(timezone: str = "UTC") -> str:
    """Get the current date and time, e.g. "2026-12-01 21:05:03 UTC (Tuesday)".

    Args:
        timezone: An IANA time zone name, such as "UTC", "Europe/Paris" or "America/New_York".
    """
    now = datetime.now(_zone(timezone))
    stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z")
    if now.utcoffset():
        offset = now.strftime("%z")
        return f"{stamp} ({now:%A}, UTC{offset[:3]}:{offset[3:]})"
    return f"{stamp} ({now:%A})"


def _zone(name: str) -> tzinfo:
    # UTC without zoneinfo: it must work on a machine without tzdata.
    if name.strip().upper() in ("UTC", "ETC/UTC", "Z"):
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f'unknown time zone "{name}": give an IANA name such as "UTC" or "Europe/Paris"'
        ) from None


_BUILTIN_TOOLS = (calculator, current_datetime)


# --- loading ------------------------------------------------------------------------------


def load_tools(specs: Sequence[str]) -> Toolbox:
    """The tools of every spec, in order; raises :class:`ToolsError` on the first spec that
    cannot be used. The same source named twice counts (and is imported) once."""
    tools: dict[str, Tool] = {}
    skipped: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        source = _source_of(spec)
        if source in seen:
            continue
        seen.add(source)
        found, reasons = _tools_of(source, _public_functions(spec, source))
        skipped += [f"{spec}: {reason}" for reason in reasons]
        if not found:
            why = f" (skipped: {', '.join(reasons)})" if reasons else ""
            raise ToolsError(f"--tools {spec}: defines no tools{why}; {_WHAT_A_TOOL_IS}")
        for tool in found:
            if tool.name in tools:
                raise ToolsError(
                    f'--tools {spec}: tool "{tool.name}" is already defined by '
                    f"{tools[tool.name].source}; rename one of them or leave one source out"
                )
            tools[tool.name] = tool
    return Toolbox(tools, tuple(skipped))


def _source_of(spec: str) -> str:
    """What a spec names: ``builtin``, a .py file's absolute path, or a module name (not
    yet known to exist). A path that cannot be a tools file is refused here."""
    if spec == BUILTIN:
        return BUILTIN
    if not spec.strip():
        raise ToolsError(f"--tools: an empty spec; {_WHERE_TOOLS_COME_FROM}")
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ToolsError(
            f"--tools {spec}: is a folder; give a .py file in it, or a package.module to import"
        )
    if not (spec.endswith(".py") or path.is_file()):
        if not all(part.isidentifier() for part in spec.split(".")):
            raise ToolsError(
                f"--tools {spec}: no file or module of that name; {_WHERE_TOOLS_COME_FROM}"
            )
        return spec
    if not path.exists():
        raise ToolsError(f"--tools {spec}: no such file; {_WHERE_TOOLS_COME_FROM}")
    if path.suffix != ".py":
        raise ToolsError(f"--tools {spec}: not a .py file; tools are functions in a .py file")
    return str(path.resolve())


def _public_functions(spec: str, source: str) -> list[tuple[str, Any]]:
    """A source's public functions (name, function), in definition order. fn.__module__
    tells a function defined there from one imported into it; an alias (other = fn) is the
    same tool, so only the name it was defined under counts."""
    if source == BUILTIN:
        return [(fn.__name__, fn) for fn in _BUILTIN_TOOLS]
    module = _import_file(spec, Path(source)) if source.endswith(".py") else _import_module(spec)
    return [
        (name, obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(obj)
        and obj.__module__ == module.__name__
        and obj.__name__ == name
    ]


_file_count = itertools.count(1)


def _import_file(spec: str, path: Path) -> ModuleType:
    """Load a .py file by path under a unique module name (two files named tools.py never
    clash). Its folder is on sys.path only while it runs, so it can import modules beside
    it at import time without changing what every later import finds."""
    name = f"learnloop_tools_{next(_file_count)}_{_identifier(path.stem)}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ToolsError(f"--tools {spec}: cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    # In sys.modules while it runs: dataclasses and pickling look the module up there.
    sys.modules[name] = module
    try:
        with _on_sys_path(path.parent):
            loader_spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a tools file that calls exit()
        del sys.modules[name]
        raise _import_failed(spec, e) from None
    return module


def _import_module(spec: str) -> ModuleType:
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as e:
        # Only the module itself missing is "no such module"; a module it imports that is
        # missing is the module failing to import.
        if e.name is not None and (spec == e.name or spec.startswith(e.name + ".")):
            raise ToolsError(
                f"--tools {spec}: no file or module of that name; {_WHERE_TOOLS_COME_FROM}"
            ) from None
        raise _import_failed(spec, e) from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        raise _import_failed(spec, e) from None


def _import_failed(spec: str, error: BaseException) -> ToolsError:
    return ToolsError(
        f"--tools {spec}: failed to import: {_one_line(error)}; fix it or leave it out"
    )


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)


def _tools_of(source: str, functions: list[tuple[str, Any]]) -> tuple[list[Tool], list[str]]:
    """The functions that are tools, and a ``"name (reason)"`` for each that is not."""
    from transformers.utils import get_json_schema

    tools: list[Tool] = []
    reasons: list[str] = []
    for name, fn in functions:
        problem = _signature_problem(fn)
        if problem is None:
            try:
                schema = get_json_schema(fn)
            except Exception as e:  # any failure to describe it means: not a tool
                problem = _schema_problem(name, e)
            else:  # OpenAI's shape: name, description, parameters (no "return": the model
                # reads every schema in its prompt, and the result speaks for itself)
                schema["function"].pop("return", None)
                tools.append(Tool(name, schema, fn, source))
                continue
        reasons.append(f"{name} ({problem})")
    return tools, reasons


def _signature_problem(fn: Callable[..., Any]) -> str | None:
    """Why a tool call (keyword arguments from a JSON object) could not call ``fn``."""
    for param in inspect.signature(fn).parameters.values():
        if param.kind is param.POSITIONAL_ONLY:
            return f"parameter {param.name} is positional-only"
        if param.kind is param.VAR_POSITIONAL:
            return f"takes *{param.name}"
        if param.kind is param.VAR_KEYWORD:
            return f"takes **{param.name}"
    return None


def _schema_problem(name: str, error: Exception) -> str:
    # "Cannot generate JSON schema for f because it has no docstring!" → "has no docstring"
    text = _first_line(str(error)) or type(error).__name__
    for prefix in (f"Cannot generate JSON schema for {name} because ", "it "):
        text = text.removeprefix(prefix)
    text = text.split(", likely")[0].removesuffix(f" in function {name}").rstrip("!.: ")
    return _shorten(text, 120)


# --- running ------------------------------------------------------------------------------


class _BadArguments(Exception):
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


def _check_arguments(tool: Tool, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for the call, or _BadArguments saying exactly what is wrong
    and what the tool takes. Integral floats become ints where an integer is expected."""
    if isinstance(arguments, str):
        # An empty string is how some models and clients write "no arguments".
        if not arguments.strip():
            arguments = "{}"
        try:
            arguments = json.loads(arguments)
        except ValueError as e:
            raise _BadArguments(
                f"error: {tool.name} arguments are not JSON ({_first_line(str(e))}); "
                f"{_takes(tool)}; got {_shorten(repr(arguments), 200)}"
            ) from None
    if not isinstance(arguments, dict):
        raise _BadArguments(
            f"error: {tool.name} arguments must be a JSON object; {_takes(tool)}; "
            f"got {_short_json(arguments)}"
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
                problems.append(f'needs "{key}" to be {wanted}, not {_short_json(value, 60)}')
    if not problems:
        return kwargs
    # Where the message already names every parameter, the signature would only repeat it.
    signature = "" if set(missing) == set(properties) else f"; {_takes(tool)}"
    raise _BadArguments(
        f"error: {tool.name} {'; '.join(problems)}{signature}; got {_short_json(arguments)}"
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
            part += f"{equals}{_short_json(defaults[name], 30)}"
        parts.append(part)
    return f"{tool.name}({', '.join(parts)})"


def _describe(tool: Tool) -> str:
    description = _first_line(tool.schema["function"].get("description", ""))
    return f"{_signature(tool, with_types=False)} — {description}".rstrip(" —")


def _call(tool: Tool, kwargs: dict[str, Any], timeout_s: float) -> tuple[str, str | None]:
    """Run the tool in a daemon worker thread and wait at most ``timeout_s``.

    A Python thread cannot be killed: a tool that runs past the timeout is abandoned, still
    running, and its result is dropped when it comes (as a daemon thread it never holds up
    the process's exit). A subprocess could be killed, but the operator's tools may hold
    state and imports (a client, a cache, a loaded index) that a fresh process would lose,
    and their arguments and results would all have to be picklable. Tools may be called
    from several threads at once (one per turn being answered).
    """
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            value = tool.fn(**kwargs)
            if inspect.isawaitable(value):  # an async def tool: run it to its end here
                value = asyncio.run(_awaited(value))
            # Converted here too: a slow or failing __str__ is the tool's own code.
            outcome["content"] = _as_content(value)
        except BaseException as e:  # everything, SystemExit too: it goes back to the model
            outcome["error"] = e

    worker = threading.Thread(target=work, name=f"learnloop-tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if worker.is_alive():
        return f"error: {tool.name} did not finish within {timeout_s:g} s", "timeout"
    if "error" in outcome:
        return f"error: {tool.name} raised {_one_line(outcome['error'])}", "raised"
    return str(outcome["content"]), None


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _as_content(value: Any) -> str:
    """A str as is; other JSON-able values as JSON; anything else as str()."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return _safe_str(value)


def _safe_str(value: object) -> str:
    # str() runs the tool's own code (__str__), which may fail like any of it.
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _cut(content: str) -> str:
    if len(content) <= MAX_CONTENT:
        return content
    tail = f"… (cut: {len(content)} characters in all)"
    return content[: MAX_CONTENT - len(tail)] + tail


def _one_line(error: BaseException) -> str:
    message = _first_line(_safe_str(error))
    name = type(error).__name__
    return _shorten(f"{name}: {message}" if message else name, 300)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short_json(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return _shorten(text, limit)
