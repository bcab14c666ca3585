"""The weight-sharing stage: k-means codebooks sized by a bit width or by a bit search that spends
what pruning left of the tolerance, each sharing followed by centroid fine-tuning kept only if
validation agrees; the search judges widths on the tuned model."""

from __future__ import annotations

import math
import logging
from typing import Any, Mapping, Optional, TypeGuard

import torch
from torch import nn

from nncompress import distributed
from nncompress.config import PruneConfig, ShareConfig
from nncompress.data import Splits
from nncompress.errors import ConfigError, ModelError
from nncompress.progress import ProgressFn
from nncompress.pruning import PruneResult
from nncompress.layers import Compressible, layer_kind, select_layers
from nncompress.quantization import CentroidTuner, SharedLayer, share_weights_, unshared_parameters
from nncompress.quantization.bitsearch import fit_bits_
from nncompress.train import fit, set_seed
from nncompress.train.rollback import Rollback
from nncompress.train.objective import ObjectiveSpec
from nncompress.train.evidence import Reading, ValidationReader, paired_drop
from nncompress.train.journal import Journal
from nncompress.pipeline.measure import _objective

# named for the package: the CLI prints the name before each message, whichever stage logs it
log = logging.getLogger("nncompress.pipeline")


def _codebook_bits(bits: int, nonzero: int, min_members: int) -> int:
    """Shrink the codebook of a small layer to about ``nonzero / min_members`` entries."""
    while bits > 1 and 2**bits * min_members > nonzero:
        bits -= 1
    return bits


def quantized_layers(model: nn.Module, cfg: ShareConfig) -> dict[str, Compressible]:
    """The layers ``cfg.quantize`` names: stored uniformly quantised, not shared."""
    return select_layers(model, cfg.quantize, what="quantize layers") if cfg.quantize else {}


def share_model(
    model: nn.Module,
    splits: Splits,
    cfg: ShareConfig,
    progress: Optional[ProgressFn] = None,
    journal: Optional[Journal] = None,
    objective: ObjectiveSpec = None,
    budget: Optional[float] = None,
) -> tuple[dict[str, SharedLayer], dict[str, Any]]:
    """k-means weight sharing of the nonzero weights of the layers ``cfg.select``
    selects (Linear, Conv, Embedding by default), then centroid fine-tuning; the
    tuned codebooks are kept only if validation agrees. Judged by ``objective``
    (default: accuracy with labels, else distillation from ``model`` as given:
    pass the one bound to the dense model to compare with that). ``budget``
    (points) is what earlier stages left of the whole file's tolerance: unless
    ``cfg.tolerance`` is set, the bit search spends it, a drop counting as over
    it only by more than its standard error (paired with ``model`` as given).
    Each width the search tries is judged after centroid fine-tuning, so a
    search that widens layers tunes once per round."""
    objective = _objective(objective, model, splits)
    quantized = quantized_layers(model, cfg)
    layers = {
        n: m
        for n, m in select_layers(model, cfg.select, cfg.exclude, what="share layers").items()
        if n not in quantized
    }
    width = {"conv": cfg.conv_bits, "fc": cfg.fc_bits, "embedding": cfg.embedding_bits}
    bits = {
        n: _codebook_bits(
            cfg.layer_bits.get(n, width[layer_kind(m)]), int(torch.count_nonzero(m.weight)), cfg.min_members
        )
        for n, m in layers.items()
    }
    unknown = sorted(set(cfg.layer_bits) - set(layers))
    if unknown:
        raise ConfigError(f"layer_bits names unknown layer(s) {unknown}; shared layers are {list(layers)}")
    inits = {n: cfg.embedding_init if layer_kind(m) == "embedding" else cfg.init for n, m in layers.items()}
    search = None
    tolerance = cfg.tolerance if cfg.tolerance is not None else None if budget is None else max(0.0, budget)
    tuning: dict[str, Any] = {}

    def tune(current: dict[str, SharedLayer]) -> bool:
        tuning.update(_tune_centroids(model, splits, cfg, current, objective, progress, journal))
        return bool(tuning["centroid_tuning_kept"])

    if tolerance is None:
        shared = share_weights_(layers, bits, inits, cfg.seed, progress=progress)
        tune(shared)
    else:
        paired = cfg.tolerance is None  # the budget's reading carries its noise; a stated tolerance is read as is
        reader = ValidationReader(objective, splits.val_x, splits.val_y, model, with_kl=False)  # SE only, no fit
        reference = reader.read(model)
        readings: list[Reading] = []

        def drop() -> float:
            readings.append(reader.read(model))
            return (reference.score - readings[-1].score) * 100

        def noise() -> float:
            last = readings[-1]
            if reference.examples is None or last.examples is None:
                return 0.0
            return paired_drop(reference.examples, last.examples)[1]

        caps = {
            n: _codebook_bits(cfg.max_bits, int(torch.count_nonzero(m.weight)), cfg.min_members)
            for n, m in layers.items()
        }
        shared, search = fit_bits_(
            layers,
            bits,
            inits,
            drop,
            tolerance,
            max_bits=caps,
            seed=cfg.seed,
            progress=progress,
            noise=noise if paired else None,
            tune=tune,
        )
        bits = search.bits
    distributed.check_identical(
        [
            *distributed.model_tensors(model),
            *(
                item
                for n, layer in shared.items()
                for item in (
                    (f"codebook:{n}", layer.codebook),
                    (f"indices:{n}", layer.indices),
                    (f"mask:{n}", layer.mask),
                )
            ),
        ],
        "the shared weights and codebooks",
    )
    used = {n: [int(layer.codebook.numel()), int(layer.capacity)] for n, layer in shared.items()}
    info = {"bit_search": {**search.to_dict(), "tolerance": tolerance}} if search else {}
    return shared, {**info, "bits": bits, "codebook_used": used, **tuning, "metric": objective.metric}


