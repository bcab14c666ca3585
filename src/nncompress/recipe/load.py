"""Reading a recipe file: bounded in size, UTF-8, YAML (safe, no duplicate keys, no alias bombs)
or TOML, then validated by ``parse_recipe``."""

from __future__ import annotations

import os
from importlib import resources
import re
import sys
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from nncompress.paths import read_bounded
from nncompress.errors import RecipeError
from nncompress.recipe.messages import _one_line
from nncompress.recipe.parse import parse_recipe
from nncompress.recipe.schema import RECIPE_VERSION, Recipe

MAX_RECIPE_BYTES = 1 << 20
"""A recipe is a page of settings; anything larger is refused before it is read."""
MAX_RECIPE_NODES = 20_000
"""Values a recipe may hold once its YAML aliases are expanded: a few aliases nested ten deep
("billion laughs") would otherwise stand for 10**9 values."""


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
