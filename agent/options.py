"""Config dataclasses become CLI flags here, in one place.

Every config in learnloop is a frozen dataclass whose fields carry their help text in
``metadata["help"]``. :func:`dataclass_options` turns such a class into click options
(``lora_r`` -> ``--lora-r``) and :func:`build_config` turns the parsed values back into
an instance, keeping defaults for flags the user did not give.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_type_hints

import click

T = TypeVar("T")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def dataclass_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding one click option per field of ``cls`` (default None = keep default)."""
    hints = get_type_hints(cls)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for field in reversed(dataclasses.fields(cls)):
            if field.metadata.get("cli", True) is False:  # set through the API only
                continue
            kind = hints[field.name]
            click_type: Any = {int: int, float: float, bool: bool}.get(kind, str)
            help_text = field.metadata.get("help", "")
            switch = field.metadata.get("switch")
            if switch and kind is bool:  # a flag pair: --whole-answer / --first-paragraph
                off = "on" if field.default else "off"
                fn = click.option(
                    f"{_flag(field.name)}/{switch}",
                    field.name,
                    default=None,
                    help=f"{help_text} [default: {off}]",
                )(fn)
                continue
            if field.default != "":
                help_text += f" [default: {field.default}]"
            fn = click.option(
                _flag(field.name), field.name, type=click_type, default=None, help=help_text
            )(fn)
        return fn

    return decorate


def build_config(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from parsed CLI values; None means "not given"."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in values.items() if k in names and v is not None}
    return cls(**given)


def pop_config_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Remove and return the entries of ``values`` that belong to ``cls``'s fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: values.pop(k) for k in list(values) if k in names}


def parse_settings(cls: type, items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings as typed values for ``cls``'s fields (ValueError if bad)."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise ValueError(
                f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(names))}"
            )
        kind = hints[name]
        try:
            values[name] = click.BOOL(raw) if kind is bool else kind(raw)
        except (ValueError, click.BadParameter) as exc:
            raise ValueError(f"--set {item!r}: {raw!r} is not a {kind.__name__}") from exc
    return values


def replace_config(config: T, settings: Mapping[str, Any], what: str = "setting") -> T:
    """``config`` with ``settings`` (field name -> value, None = not given) on top, from
    CLI flags or a JSON body alike: an unknown field, a value of the wrong type or one the
    config refuses is a UsageError naming it, and nothing else happens."""
    from learnloop.storage.errors import UsageError

    kinds = get_type_hints(type(config))
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(given) - set(kinds))
    if unknown:
        raise UsageError(f"unknown {what}(s): {', '.join(unknown)}")
    for name, value in given.items():
        accepted = {float: (int, float), int: (int,)}.get(kinds[name], (kinds[name],))
        if isinstance(value, bool) != (kinds[name] is bool) or not isinstance(value, accepted):
            raise UsageError(f"{what} {name} must be a {kinds[name].__name__}")
    try:
        return dataclasses.replace(config, **given)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad {what}: {exc}") from exc
