"""Recipes: one YAML (or TOML) file that describes a whole compression run.

A recipe names the model, the data and the seed, and holds one section per
stage (train, sensitivity, prune, share, coding). Every key is optional and
takes the dataclass default, so a recipe says only what differs -- while
``dump_recipe`` writes the resolved run with every key explicit, which is what
a run should log next to its results.

The allowed keys are derived from the config dataclasses' fields, so a new
config field is a new recipe key with no change here. Values are type-checked
before the dataclass sees them (``true`` is not an integer; ``5.0`` is not an
epoch count) and the dataclass's own range check is re-raised naming the key's
dotted path, so a user learns which line of which file to fix.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
import re
import sys
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from nncompress.atomic import write_text
from nncompress.paths import read_bounded
from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.errors import ConfigError, RecipeError
from nncompress.plain import is_int

RECIPE_VERSION = 1
MAX_RECIPE_BYTES = 1 << 20
"""A recipe is a page of settings; anything larger is refused before it is read."""
MAX_RECIPE_NODES = 20_000
"""Values a recipe may hold once its YAML aliases are expanded: a few aliases nested ten deep
("billion laughs") would otherwise stand for 10**9 values."""
"""The recipe schema version this code writes; a file declaring a newer one is refused."""

HEAD_KEYS = ("version", "model", "model_kwargs", "data", "normalize", "objective", "seed")
TOP_KEYS = (*HEAD_KEYS, "train", "sensitivity", "prune", "share", "coding")
OBJECTIVES = ("auto", "classification", "kl", "cosine", "mse")
CODING_FIELDS = ("rel_bits", "raw_dtype", "codebook_dtype")
"""ShareConfig fields that describe the file encoding, so they live in the ``coding`` section."""


@dataclass(frozen=True)
class _Section:
    """How one recipe section maps onto a config dataclass."""

    name: str
    cls: type[Any]  # one of the config dataclasses, read through fields() and getattr
    hidden: tuple[str, ...] = ()  # fields set elsewhere (the seed, the coding section)
    switch: bool = False  # has `enabled: bool`
    absent_enabled: bool = True  # whether a recipe without this section runs the stage
    layer_field: Optional[str] = None  # the per-layer mapping field, written as `layers`
    layer_key: Optional[str] = None  # the key inside one layer's entry

    def field_keys(self) -> list[str]:
        skip = {"seed", self.layer_field, *self.hidden}
        return [f.name for f in fields(self.cls) if f.name not in skip]

    def keys(self) -> list[str]:
        """Every key this section accepts, in the order a dump writes them."""
        return (["enabled"] if self.switch else []) + self.field_keys() + (["layers"] if self.layer_field else [])


SECTIONS = (
    _Section("train", TrainConfig),
    _Section("sensitivity", SensitivityConfig, switch=True, absent_enabled=False),
    _Section("prune", PruneConfig, switch=True, layer_field="layer_scale", layer_key="q_scale"),
    _Section("share", ShareConfig, hidden=CODING_FIELDS, layer_field="layer_bits", layer_key="bits"),
)
_BY_NAME = {s.name: s for s in SECTIONS}
_CODING_KEYS = list(CODING_FIELDS)


@dataclass(frozen=True)
class Recipe:
    """A whole compression run. ``sensitivity``/``prune`` are None when the recipe
    disables that stage; the sensitivity scan runs only when its section is there
    (it changes the pruning: its per-layer q scales feed the pruner). The recipe's ``seed`` is written into every
    section that has one, so one number fixes every source of randomness of the run."""

    model: Optional[str] = None
    model_kwargs: Optional[Mapping[str, Any]] = None
    data: Optional[str] = None
    normalize: Optional[str] = None
    objective: str = "auto"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    sensitivity: Optional[SensitivityConfig] = None
    prune: Optional[PruneConfig] = field(default_factory=PruneConfig)
    share: ShareConfig = field(default_factory=ShareConfig)

    def __post_init__(self) -> None:
        for sec in SECTIONS:
            cfg = getattr(self, sec.name)
            if cfg is None and sec.switch:
                continue
            if not isinstance(cfg, sec.cls):
                raise RecipeError(f"Recipe.{sec.name} must be a {sec.cls.__name__}, got {_show(cfg)}")
            if "seed" in {f.name for f in fields(sec.cls)} and cfg.seed != self.seed:
                try:
                    object.__setattr__(self, sec.name, replace(cfg, seed=self.seed))
                except ConfigError as exc:
                    raise _expected(exc, "seed", None) from None


# ---------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.2 does; PyYAML's
    1.1 resolver wants ``1.0e-4`` and would hand us a string) and refuses
    duplicate keys, which PyYAML otherwise resolves silently to the last one."""

    def get_single_node(self) -> Optional[yaml.Node]:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node, MAX_RECIPE_NODES)
        return node

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Refuse a document whose aliases stand for more than ``limit`` values, or that contains itself; each
    distinct node is sized once, so the check costs the size of the text, not of its expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > limit:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"the recipe's aliases expand to more than {limit:,} values (an alias bomb?); write the values out",
                    node.start_mark,
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it; a recipe cannot be recursive", node.start_mark
            )
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def shipped_recipe(name: str) -> Recipe:
    """A recipe file that ships inside the package (``mlp-digits.yaml`` is what ``nncompress demo``
    runs); the repository's ``recipes/`` folder links to it, so there is one copy to keep."""
    with resources.as_file(resources.files("nncompress") / "recipes" / name) as path:
        return load_recipe(path)


