"""The iterative prune / fine-tune loop with validation-based rollback.

Training and evaluation come in as callbacks, so this module knows nothing of
data: ``finetune(params, epochs, after_step)`` trains the given parameters with
masks re-applied after each step; ``evaluate()`` returns validation accuracy,
or a ``train.evidence.Reading`` (per-example scores and KL too) for paired and
pooled decisions (``pruning.judge``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Optional, Union

from torch import nn

from nncompress.chunked import all_finite
from nncompress.config import PruneConfig
from nncompress.errors import ConfigError, ModelError
from nncompress.progress import ProgressFn, report
from nncompress.pruning.apply import (
    Masks,
    apply_masks_,
    densities,
    initial_masks,
    overall_density,
    packing_masks,
)
from nncompress.pruning.dropout import adjust_dropout_, original_rates
from nncompress.pruning.judge import Judgement, StepJudge
from nncompress.pruning.masks import count_kept, prunable_layers, std_threshold, threshold_mask
from nncompress.pruning.schedule import drop_points, kinds_only, merge_small_stages, q_schedule, resolve_groups
from nncompress.pruning.shrink import ShrinkReport, remove_dead_neurons_
from nncompress.pruning.target import density_steps, masked_density, q_for_density
from nncompress.train.evidence import Reading, as_reading
from nncompress.train.rollback import Rollback

log = logging.getLogger(__name__)

Finetune = Callable[[Iterable[nn.Parameter], int, Callable[[], None]], None]
Evaluate = Callable[[], Union[float, Reading]]


@dataclass(frozen=True)
class StepRecord:
    """One line of the per-step log."""

    stage: str  # "dense", "control", "consolidate", "step", "recover", "target", "final"
    group: int
    step: int
    q: dict[str, float]
    density: dict[str, float]
    overall_density: float
    val_accuracy: float
    drop_points: float  # against the reference: min(dense, mean of dense and control)
    accepted: bool
    seconds: float
    drop_se: Optional[float] = None  # standard error of drop_points (paired with the dense model)
    estimated_drop: Optional[float] = None  # the drop estimated from every reading so far: what was judged
    kl: Optional[float] = None  # mean KL(dense || model) of the validation outputs, nats

    @property
    def judged_drop(self) -> float:
        """The figure held to the tolerance: the pooled estimate where there is one, else the reading's drop."""
        return self.drop_points if self.estimated_drop is None else self.estimated_drop

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PruneResult:
    dense_val_accuracy: float
    val_accuracy: float
    masks: Masks
    reference_val_accuracy: Optional[float] = None
    steps: list[StepRecord] = field(default_factory=list)
    q: dict[str, float] = field(default_factory=dict)
    dropout: dict[str, float] = field(default_factory=dict)
    shrink: Optional[ShrinkReport] = None
    finetune: dict = field(default_factory=dict)  # the fine-tuning recipe used, and the probe behind it
    objective: dict = field(default_factory=dict)  # what the scores above are, and the tolerance in their units
    warnings: list[str] = field(default_factory=list)  # e.g. a validation split too small for the tolerance
    final_drop: Optional[float] = None  # the final model's drop as judged (estimated where pooled): what was spent


def pruning_groups(model: nn.Module, cfg: PruneConfig) -> list[list[str]]:
    """Check that ``model`` can be pruned with ``cfg`` and return its stages, so
    callers can refuse bad input before any training. Layers under
    ``min_layer_share`` leave their stage (a stage left empty is dropped); with
    kinds for groups, a stage under ``min_stage_share`` joins its neighbour."""
    layers = prunable_layers(model, cfg.select, cfg.exclude)
    if not layers:
        raise ConfigError(f"select {cfg.select!r} (exclude {cfg.exclude!r}) selects no layer of the model to prune")
    bad = [n for n, m in layers.items() if not all_finite(m.weight)]
    if bad:
        raise ModelError(f"weights of {', '.join(bad)} contain NaN or Inf: fix or retrain the model before pruning")
    unknown = sorted(set(cfg.layer_scale) - set(layers))
    if unknown:
        raise ConfigError(f"layer_scale names unknown layer(s) {unknown}; prunable layers are {list(layers)}")
    total_weights = sum(m.weight.numel() for m in layers.values())
    small = {n for n, m in layers.items() if m.weight.numel() < cfg.min_layer_share * total_weights}
    groups = [kept for g in resolve_groups(cfg.groups, layers) if (kept := [n for n in g if n not in small])]
    if kinds_only(cfg.groups):  # stages a user names layer by layer stay as given
        groups = merge_small_stages(groups, {n: m.weight.numel() for n, m in layers.items()}, cfg.min_stage_share)
    if not groups:
        raise ConfigError(
            f"groups {cfg.groups!r} selects only layers under min_layer_share {cfg.min_layer_share} "
            f"of the weights ({sorted(small)}): lower min_layer_share or name other layers"
        )
    return groups


