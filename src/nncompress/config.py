"""Frozen, validated configuration for each stage.

Configs are plain dataclasses so they serialise to JSON for logs and
checkpoints; every range check lives in ``__post_init__`` and raises
``ConfigError`` naming the field, so bad options fail before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional, TypeVar

from nncompress.coding.schema import MAX_CODEBOOK_BITS, MAX_REL_BITS
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


GROUP_PRESETS = ("all", "fc,conv", "conv,fc", "layer")


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


BUDGETS = ("even", "greedy")
DECISIONS = ("pooled", "reading")


@dataclass(frozen=True)
class PruneConfig(_Config):
    """Iterative std-threshold pruning (Han et al. 2015).

    ``tolerance`` is the largest validation accuracy drop, in percentage
    points against the dense model, that a pruning step may leave after its
    fine-tuning. ``groups`` is a preset (all, fc,conv, conv,fc, layer) or an
    explicit list like ``fc1+fc2,fc3`` (``embedding`` groups every selected
    embedding). ``select`` chooses what is pruned (kinds ``fc``, ``conv``,
    ``embedding``, class names, ``all`` or globs on module names; default every
    Linear and convolution), ``exclude`` removes layers from it. A step that misses the tolerance
    gets ``recover_epochs`` more fine-tuning before it is judged unrecoverable;
    with ``control`` the drop is measured from the mean of the dense model
    and the dense model after the same fine-tuning without pruning (when that
    is lower than the dense one); later stages start with a consolidating
    fine-tune of ``recover_epochs``; layers holding less than
    ``min_layer_share`` of all prunable weights are left unpruned;
    then up to ``refine_steps`` bisections between the last good and the
    failed q look for the largest q that still fits. ``layer_scale`` multiplies q per
    layer (from the sensitivity analysis). ``budget`` "even" lets stage i of n
    leave a drop of at most tolerance x i/n, so the first stage cannot spend
    what the later ones need (a stage that spends less passes the rest on);
    "greedy" gives every stage the whole tolerance. ``distill`` > 0 fine-tunes
    against the dense model's softened outputs as well as the labels (weight
    ``distill`` on the teacher term, at ``distill_temperature``). With
    ``probe`` a copy of the dense model first gets one step's fine-tuning; if
    that alone moves its validation outputs by a mean KL divergence above
    ``probe_kl`` nats, or costs more than the tolerance, the net sits where
    ``lr`` throws it about, and pruning fine-tunes at ``fallback_lr`` with
    distillation ``fallback_distill`` instead (LeNet-5 needs this;
    LeNet-300-100 does not).

    ``decision`` says what a step is judged on. "pooled": the drop is read on
    the same validation examples as the dense model (so its standard error is
    known) and estimated from every reading of the run together, as a line
    through the origin in the KL divergence of the outputs from the dense
    model's (``train.evidence``); where no KL exists (outputs that are not
    logits, a batch-level user metric) each reading stands alone. "reading":
    each step's own drop, as one reading. The probe takes the fallback on
    accuracy only when one step's fine-tuning costs more than the tolerance by
    two standard errors (its KL test is the low-noise one), and the final
    fine-tune is kept unless it leaves the model worse by more than one.

    ``target_density`` (a fraction in (0, 1], default None) replaces the
    tolerance loop: the layers ``groups`` selects (all stages together) are
    pruned in ``target_steps`` steps to that fraction of kept weights, the
    density after step k of n being target ** (k / n) from a dense start
    (geometric from the starting density otherwise). Each step's q is found by
    bisection so that the masks (q x std threshold, times ``layer_scale``)
    keep at most that density, and is followed by ``epochs_per_step`` of
    fine-tuning of every layer; then the final fine-tune. No step is rolled
    back: the validation drop is still measured and recorded per step, and a
    warning is logged when the final drop exceeds ``tolerance``.
    """

    q0: float = 0.5
    q_step: float = 0.25
    q_max: float = 2.5
    tolerance: float = 0.3
    epochs_per_step: int = 2
    recover_epochs: int = 4
    refine_steps: int = 1
    control: bool = True
    min_layer_share: float = 0.003
    final_epochs: int = 10
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    groups: str = "conv,fc"
    budget: str = "even"
    decision: str = "pooled"
    distill: float = 0.0
    distill_temperature: float = 4.0
    probe: bool = True
    probe_kl: float = 0.02
    fallback_lr: float = 0.02
    fallback_distill: float = 0.9
    layer_scale: Mapping[str, float] = field(default_factory=dict)
    select: str = "fc,conv"
    exclude: str = ""
    remove_dead: bool = True
    adjust_dropout: bool = True
    target_density: Optional[float] = None
    target_steps: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _check_q_range(self.q0, self.q_step, self.q_max)
        _require(
            _finite(self.tolerance) and 0 <= self.tolerance <= 100,
            "tolerance",
            "a number of percentage points in [0, 100]",
            self.tolerance,
        )
        _require(_non_negative_int(self.epochs_per_step), "epochs_per_step", "an integer >= 0", self.epochs_per_step)
        _require(_non_negative_int(self.recover_epochs), "recover_epochs", "an integer >= 0", self.recover_epochs)
        _require(isinstance(self.control, bool), "control", "true or false", self.control)
        _require(
            _finite(self.min_layer_share) and 0 <= self.min_layer_share < 1,
            "min_layer_share",
            "a fraction in [0, 1)",
            self.min_layer_share,
        )
        _require(_non_negative_int(self.refine_steps), "refine_steps", "an integer >= 0", self.refine_steps)
        _require(_non_negative_int(self.final_epochs), "final_epochs", "an integer >= 0", self.final_epochs)
        _check_optimizer(self.lr, self.momentum, self.weight_decay, self.batch_size)
        _require(
            isinstance(self.groups, str) and self.groups.strip() != "",
            "groups",
            f"a preset ({', '.join(GROUP_PRESETS)}) or layer names like 'fc1+fc2,fc3'",
            self.groups,
        )
        _require(self.budget in BUDGETS, "budget", f"one of {', '.join(BUDGETS)}", self.budget)
        _require(self.decision in DECISIONS, "decision", f"one of {', '.join(DECISIONS)}", self.decision)
        _require(_finite(self.distill) and 0 <= self.distill <= 1, "distill", "a weight in [0, 1]", self.distill)
        _require(
            _finite(self.distill_temperature) and self.distill_temperature > 0,
            "distill_temperature",
            "a number > 0",
            self.distill_temperature,
        )
        _require(isinstance(self.probe, bool), "probe", "true or false", self.probe)
        _require(_finite(self.probe_kl) and self.probe_kl > 0, "probe_kl", "a number of nats > 0", self.probe_kl)
        _require(
            _finite(self.fallback_lr) and self.fallback_lr > 0, "fallback_lr", "a finite number > 0", self.fallback_lr
        )
        _require(
            _finite(self.fallback_distill) and 0 <= self.fallback_distill <= 1,
            "fallback_distill",
            "a weight in [0, 1]",
            self.fallback_distill,
        )
        for name, scale in dict(self.layer_scale).items():
            _require(_finite(scale) and scale > 0, "layer_scale", "a number > 0", scale, key=name)
        object.__setattr__(self, "layer_scale", dict(self.layer_scale))
        _require(
            self.target_density is None or (_finite(self.target_density) and 0 < self.target_density <= 1),
            "target_density",
            "a fraction of kept weights in (0, 1], or None for the tolerance loop",
            self.target_density,
        )
        _require(
            _positive_int(self.target_steps) and self.target_steps <= MAX_STEPS,
            "target_steps",
            f"an integer in 1..{MAX_STEPS}",
            self.target_steps,
        )
        _check_layer_spec(self.select, "select")
        _check_layer_spec(self.exclude, "exclude", empty_ok=True)
        _check_seed(self.seed)

    def finetune(self, epochs: int) -> TrainConfig:
        """The training recipe of one fine-tuning phase."""
        return TrainConfig(
            epochs=epochs,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            warmup=0.0,
            seed=self.seed,
        )


@dataclass(frozen=True)
class SensitivityConfig(_Config):
    """Each layer pruned alone (no fine-tuning) at every q in q0..q_max."""

    q0: float = 0.25
    q_step: float = 0.25
    q_max: float = 3.0
    max_drop: float = 2.0

    def __post_init__(self) -> None:
        _check_q_range(self.q0, self.q_step, self.q_max)
        _require(_finite(self.max_drop) and self.max_drop >= 0, "max_drop", "a number >= 0", self.max_drop)


SHARE_INITS = ("auto", "linear", "density", "random")
RAW_DTYPES = ("auto", "float32", "float16")


@dataclass(frozen=True)
class ShareConfig(_Config):
    """Weight sharing (Deep Compression stage 2) and coding options.

    ``select`` chooses the shared layers (kinds ``fc``, ``conv``, ``embedding``,
    class names, ``all`` or globs on module names), ``exclude`` removes some; the
    rest of the model is stored raw. Codebooks have 2**bits entries (``fc_bits``
    for Linear, ``conv_bits`` for convolutions, ``embedding_bits`` for
    embeddings, ``layer_bits`` per layer overrides). ``init`` seeds k-means:
    ``auto`` measures linear and density per layer and keeps linear unless its
    quantisation error is more than twice density's (heavy-tailed weights,
    where linear spends its centroids on a few outliers). Centroids are then
    fine-tuned for ``epochs``: each moves by ``centroid_lr`` times the sum of
    its members' gradients (with ``momentum`` on that sum; 0 is Deep
    Compression's plain rule), while biases train with ``lr``. ``rel_bits`` is
    the relative-index width, ``"auto"`` picking the smallest file per layer.
    A layer with few surviving weights gets a smaller codebook: at most one
    centroid per ``min_members`` weights, so a 256-entry codebook never
    outweighs a 500-weight convolution. The default 2 matches float16
    codebooks, where an entry costs about what two 8-bit indices cost; at 8 the
    125 weights left in LeNet-300-100's output layer got 8 centroids, and
    k-means moved the net's validation outputs 4-10 times as far as with 32
    (bench/results/sharing_experiments.md). ``codebook_dtype`` ``"auto"`` stores a
    codebook as float16 when every centroid is 0 or within float16's normal
    range (rounding far below a cluster's spread), else float32. ``raw_dtype``
    ``"auto"`` stores unshared float tensors of 4096 or more values as float16
    when they fit its range, smaller ones (biases, norms) as float32.
    ``tolerance`` (points of the validation score, as the pruner's) turns the
    widths into starting points: while sharing costs the model it is given more
    than that, the layers costing the most drop per weight get one more bit, up
    to ``max_bits`` (quantization/bitsearch.py); None keeps the widths as given.
    ``quantize`` names layers (same forms as ``select``) whose weights are stored
    uniformly quantised instead of shared: ``quantize_dtype`` int8 or int16 with one
    float32 scale per output channel (format version 4); pruned zeros stay zero.
    """

    fc_bits: int = 5
    conv_bits: int = 8
    embedding_bits: int = 5
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    select: str = "fc,conv,embedding"
    exclude: str = ""
    init: str = "linear"
    embedding_init: str = "auto"
    epochs: int = 5
    lr: float = 0.01
    centroid_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    rel_bits: Any = "auto"
    min_members: int = 2
    raw_dtype: str = "auto"
    codebook_dtype: str = "auto"
    tolerance: Optional[float] = None
    max_bits: int = 10
    quantize: str = ""
    quantize_dtype: str = "int8"
    seed: int = 0

    def __post_init__(self) -> None:
        _require(
            self.tolerance is None or (_finite(self.tolerance) and 0 <= self.tolerance <= 100),
            "tolerance",
            "a number of points in [0, 100], or None for the widths as given",
            self.tolerance,
        )
        _require(
            _positive_int(self.max_bits) and self.max_bits <= MAX_CODEBOOK_BITS,
            "max_bits",
            f"an integer in 1..{MAX_CODEBOOK_BITS}",
            self.max_bits,
        )
        _require(_positive_int(self.min_members), "min_members", "an integer >= 1", self.min_members)
        _require(self.raw_dtype in RAW_DTYPES, "raw_dtype", "'auto', 'float32' or 'float16'", self.raw_dtype)
        _check_layer_spec(self.select, "select")
        _check_layer_spec(self.exclude, "exclude", empty_ok=True)
        _check_layer_spec(self.quantize, "quantize", empty_ok=True)
        _require(self.quantize_dtype in ("int8", "int16"), "quantize_dtype", "'int8' or 'int16'", self.quantize_dtype)
        _require(
            self.codebook_dtype in ("auto", "float32", "float16"),
            "codebook_dtype",
            "'auto', 'float32' or 'float16'",
            self.codebook_dtype,
        )
        for name, key, bits in [
            ("fc_bits", None, self.fc_bits),
            ("conv_bits", None, self.conv_bits),
            ("embedding_bits", None, self.embedding_bits),
            *[("layer_bits", k, v) for k, v in dict(self.layer_bits).items()],
        ]:
            _require(
                _positive_int(bits) and bits <= MAX_CODEBOOK_BITS,
                name,
                f"an integer in 1..{MAX_CODEBOOK_BITS}",
                bits,
                key=key,
            )
        object.__setattr__(self, "layer_bits", dict(self.layer_bits))
        _require(self.init in SHARE_INITS, "init", f"one of {SHARE_INITS}", self.init)
        _require(self.embedding_init in SHARE_INITS, "embedding_init", f"one of {SHARE_INITS}", self.embedding_init)
        _require(_non_negative_int(self.epochs), "epochs", "an integer >= 0", self.epochs)
        _check_optimizer(self.lr, self.momentum, self.weight_decay, self.batch_size)
        _require(
            _finite(self.centroid_lr) and self.centroid_lr > 0, "centroid_lr", "a finite number > 0", self.centroid_lr
        )
        _check_seed(self.seed)
        _require(
            self.rel_bits == "auto" or (_positive_int(self.rel_bits) and self.rel_bits <= MAX_REL_BITS),
            "rel_bits",
            f"'auto' or an integer in 1..{MAX_REL_BITS}",
            self.rel_bits,
        )

    def finetune(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            warmup=0.0,
            seed=self.seed,
        )
