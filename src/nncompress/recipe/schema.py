"""The recipe's schema: its keys, its sections and the ``Recipe`` they make.

The allowed keys are derived from the config dataclasses' fields, so a new
config field is a new recipe key with no change here."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Optional

from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.errors import ConfigError, RecipeError
from nncompress.recipe.messages import _expected, _show

RECIPE_VERSION = 1
"""The recipe schema version this code writes; a file declaring a newer one is refused."""

HEAD_KEYS = ("version", "model", "model_kwargs", "data", "normalize", "val_size", "objective", "seed")
TOP_KEYS = (*HEAD_KEYS, "train", "sensitivity", "prune", "share", "coding")
OBJECTIVES = ("auto", "classification", "kl", "cosine", "mse")
CODING_FIELDS = ("rel_bits", "raw_dtype", "codebook_dtype", "batchnorm")
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
    val_size: Optional[int] = None
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