def _to_target(
    model: nn.Module,
    cfg: PruneConfig,
    selected: list[str],
    stds: dict[str, float],
    masks: Masks,
    q_now: dict[str, float],
    finetune: Finetune,
    evaluate: Evaluate,
    reapply: Callable[[], None],
    record: Callable[..., StepRecord],
    kept_fraction: Optional[Callable[[], dict[str, float]]],
    rates: dict[str, float],
    on_step: Callable[[int, int, float], None],
) -> int:
    """Prune ``selected`` to ``cfg.target_density`` in ``cfg.target_steps`` steps, each
    fine-tuned; every step is kept, whatever validation says (it is recorded)."""
    layers = prunable_layers(model, cfg.select, cfg.exclude)
    scaled = {n: stds[n] * cfg.layer_scale.get(n, 1.0) for n in selected}
    start = masked_density({n: layers[n].weight for n in selected}, masks, scaled, 0.0)
    assert cfg.target_density is not None  # the caller steps to a target only when one is set
    goals = density_steps(start, float(cfg.target_density), cfg.target_steps)
    if not goals:
        log.warning(
            "the selected layers already keep %.4f of their weights, no more than the target density "
            "%.4f: nothing to prune",
            start,
            cfg.target_density,
        )
    for step, goal in enumerate(goals, 1):
        t0 = time.perf_counter()
        weights = {n: layers[n].weight for n in selected}
        q = q_for_density(weights, masks, scaled, goal)
        for n in selected:
            q_now[n] = q * cfg.layer_scale.get(n, 1.0)
            masks[n] &= threshold_mask(layers[n].weight, std_threshold(stds[n], q_now[n]))
        reapply()
        if kept_fraction is not None:
            adjust_dropout_(model, rates, kept_fraction())
        finetune(list(model.parameters()), cfg.epochs_per_step, reapply)
        reading = as_reading(evaluate())
        rec = record("target", 0, step, reading, True, t0)
        if rec.judged_drop > cfg.tolerance:
            log.info(
                "target step %d/%d (density %.4f): validation drop %.2f points, over the tolerance; continuing",
                step,
                len(goals),
                goal,
                rec.judged_drop,
            )
        on_step(step, len(goals), reading.score)
    return len(goals)