def _tune_centroids(
    model: nn.Module,
    splits: Splits,
    cfg: ShareConfig,
    shared: dict[str, SharedLayer],
    objective: Any,
    progress: Optional[ProgressFn],
    journal: Optional[Journal],
) -> dict[str, Any]:
    """Centroid fine-tuning of ``shared`` (biases and other unshared parameters train beside it), kept only
    if the validation score does not fall; a NaN loss is rolled back the same way."""
    val_before = objective.score(model, splits.val_x, splits.val_y)
    saved = Rollback(model, {n: s.codebook for n, s in shared.items()})
    tuner = CentroidTuner(shared, lr=cfg.centroid_lr, momentum=cfg.momentum)
    gen = set_seed(cfg.seed)
    if journal is not None:
        journal.register("centroids", tuner.state_dict, tuner.load_state_dict)
    diverged = False
    try:
        fit(
            model,
            splits.train_x,
            splits.train_y,
            cfg.finetune(),
            params=list(unshared_parameters(model, shared)),
            after_step=tuner.after_step,
            generator=gen,
            progress=progress,
            task="centroids",
            freeze_others=False,
            journal=journal,
            objective=objective,
        )
    except ModelError:  # NaN loss: the tuning is rolled back like any that validation rejects
        diverged = True
        log.warning(
            "centroid tuning diverged (lower centroid_lr %g or lr %g); the untuned codebooks are kept",
            cfg.centroid_lr,
            cfg.lr,
        )
    finally:
        if journal is not None:
            journal.unregister("centroids")
    val_after = None if diverged else objective.score(model, splits.val_x, splits.val_y)
    kept = val_after is not None and objective.signed(val_after) >= objective.signed(val_before)
    if not kept:
        saved.restore_(model, {n: s.codebook for n, s in shared.items()})  # into the codebook tensors themselves
    saved.close()
    return {
        "val_after_sharing": val_before,
        "val_after_centroid_tuning": val_after,
        "centroid_tuning_kept": kept,
        "centroid_tuning_diverged": diverged,
    }


def _finite_number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sharing_budget(
    pruned: Optional[PruneResult], prune_cfg: Optional[PruneConfig], source_meta: Mapping[str, Any]
) -> Optional[dict[str, float]]:
    """The whole file's tolerance and what pruning spent of it (here, or as the pruned checkpoint
    records); the rest is weight sharing's, never more than the whole tolerance (a pruned model that
    read better than the dense one did so within its noise, not by points sharing may spend). None where
    no pruning tolerance is known."""
    tolerance: object
    spent: object
    if pruned is not None and prune_cfg is not None:
        tolerance, spent = prune_cfg.tolerance, pruned.final_drop
    else:
        tolerance = (source_meta.get("prune") or {}).get("tolerance") if source_meta.get("pruned") else None
        spent = source_meta.get("prune_drop")
    if not (_finite_number(tolerance) and _finite_number(spent)):
        return None
    return {
        "tolerance": float(tolerance),
        "pruning": round(float(spent), 4),
        "sharing": round(min(float(tolerance), max(0.0, float(tolerance) - float(spent))), 4),
    }
