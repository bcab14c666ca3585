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

The modules, each importing the ones it builds on directly: ``schema`` (keys,
sections, the ``Recipe`` dataclass), ``messages`` (how errors quote values),
``checks`` (unknown keys, value types), ``parse`` (plain values -> ``Recipe``),
``load`` (reading a file), ``overrides`` (dotted keys) and ``dump`` (writing).
"""

from nncompress.errors import RecipeError
from nncompress.recipe.dump import dump_recipe, recipe_to_dict, save_recipe
from nncompress.recipe.load import MAX_RECIPE_BYTES as MAX_RECIPE_BYTES
from nncompress.recipe.load import MAX_RECIPE_NODES as MAX_RECIPE_NODES
from nncompress.recipe.load import load_recipe, shipped_recipe
from nncompress.recipe.overrides import apply_overrides
from nncompress.recipe.parse import parse_recipe
from nncompress.recipe.schema import CODING_FIELDS as CODING_FIELDS
from nncompress.recipe.schema import HEAD_KEYS as HEAD_KEYS
from nncompress.recipe.schema import OBJECTIVES as OBJECTIVES
from nncompress.recipe.schema import SECTIONS as SECTIONS
from nncompress.recipe.schema import TOP_KEYS as TOP_KEYS
from nncompress.recipe.schema import RECIPE_VERSION, Recipe

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
