"""The built-in tools (``--tools builtin``): a safe calculator and the current date and time.

Invariant: no call can run long or fill memory whatever the model writes: the calculator
walks the expression's syntax tree itself (never ``eval``), allows only arithmetic, and
bounds every intermediate value and every power before computing it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

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


BUILTIN_TOOLS = (calculator, current_datetime)
