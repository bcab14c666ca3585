"""The pruning configs: PruneConfig (iterative std-threshold pruning) and SensitivityConfig (the scan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from nncompress.config_base import (
    MAX_STEPS,
    TrainConfig,
    _check_layer_spec,
    _check_optimizer,
    _check_q_range,
    _check_seed,
    _Config,
    _finite,
    _non_negative_int,
    _positive_int,
    _require,
)

GROUP_PRESETS = ("all", "fc,conv", "conv,fc", "layer")
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
    ``min_layer_share`` of all prunable weights are left unpruned; where
    ``groups`` names kinds, a stage holding less than ``min_stage_share`` of them
    joins the stage before it (a first stage joins the one after), so it takes
    no part of the tolerance it could barely turn into a smaller file;
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
    min_stage_share: float = 0.02
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
        _require(
            _finite(self.min_stage_share) and 0 <= self.min_stage_share < 1,
            "min_stage_share",
            "a fraction in [0, 1)",
            self.min_stage_share,
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