def prune_(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    finetune: Finetune,
    evaluate: Evaluate,
    progress: Optional[ProgressFn] = None,
    on_step: Optional[Callable[[StepRecord], None]] = None,
) -> PruneResult:
    """Prune ``model`` in place, group by group, raising q until the validation
    drop after fine-tuning exceeds the tolerance, then rolling back one step.

    With ``cfg.control`` the dense model first gets one step's fine-tuning
    without pruning, and drops are measured from the mean of the two
    validation accuracies when that is lower than the dense one: fine-tuning
    alone moves accuracy by about the tolerance (a lucky dense figure would
    otherwise spend the whole budget before any weight is pruned); the mean,
    not the minimum, so one unlucky control does not loosen the test much,
    and never stricter than the dense model itself. Every stage after the
    first starts with ``recover_epochs`` of fine-tuning of all layers, so
    the earlier stages' losses are recovered before the next stage is judged.
    With ``cfg.target_density`` the steps aim at that density instead and
    are never rolled back (see ``PruneConfig``).

    ``finetune(params, epochs, after_step)`` trains and ``evaluate()`` scores, so any
    training loop and metric fit; here, no training and a fixed score:

    >>> import torch
    >>> import nncompress as nnc
    >>> from nncompress.models import build_model
    >>> _ = torch.manual_seed(0)
    >>> net = build_model("lenet300")
    >>> cfg = nnc.PruneConfig(q_max=1.0, control=False, remove_dead=False, min_layer_share=0.0)
    >>> result = nnc.prune_(net, cfg, finetune=lambda params, epochs, after_step: after_step(),
    ...                     evaluate=lambda: 0.9)
    >>> [r.stage for r in result.steps][:2], result.steps[-1].overall_density < 0.5
    (['dense', 'step'], True)
    """
    layers = prunable_layers(model, cfg.select, cfg.exclude)
    groups = pruning_groups(model, cfg)
    stds = {n: float(m.weight.detach().std()) for n, m in layers.items()}
    masks = initial_masks(layers)
    finetune = packing_masks(finetune, layers, masks)
    rates = original_rates(model)
    start_kept = {n: max(1, count_kept(m)) for n, m in masks.items()}

    def kept_fraction() -> dict[str, float]:
        """C_ir / C_io: connections now over connections when this run started."""
        return {n: count_kept(m) / start_kept[n] for n, m in masks.items()}

    qs = q_schedule(cfg.q0, cfg.q_step, cfg.q_max)
    total = len(groups) * (len(qs) + cfg.refine_steps) + 1
    tick = 0
    q_now = {n: 0.0 for n in layers}

    def reapply() -> None:
        apply_masks_(layers, masks)

    def record(
        stage: str,
        group: int,
        step: int,
        reading: Reading,
        accepted: Optional[bool],
        t0: float,
        judged: Optional[Judgement] = None,
    ) -> StepRecord:
        """Log one reading; ``accepted`` None: judged here against the whole tolerance."""
        judged = judged or judge.judge(reading)
        ok = judged.decisive <= cfg.tolerance if accepted is None else accepted
        rec = StepRecord(
            stage,
            group,
            step,
            dict(q_now),
            densities(masks),
            overall_density(masks),
            reading.score,
            round(judged.drop, 4),
            ok,
            round(time.perf_counter() - t0, 3),
            judged.se,
            judged.estimate,
            None if reading.kl is None else round(reading.kl, 6),
        )
        result.steps.append(rec)
        if on_step is not None:
            on_step(rec)
        return rec

    t0 = time.perf_counter()
    dense = as_reading(evaluate())
    base = dense.score
    judge = StepJudge(dense, pooled=cfg.decision == "pooled")
    result = PruneResult(dense_val_accuracy=base, val_accuracy=base, masks=masks)
    record("dense", -1, 0, dense, True, t0, Judgement(0.0))
    if cfg.control:  # the same fine-tuning without pruning: what the tolerance is measured against
        t0 = time.perf_counter()
        finetune(list(model.parameters()), cfg.epochs_per_step, reapply)
        control = as_reading(evaluate())
        judge.set_control(control)
        result.reference_val_accuracy = judge.reference
        record("control", -1, 0, control, True, t0, Judgement(drop_points(judge.reference, control.score)))

    def stage_tolerance(gi: int) -> float:
        """The drop stage ``gi`` may leave: its even share of the tolerance plus what earlier stages left."""
        return cfg.tolerance * (gi + 1) / len(groups) if cfg.budget == "even" else cfg.tolerance

    def try_step(gi: int, si: int, q: float, group: list[str], params: list[nn.Parameter]) -> bool:
        """Prune ``group`` at q, fine-tune, and judge the step on validation."""
        nonlocal tick
        t0 = time.perf_counter()
        for name in group:
            q_now[name] = q * cfg.layer_scale.get(name, 1.0)
            masks[name] &= threshold_mask(layers[name].weight, std_threshold(stds[name], q_now[name]))
        reapply()
        if cfg.adjust_dropout:
            adjust_dropout_(model, rates, kept_fraction())
        finetune(params, cfg.epochs_per_step, reapply)
        reading = as_reading(evaluate())
        allowed = stage_tolerance(gi)
        judged = judge.judge(reading)
        ok = judged.decisive <= allowed
        stage = "step"
        if not ok and cfg.recover_epochs > 0:  # judge unrecoverable only after more fine-tuning
            record(stage, gi, si, reading, ok, t0, judged)
            t0, stage = time.perf_counter(), "recover"
            finetune(params, cfg.recover_epochs, reapply)
            reading = as_reading(evaluate())
            judged = judge.judge(reading)
            ok = judged.decisive <= allowed
        rec = record(stage, gi, si, reading, ok, t0, judged)
        tick += 1
        report(
            progress,
            "prune",
            min(tick, total - 1),
            total,
            group=gi,
            q=q,
            density=rec.overall_density,
            val=reading.score,
        )
        return ok

    if cfg.target_density is not None:

        def on_target_step(step: int, steps: int, acc: float) -> None:
            report(progress, "prune", step, steps + 1, density=overall_density(masks), val=acc)

        total = 1 + _to_target(
            model,
            cfg,
            [n for g in groups for n in g],
            stds,
            masks,
            q_now,
            finetune,
            evaluate,
            reapply,
            record,
            kept_fraction if cfg.adjust_dropout else None,
            rates,
            on_target_step,
        )
    for gi, group in enumerate(groups if cfg.target_density is None else []):
        if gi > 0 and cfg.recover_epochs > 0:  # consolidate the earlier stages before this one starts
            t0 = time.perf_counter()
            finetune(list(model.parameters()), cfg.recover_epochs, reapply)
            consolidated = as_reading(evaluate())
            record("consolidate", gi, 0, consolidated, True, t0, judge.judge(consolidated, after_pruning=False))
        params = [p for n in group for p in layers[n].parameters()]
        judge.new_stage(first=gi == 0)
        good = Rollback(model, masks), dict(q_now), judge.last_estimate
        q_good, q_bad, refined, si = 0.0, None, 0, 0
        while True:
            if q_bad is None and si < len(qs):
                q = qs[si]
            elif q_bad is not None and refined < cfg.refine_steps:  # bisect between the last good and bad q
                q, refined = round((q_good + q_bad) / 2, 10), refined + 1
            else:
                break
            if try_step(gi, si, q, group, params):
                good, q_good = (Rollback(model, masks), dict(q_now), judge.last_estimate), q
            else:
                good[0].restore_(model, masks)
                q_now.clear()
                q_now.update(good[1])
                judge.last_estimate = good[2]  # the model is the kept one again, and so is its estimate
                q_bad = q
            si += 1
    if cfg.adjust_dropout:
        result.dropout = adjust_dropout_(model, rates, kept_fraction())
    t0 = time.perf_counter()
    reading = as_reading(evaluate())
    if cfg.final_epochs > 0:  # no copy of the model to roll back to when there is nothing to roll back
        before, reading_before = Rollback(model, masks), reading
        finetune(list(model.parameters()), cfg.final_epochs, reapply)
        reading = as_reading(evaluate())
        if not judge.keeps_final_tuning(reading_before, reading):  # validation says it made things worse
            before.restore_(model, masks)
            reading = reading_before
        del before
    final = record("final", len(groups), 0, reading, None, t0, judge.judge_final(reading))
    if cfg.target_density is not None and not final.accepted:
        log.warning(
            "pruned to density %.4f: the validation drop %.2f points exceeds the tolerance of %.2f points",
            final.overall_density,
            final.judged_drop,
            cfg.tolerance,
        )
    report(progress, "prune", total, total, density=overall_density(masks), val=reading.score)
    result.val_accuracy = reading.score
    result.final_drop = final.judged_drop
    result.q = dict(q_now)
    if cfg.remove_dead:
        result.shrink = remove_dead_neurons_(model)
        if result.shrink.applicable and result.shrink.removed:
            result.masks = initial_masks(prunable_layers(model, cfg.select, cfg.exclude))
    return result
