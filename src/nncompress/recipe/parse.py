"""A recipe read into plain values (YAML, TOML or JSON alike) -> a validated ``Recipe``.

Values are type-checked before the dataclass sees them (``true`` is not an integer; ``5.0`` is
not an epoch count) and the dataclass's own range check is re-raised naming the key's dotted
path, so a user learns which line of which file to fix."""

from __future__ import annotations

import typing
from dataclasses import replace
from typing import Any, Mapping, Optional

from nncompress.config import ShareConfig
from nncompress.errors import ConfigError, RecipeError
from nncompress.plain import is_int
from nncompress.recipe.checks import _hints, _known, _mapping, _typed
from nncompress.recipe.messages import _did_you_mean, _expected, _kind, _one_line, _show
from nncompress.recipe.schema import (
    _CODING_KEYS,
    CODING_FIELDS,
    OBJECTIVES,
    RECIPE_VERSION,
    SECTIONS,
    TOP_KEYS,
    Recipe,
    _Section,
)


def parse_recipe(mapping: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe already read into plain values (YAML/TOML/JSON alike)."""
    if not isinstance(mapping, Mapping):
        raise RecipeError(
            f"{source}: expected a mapping of sections ({', '.join(TOP_KEYS)}) at the top level, got {_kind(mapping)}"
        )
    for key in mapping:
        _known(key, TOP_KEYS, "", source)
    version = mapping.get("version", RECIPE_VERSION)
    if not is_int(version) or version < 1:
        raise RecipeError(f"{source}: version: expected an integer >= 1, got {_show(version)}", field="version")
    if version > RECIPE_VERSION:
        raise RecipeError(
            f"{source}: version: recipe version {version} is newer than this nncompress reads "
            f"(up to {RECIPE_VERSION}); upgrade nncompress",
            field="version",
        )
    model = _model(mapping.get("model"), source)
    model_kwargs = mapping.get("model_kwargs")
    if model_kwargs is not None:
        if not isinstance(model_kwargs, Mapping) or not model or ":" not in model:
            raise RecipeError(
                f"{source}: model_kwargs: expected a mapping of a model factory's keyword arguments "
                f"(with `model: package.module:factory`), got {_show(model_kwargs)}",
                field="model_kwargs",
            )
        from nncompress.errors import ModelError
        from nncompress.models import plain_kwargs

        try:
            model_kwargs = plain_kwargs(model_kwargs)
        except ModelError as exc:
            raise RecipeError(f"{source}: model_kwargs: {exc}", field="model_kwargs") from None
    data = mapping.get("data")
    if data is not None and not (isinstance(data, str) and data.strip()):
        raise RecipeError(
            f"{source}: data: expected fashion-mnist, digits, a folder path or package.module:function, "
            f"got {_show(data)}",
            field="data",
        )
    normalize = mapping.get("normalize")
    if normalize is not None:
        from nncompress.data.datasets import _normalize_kind

        if not isinstance(normalize, str):
            raise RecipeError(
                f"{source}: normalize: expected standardize, unit, none or 'MEAN,STD', got {_show(normalize)}",
                field="normalize",
            )
        try:
            _normalize_kind(normalize)
        except ConfigError as exc:
            raise RecipeError(f"{source}: {exc}") from None
    val_size = mapping.get("val_size")
    if val_size is not None and (not is_int(val_size) or val_size < 1):
        raise RecipeError(
            f"{source}: val_size: expected a positive number of validation examples, got {_show(val_size)}",
            field="val_size",
        )
    objective = mapping.get("objective", "auto")
    if objective not in OBJECTIVES:
        raise RecipeError(
            f"{source}: objective: expected one of {', '.join(OBJECTIVES)}, got {_show(objective)}"
            f"{_did_you_mean(objective, OBJECTIVES) if isinstance(objective, str) else ''}",
            field="objective",
        )
    seed = mapping.get("seed", 0)
    if not is_int(seed):
        raise RecipeError(f"{source}: seed: expected an integer, got {_show(seed)}", field="seed")

    coding = _mapping(mapping.get("coding"), "coding", source)
    coding_kwargs: dict[str, Any] = {}
    for key, value in coding.items():
        _known(key, _CODING_KEYS, "coding.", source)
        coding_kwargs[key] = _typed(value, _hints(ShareConfig)[key], f"coding.{key}", source)
    configs: dict[str, Any] = {
        sec.name: _section(sec, mapping.get(sec.name), seed, source, coding_kwargs if sec.name == "share" else {})
        if sec.name in mapping or sec.absent_enabled
        else None
        for sec in SECTIONS
    }
    return Recipe(
        model=model,
        model_kwargs=model_kwargs,
        data=data,
        normalize=normalize,
        val_size=val_size,
        objective=objective,
        seed=seed,
        **configs,
    )


def _model(value: Any, source: str) -> Optional[str]:
    if value is None:
        return None
    from nncompress.imports import is_import_spec
    from nncompress.models import MODELS  # lazy: imports torch

    if isinstance(value, str) and (value in MODELS or is_import_spec(value)):
        return value
    hint = _did_you_mean(value, MODELS) if isinstance(value, str) else ""
    raise RecipeError(
        f"{source}: model: expected one of {', '.join(sorted(MODELS))} or a factory "
        f"package.module:name, got {_show(value)}{hint}",
        field="model",
    )


def _section(sec: _Section, raw: Any, seed: int, source: str, extra: Mapping[str, Any]) -> Any:
    """Build one section's config, or None when it is switched off. A switched-off
    section is still validated, so a typo in it is caught before it is switched on."""
    body = _mapping(raw, sec.name, source)
    hints = _hints(sec.cls)
    allowed = sec.keys()
    kwargs: dict[str, Any] = {}
    enabled = True
    for key, value in body.items():
        path = f"{sec.name}.{key}"
        _known(key, allowed, f"{sec.name}.", source)
        if key == "enabled":
            enabled = _typed(value, bool, path, source)
        elif key == "layers":
            assert sec.layer_field is not None and sec.layer_key is not None  # keys() offers "layers" only then
            kwargs[sec.layer_field] = _layers(
                value, path, sec.layer_key, typing.get_args(hints[sec.layer_field])[1], source
            )
        else:
            kwargs[key] = _typed(value, hints[key], path, source)
    if "seed" in hints:
        kwargs["seed"] = seed
    kwargs.update(extra)
    try:
        cfg = sec.cls(**kwargs)
    except ConfigError as exc:
        path = _recipe_path(exc, sec)
        raise _expected(exc, path, source) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise RecipeError(f"{source}: {sec.name}: {_one_line(str(exc))}", field=sec.name) from None
    floats = _as_floats(kwargs, hints)
    if floats:
        cfg = replace(cfg, **floats)
    return cfg if enabled else None


def _as_floats(kwargs: Mapping[str, Any], hints: Mapping[str, Any]) -> dict[str, Any]:
    """The float fields given as ints, as floats: ``lr: 1`` and ``lr: 1.0`` give the same config."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is float and is_int(value):
            out[key] = float(value)
        elif isinstance(value, Mapping) and typing.get_args(hint)[1:] == (float,):
            if any(is_int(v) for v in value.values()):
                out[key] = {k: float(v) if is_int(v) else v for k, v in value.items()}
    return out


def _layers(raw: Any, path: str, key: str, value_type: Any, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer, entry in _mapping(raw, path, source).items():
        if not isinstance(layer, str) or not layer:
            raise RecipeError(
                f"{source}: {path}: layer names must be non-empty strings, got {_show(layer)}", field=path
            )
        for k, v in _mapping(entry, f"{path}.{layer}", source).items():
            _known(k, [key], f"{path}.{layer}.", source)
            out[layer] = _typed(v, value_type, f"{path}.{layer}.{k}", source)
    return out


def _recipe_path(exc: ConfigError, sec: _Section) -> str:
    """The recipe key of the config field a ConfigError names; the section when it names none."""
    name = exc.field
    if name is None:
        return sec.name
    if exc.key is not None and name == sec.layer_field:
        return f"{sec.name}.layers.{exc.key}.{sec.layer_key}"
    if name == "seed":
        return "seed"
    if sec.name == "share" and name in CODING_FIELDS:
        return f"coding.{name}"
    return f"{sec.name}.{name}"
