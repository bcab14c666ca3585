"""Writing the resolved recipe, every key explicit: what a run logs next to its results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from nncompress.atomic import write_text
from nncompress.recipe.schema import CODING_FIELDS, HEAD_KEYS, RECIPE_VERSION, SECTIONS, TOP_KEYS, Recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe, every key explicit, in the file schema; a disabled
    stage is written as ``{enabled: false}`` (its settings are not kept)."""
    out: dict[str, Any] = {"version": RECIPE_VERSION, "model": recipe.model}
    if recipe.model_kwargs is not None:
        out["model_kwargs"] = _plain(recipe.model_kwargs)
    out["data"] = recipe.data
    if recipe.normalize is not None:
        out["normalize"] = recipe.normalize
    if recipe.val_size is not None:
        out["val_size"] = recipe.val_size
    if recipe.objective != "auto":
        out["objective"] = recipe.objective
    out["seed"] = recipe.seed
    for sec in SECTIONS:
        cfg = getattr(recipe, sec.name)
        if cfg is None:
            out[sec.name] = {"enabled": False}
            continue
        body: dict[str, Any] = {"enabled": True} if sec.switch else {}
        body.update({k: _plain(getattr(cfg, k)) for k in sec.field_keys()})
        if sec.layer_field:
            body["layers"] = {name: {sec.layer_key: _plain(v)} for name, v in getattr(cfg, sec.layer_field).items()}
        out[sec.name] = body
    out["coding"] = {k: _plain(getattr(recipe.share, k)) for k in CODING_FIELDS}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _Flow(dict):
    """A mapping written on one line (one layer's entry)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))


def dump_recipe(recipe: Recipe) -> str:
    """YAML of the resolved recipe, sections in run order, one blank line between
    them; ``parse_recipe(yaml.safe_load(dump_recipe(r))) == r``."""
    data = recipe_to_dict(recipe)
    for sec in SECTIONS:
        layers = data[sec.name].get("layers")
        if layers is not None:
            data[sec.name]["layers"] = {k: _Flow(v) for k, v in layers.items()}

    def dump(part: dict[str, Any]) -> str:
        return yaml.dump(part, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)

    head = dump({k: data[k] for k in HEAD_KEYS if k in data})
    return "\n".join([head, *(dump({k: data[k]}) for k in TOP_KEYS[len(HEAD_KEYS) :])])


def save_recipe(recipe: Recipe, path: Union[str, Path]) -> None:
    """Write the resolved recipe atomically, so a crashed run never leaves half a recipe."""
    write_text(path, dump_recipe(recipe))