def load_recipe(path: Union[str, Path]) -> Recipe:
    """Read and validate a recipe file: ``.toml`` is TOML, anything else YAML."""
    source = str(path)
    if not os.path.lexists(path):
        raise RecipeError(f"{source}: no such recipe file")
    raw = read_bounded(path, MAX_RECIPE_BYTES, source, RecipeError)  # a FIFO or device is refused unread
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    if Path(path).suffix.lower() == ".toml":
        data = _parse_toml(text, source)
    else:
        data = _parse_yaml(text, source)
        if data is None:
            raise RecipeError(f"{source}: the recipe is empty; write at least `version: {RECIPE_VERSION}`")
    return parse_recipe(data, source)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "malformed"
        raise RecipeError(f"{source}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: invalid YAML: {_one_line(str(exc))}") from None
    except RecursionError:
        raise RecipeError(f"{source}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise RecipeError(f"{source}: invalid YAML: {_one_line(str(exc)) or type(exc).__name__}") from None


def _parse_toml(text: str, source: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise RecipeError(
                f"{source}: reading TOML needs Python 3.11+ or `pip install tomli`; or write the recipe in YAML"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise RecipeError(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise RecipeError(f"{source}: invalid TOML: nested too deeply") from None


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


def _expected(exc: ConfigError, path: str, source: Optional[str]) -> RecipeError:
    """config.py's "NAME must be X, got V" as a recipe says it, "SOURCE: PATH: expected X, got V";
    an error of no range check as "SOURCE: PATH: message". The error names ``path`` as its field."""
    head = f"{source}: {path}" if source else path
    if exc.expected is None:
        return RecipeError(f"{head}: {exc}", field=path)
    return RecipeError(
        f"{head}: expected {exc.expected}, got {exc.got}", field=path, expected=exc.expected, got=exc.got
    )


# ---------------------------------------------------------------- checks


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


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


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


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (str, int, float, bool)):
        return f"the value {_show(value)}"
    return f"a {type(value).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- overrides


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


# ---------------------------------------------------------------- writing


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe, every key explicit, in the file schema; a disabled
    stage is written as ``{enabled: false}`` (its settings are not kept)."""
    out: dict[str, Any] = {"version": RECIPE_VERSION, "model": recipe.model}
    if recipe.model_kwargs is not None:
        out["model_kwargs"] = _plain(recipe.model_kwargs)
    out["data"] = recipe.data
    if recipe.normalize is not None:
        out["normalize"] = recipe.normalize
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


__all__ = [
    "RECIPE_VERSION",
    "Recipe",
    "RecipeError",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "recipe_to_dict",
    "save_recipe",
    "shipped_recipe",
]
