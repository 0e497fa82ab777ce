"""The tools the agent may call: loaded once, at start, from sources the operator named.

A *source* is named by a spec (``--tools SPEC``, repeatable):

- ``builtin``: the built-in tools of :mod:`~learnloop.learning.builtin_tools`;
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

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from learnloop.learning.builtin_tools import BUILTIN_TOOLS
from learnloop.learning.tool_arguments import (
    BadArguments,
    Tool,
    check_arguments,
    describe,
    first_line,
    short_json,
    shorten,
)
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
        return [describe(tool) for tool in self.tools.values()]

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
            content = f"error: there is no tool {short_json(name)}; the tools are: {there}"
            return content, "unknown tool"
        try:
            kwargs = check_arguments(tool, arguments)
        except BadArguments as bad:
            return str(bad), "bad arguments"
        return _call(tool, kwargs, timeout_s)


NO_TOOLS = Toolbox({})


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
        return [(fn.__name__, fn) for fn in BUILTIN_TOOLS]
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
    text = first_line(str(error)) or type(error).__name__
    for prefix in (f"Cannot generate JSON schema for {name} because ", "it "):
        text = text.removeprefix(prefix)
    text = text.split(", likely")[0].removesuffix(f" in function {name}").rstrip("!.: ")
    return shorten(text, 120)


# --- running ------------------------------------------------------------------------------


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
    message = first_line(_safe_str(error))
    name = type(error).__name__
    return shorten(f"{name}: {message}" if message else name, 300)
