"""What every config shares: the range checks that name the field, the dict round trip, and TrainConfig
(the recipe each stage's fine-tuning uses)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, TypeVar

from nncompress.errors import ConfigError
from nncompress.plain import is_int


def _require(cond: bool, name: str, expected: str, value: Any, key: Optional[str] = None) -> None:
    """ConfigError "NAME must be EXPECTED, got VALUE" unless ``cond``; ``key`` is the
    entry of a per-layer mapping field (shown as ``NAME['KEY']``)."""
    if not cond:
        shown = name if key is None else f"{name}[{key!r}]"
        raise ConfigError(
            f"{shown} must be {expected}, got {value!r}", field=name, key=key, expected=expected, got=repr(value)
        )


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive_int(x: Any) -> bool:
    return is_int(x) and x > 0


def _non_negative_int(x: Any) -> bool:
    return is_int(x) and x >= 0


MAX_STEPS = 1000


def _check_q_range(q0: Any, q_step: Any, q_max: Any) -> None:
    _require(_finite(q0) and q0 >= 0, "q0", "a number >= 0", q0)
    _require(_finite(q_step) and q_step > 0, "q_step", "a number > 0", q_step)
    _require(_finite(q_max) and q_max >= q0, "q_max", f"a number >= q0 ({q0})", q_max)
    _require(
        (q_max - q0) / q_step < MAX_STEPS,
        "q_step",
        f"large enough for at most {MAX_STEPS} steps from q0 to q_max",
        q_step,
    )


def _check_seed(seed: Any) -> None:
    _require(is_int(seed) and 0 <= seed < 2**63, "seed", "an integer in 0..2**63-1", seed)


def _check_optimizer(lr: Any, momentum: Any, weight_decay: Any, batch_size: Any) -> None:
    _require(_finite(lr) and lr > 0, "lr", "a finite number > 0", lr)
    _require(_finite(momentum) and 0 <= momentum < 1, "momentum", "in [0, 1)", momentum)
    _require(_finite(weight_decay) and weight_decay >= 0, "weight_decay", "a number >= 0", weight_decay)
    _require(_positive_int(batch_size), "batch_size", "an integer >= 1", batch_size)


_C = TypeVar("_C", bound="_Config")


@dataclass(frozen=True)
class _Config:
    """Base of the frozen config dataclasses (a dataclass without fields, so ``asdict`` and
    ``fields`` accept it)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig(_Config):
    """SGD with Nesterov momentum and a one-cycle cosine schedule: the recipe
    that gave the best Fashion-MNIST baselines in the benchmarks."""

    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    warmup: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        _require(_non_negative_int(self.epochs), "epochs", "an integer >= 0", self.epochs)
        _check_optimizer(self.lr, self.momentum, self.weight_decay, self.batch_size)
        _require(_finite(self.warmup) and 0 <= self.warmup < 1, "warmup", "in [0, 1)", self.warmup)
        _check_seed(self.seed)


def _check_layer_spec(spec: Any, name: str, empty_ok: bool = False) -> None:
    """A layer selection (see ``nncompress.layers.select_layers``): comma-separated kinds,
    class names or globs; what it matches is checked once the model is known."""
    ok = isinstance(spec, str) and (empty_ok or any(t.strip() for t in spec.split(",")))
    _require(
        ok,
        name,
        "comma-separated layer kinds (fc, conv, embedding), class names, 'all' or name globs"
        + (", or ''" if empty_ok else ""),
        spec,
    )
