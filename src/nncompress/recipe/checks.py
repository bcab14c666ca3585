"""Key and value checks: an unknown key is named with where it belongs or what it resembles, and
a value is checked against its config field's annotation before the dataclass sees it."""

from __future__ import annotations

import types
import typing
from typing import Any, Mapping, Union

from nncompress.errors import RecipeError
from nncompress.plain import is_int
from nncompress.recipe.messages import _did_you_mean, _kind, _show
from nncompress.recipe.schema import _BY_NAME, CODING_FIELDS, SECTIONS


def _known(key: Any, allowed: list[str] | tuple[str, ...], prefix: str, source: str) -> None:
    if not isinstance(key, str):
        raise RecipeError(f"{source}: {prefix}{key!r}: keys must be strings, got {_kind(key)}")
    if key in allowed:
        return
    section = prefix.rstrip(".")
    if key == "seed" and section in _BY_NAME:
        raise RecipeError(
            f"{source}: {prefix}seed: unknown key (the seed is set once, at the top level: "
            f"`seed: N` seeds every stage)",
            field=f"{prefix}seed",
        )
    sec = _BY_NAME.get(section)
    if sec is not None and key == sec.layer_field:
        raise RecipeError(
            f"{source}: {prefix}{key}: unknown key (write per-layer values as "
            f"{section}.layers.<layer>.{sec.layer_key})",
            field=f"{prefix}{key}",
        )
    homes = [s.name for s in SECTIONS if key in s.keys() and s.name != section]
    homes += ["coding"] if key in CODING_FIELDS and section != "coding" else []
    if homes:
        raise RecipeError(
            f"{source}: {prefix}{key}: unknown key (it belongs in {' or '.join(f'{h}.{key}' for h in homes)})",
            field=f"{prefix}{key}",
        )
    hint = _did_you_mean(key, allowed)
    if not hint:
        hint = f"; expected one of {', '.join(allowed)}"
    raise RecipeError(f"{source}: {prefix}{key}: unknown key{hint}", field=f"{prefix}{key}")


def _mapping(value: Any, path: str, source: str) -> Mapping[Any, Any]:
    """A section or layer entry; an empty YAML section (``train:``) reads as None."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RecipeError(f"{source}: {path}: expected a mapping of keys, got {_show(value)}", field=path)
    return value


def _typed(value: Any, hint: Any, path: str, source: str) -> Any:
    """Check a value against a dataclass field's annotation; unknown annotations
    (``Any``) pass through to the dataclass's own check."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:  # Optional[X] or X | None
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _typed(value, rest[0], path, source) if len(rest) == 1 else value
    if hint is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif hint is int:
        if is_int(value):
            return value
        expected = "an integer"
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                float(value)
                return value  # an int stays an int until the range check has quoted it as written
            except OverflowError:
                pass
        expected = "a number"
    elif hint is str:
        if isinstance(value, str):
            return value
        expected = "a string"
    else:
        return value
    raise RecipeError(
        f"{source}: {path}: expected {expected}, got {_show(value)}", field=path, expected=expected, got=_show(value)
    )


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]
