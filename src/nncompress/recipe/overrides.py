"""Dotted-key overrides of a recipe (``prune.tolerance=2``), validated like a file."""

from __future__ import annotations

from typing import Any, Mapping

from nncompress.errors import RecipeError
from nncompress.recipe.dump import recipe_to_dict
from nncompress.recipe.parse import parse_recipe
from nncompress.recipe.schema import _BY_NAME, Recipe


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any], source: str = "override") -> Recipe:
    """Set dotted keys ("prune.tolerance", "prune.layers.conv1.q_scale", "seed") on
    a recipe; the result is validated exactly like a file, so a flag can never
    smuggle in a value a recipe file would be refused for. A mapping value is
    merged into the mapping already there."""
    data = recipe_to_dict(recipe)
    for dotted, value in overrides.items():
        if not isinstance(dotted, str) or not dotted.strip():
            raise RecipeError(f"{source}: {dotted!r}: expected a dotted key like prune.tolerance")
        _set(data, _split(dotted), value, dotted, source)
    return parse_recipe(data, source)


def _split(dotted: str) -> list[str]:
    """Split a dotted key; a layer name may itself hold dots (``features.0``)."""
    parts = dotted.split(".")
    if len(parts) > 4 and parts[0] in _BY_NAME and parts[1] == "layers":
        return [parts[0], "layers", ".".join(parts[2:-1]), parts[-1]]
    return parts


def _set(data: dict[str, Any], parts: list[str], value: Any, dotted: str, source: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise RecipeError(f"{source}: {dotted}: unknown key ({'.'.join(parts[: i + 1])} is a value, not a section)")
        node = child
    last = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for key, sub in value.items():
            _set(node, [last, str(key)], sub, f"{dotted}.{key}", source)
    else:
        node[last] = dict(value) if isinstance(value, Mapping) else value
