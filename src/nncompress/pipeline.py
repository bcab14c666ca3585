"""Compose data, models, training and pruning into the runs the CLI offers.

Every function here returns plain results and writes files atomically; none
prints. Progress goes through the ``progress`` callback.

Under torchrun every rank runs these functions alike (training and evaluation
are spread over the ranks); rank 0 alone writes files, inside
``distributed.on_main``, and the others receive its result.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, TypeGuard

import numpy as np
import torch
from torch import nn

from nncompress import distributed
from nncompress.atomic import write_text
from nncompress.coding.csr import csr_bytes
from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.data import Splits, load_data
from nncompress.data.datasets import transform_record
from nncompress.data.batches import call_model, count, describe, pick_output, take
from nncompress.memory import release_freed
from nncompress.errors import CheckpointError, ConfigError, ModelError
from nncompress.imports import import_object, is_import_spec
from nncompress.models import Trust, arch_record, build_model, is_factory_record
from nncompress.modelfile import (
    Compressed,
    CompressedHeader,
    is_compressed,
    layer_table as file_table,
    load_compressed,
    read_compressed_header,
    save_compressed,
)
from nncompress.progress import ProgressFn
from nncompress.pruning import PruneResult, StepRecord, prunable_layers, prune_
from nncompress.pruning.iterative import pruning_groups
from nncompress.pruning.apply import count_parameters
from nncompress.layers import Compressible, compressible_layers, layer_kind, select_layers
from nncompress.pruning.schedule import q_schedule
from nncompress.quantization import CentroidTuner, SharedLayer, share_weights_, unshared_parameters
from nncompress.quantization.bitsearch import fit_bits_
from nncompress.pruning.sensitivity import layer_scales, sensitivity_scan, to_csv
from nncompress.report.plots import figures_available, sensitivity_plot, weight_histograms
from nncompress.rundir import RunDir
from nncompress.train import fit, set_seed
from nncompress.train.loop import Teacher
from nncompress.train.rollback import Rollback
from nncompress.train.objective import Objective, ObjectiveSpec, resolution_warning, resolve_objective
from nncompress.train.evidence import Reading, ValidationReader, paired_drop
from nncompress.train.probe import choose_finetune
from nncompress.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nncompress.train.journal import Journal, fingerprint

if TYPE_CHECKING:
    from nncompress.recipe import Recipe

log = logging.getLogger(__name__)


def _data_meta(splits: Splits) -> dict[str, Any]:
    shape = splits.input_shape
    meta = {
        "data": splits.name,
        "input_shape": dict(shape) if isinstance(shape, dict) else list(shape),
        "num_classes": splits.num_classes,
    }
    if splits.transform:
        meta["transform"] = splits.transform
    return meta


def _objective(objective: ObjectiveSpec, model: nn.Module, splits: Splits) -> Objective:
    """The run's objective, bound to ``model`` as the dense reference where it distils."""
    return resolve_objective(objective, model, splits)


def metrics(
    model: nn.Module, splits: Splits, split: str = "test", objective: Optional[Objective] = None
) -> dict[str, Any]:
    """The objective's score and loss, and weight counts, of ``model`` on a split.

    The score is reported under its own name (``accuracy`` for classification,
    ``agreement`` or ``mean_cosine`` with the dense model for label-free data,
    a user metric's name) and as ``score``, with ``metric`` naming it. Label-free
    data need the ``objective`` bound to the dense model (``resolve_objective``):
    a model is only ever compared with that reference."""
    x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
    if objective is None:
        if y is None:
            raise ConfigError(
                f"{splits.name} carries no labels: metrics need the objective bound to the dense "
                "model (nncompress.train.objective.resolve_objective(None, dense_model, splits))"
            )
        objective = resolve_objective(None, model, splits)
    loss, score = objective.evaluate(model, x, y)
    params, nonzero = count_parameters(model)
    out = {
        objective.metric: score,
        "loss": loss,
        "params": params,
        "nonzero": nonzero,
        "split": split,
        "examples": count(x),
        "metric": objective.metric,
        "score": score,
    }
    if objective.kind != "classification":
        out["objective"] = objective.describe()
    if split == "test" and splits.test_is_val:
        out["test_is_val"] = True
    return out


def read_model_file(path: str | os.PathLike[str]) -> "Checkpoint | Compressed":
    """A checkpoint or a compressed ``.nnc`` file, read and checked once; both give ``arch``,
    ``meta`` and ``build_model``."""
    return load_compressed(path) if is_compressed(path) else load_checkpoint(path)


def read_model_header(path: str | Path) -> "Checkpoint | CompressedHeader":
    """What a model file records (``arch``, ``meta``) without decoding a ``.nnc`` file's weights
    (a checkpoint has no header apart from its tensors, so it is read whole)."""
    return read_compressed_header(path) if is_compressed(path) else load_checkpoint(path)


def load_model_file(
    path: str | Path, model: Optional[nn.Module] = None, *, trust_factory: Trust = False
) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint or a compressed ``.nnc`` file -> (model, meta). ``model``
    is needed only for files that record no architecture; a recorded factory
    that is not an nn.Module class is called only when ``trust_factory`` names it."""
    file = read_model_file(path)
    built, meta = file.build_model(model, trust_factory=trust_factory), dict(file.meta)
    del file  # the state it read is in the model now
    release_freed()
    return built, meta


def data_kwargs(spec: str, splits: Splits, kwargs: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """A factory's keyword arguments, with the sizes the data implies filled in where the
    factory takes them and the user did not give them: ``num_classes``, ``in_channels``,
    ``input_shape``. So ``--model nets:resnet`` fits Fashion-MNIST and digits alike."""
    out = dict(kwargs or {})
    try:
        params = inspect.signature(import_object(spec, "--model")).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing to fill in
        return out
    shape = splits.input_shape if isinstance(splits.input_shape, tuple) else None
    implied = {
        "num_classes": splits.num_classes,
        "in_channels": shape[0] if shape else None,
        "input_shape": list(shape) if shape else None,
    }
    for name, value in implied.items():
        if name in params and name not in out and value is not None:
            out[name] = value
    return out


def model_for_data(spec: str, splits: Splits, kwargs: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """A fresh model for ``splits``: a built-in name sized for the data, or a factory
    ``pkg.module:name`` called with ``kwargs`` (and the sizes the data implies)."""
    if is_import_spec(spec):
        return build_model(spec, kwargs=data_kwargs(spec, splits, kwargs))
    return build_model(spec, splits.input_shape, splits.num_classes, kwargs=kwargs)


def load_for_data(
    path: str | Path, splits: Splits, model_name: Optional[str] = None, model_kwargs: Optional[Mapping[str, Any]] = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model file into its recorded architecture, or into ``model_name`` (a
    built-in or a factory the user names, which is then trusted), and check it fits
    the data. A file that records the same factory keeps its recorded kwargs unless
    ``model_kwargs`` are given."""
    file = read_model_file(path)
    arch = file.arch
    if (
        model_name
        and is_import_spec(model_name)
        and model_kwargs is None
        and is_factory_record(arch)
        and arch.get("factory") == model_name
    ):
        model = file.build_model(trust_factory=model_name)
    else:
        model = file.build_model(model_for_data(model_name, splits, model_kwargs) if model_name else None)
    check_fits(model, splits, f"model in {path}")
    return model, dict(file.meta)


def check_fits(model: nn.Module, splits: Splits, what: str, objective: Optional[Objective] = None) -> None:
    """One forward pass on two validation examples: a model that cannot take
    this data fails here with a clear message, not deep inside training."""
    sample = take(splits.val_x, slice(0, 2))
    try:
        with torch.no_grad():
            raw = call_model(model.eval(), sample)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        shape = f"of shape {tuple(splits.input_shape)}" if isinstance(sample, torch.Tensor) else describe(sample)
        raise CheckpointError(
            f"{what} does not accept {splits.name} inputs {shape}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
        ) from exc
    out, _ = pick_output(raw, objective.output if objective is not None else None)
    classifying = objective is None or objective.kind == "classification"
    if classifying and splits.num_classes is not None and out.shape[-1] != splits.num_classes:
        raise CheckpointError(f"{what} has {out.shape[-1]} outputs but {splits.name} has {splits.num_classes} classes")


def train_model(
    model: nn.Module,
    splits: Splits,
    cfg: TrainConfig,
    progress: Optional[ProgressFn] = None,
    journal: Optional[Journal] = None,
    objective: Optional[Objective] = None,
) -> dict[str, Any]:
    """Train from the current weights: on the labels, or by ``objective`` (e.g. a user loss)."""
    if objective is None and not splits.has_labels:
        raise ConfigError(
            f"{splits.name} carries no labels: training from scratch needs labels or a user "
            "objective with a loss; label-free data compress a trained model by distilling from it"
        )
    objective = objective or resolve_objective(None, model, splits)
    gen = set_seed(cfg.seed)
    t0 = time.perf_counter()
    losses = fit(
        model,
        splits.train_x,
        splits.train_y,
        cfg,
        generator=gen,
        progress=progress,
        journal=journal,
        objective=objective,
    )
    distributed.check_identical(distributed.model_tensors(model), "the trained weights")
    return {
        "train_seconds": round(time.perf_counter() - t0, 2),
        "train_losses": losses,
        "val": metrics(model, splits, "val", objective),
        "train": cfg.to_dict(),
    }


def prune_model(
    model: nn.Module,
    splits: Splits,
    cfg: PruneConfig,
    progress: Optional[ProgressFn] = None,
    on_step: Optional[Callable[[StepRecord], None]] = None,
    journal: Optional[Journal] = None,
    objective: ObjectiveSpec = None,
) -> PruneResult:
    """Iterative pruning of any Linear/Conv model on these splits; decisions on validation only.
    The fine-tuning recipe is probed on the dense model first (``cfg.probe``).

    ``objective`` (``train.objective``) says what is judged: by default accuracy
    with labels, agreement or cosine with ``model`` as it is now without. The
    tolerance is in points of that score (1/100 of it); the validation scores
    in the result (and the step log's ``val_accuracy``) are the objective's,
    negated for a lower-is-better metric."""
    pruning_groups(model, cfg)  # bad input is refused before the probe trains anything
    objective = _objective(objective, model, splits)
    dense_score = objective.score(model, splits.val_x, splits.val_y)
    warning = resolution_warning(objective, cfg.tolerance, count(splits.val_x), dense_score)
    if warning:
        log.warning("%s", warning)
    log.info("pruning %s to a tolerance of %s", splits.name, objective.tolerance_text(cfg.tolerance))
    reader = ValidationReader(objective, splits.val_x, splits.val_y, model)  # paired with the dense model
    cfg, choice = choose_finetune(
        model,
        splits.train_x,
        splits.train_y,
        splits.val_x,
        splits.val_y,
        cfg,
        progress,
        objective=objective,
        reader=reader,
    )
    gen = set_seed(cfg.seed)
    teacher = (
        Teacher(copy.deepcopy(model), cfg.distill, cfg.distill_temperature, objective.output)
        if cfg.distill > 0 and objective.uses_teacher_term
        else None
    )

    def finetune(params: Iterable[nn.Parameter], epochs: int, after_step: Callable[[], None]) -> None:
        fit(
            model,
            splits.train_x,
            splits.train_y,
            cfg.finetune(epochs),
            params=params,
            after_step=after_step,
            generator=gen,
            progress=progress,
            task="fine-tune",
            journal=journal,
            teacher=teacher,
            objective=objective,
        )

    result = prune_(
        model, cfg, finetune=finetune, evaluate=lambda: reader.read(model), progress=progress, on_step=on_step
    )
    distributed.check_identical(
        [*distributed.model_tensors(model), *((f"mask:{n}", m) for n, m in result.masks.items())],
        "the pruned weights and masks",
    )
    result.finetune = choice.to_dict()
    result.objective = {**objective.describe(), "tolerance": objective.tolerance_text(cfg.tolerance)}
    result.warnings = [warning] if warning else []
    return result


def density_table(model: nn.Module, original: Optional[dict[str, int]] = None) -> list[dict[str, Any]]:
    """Per compressible layer of a model in memory: kept weights (against ``original``
    sizes, i.e. before dead neurons were removed), and dense vs CSR bytes (fp32 values).
    The table of a compressed file is ``modelfile.layer_table``."""
    rows = []
    for name, layer in compressible_layers(model).items():
        w = layer.weight.detach().cpu().numpy()
        nz = int(np.count_nonzero(w))
        sparse = csr_bytes(w)
        size = (original or {}).get(name, int(w.size))
        rows.append(
            {
                "layer": name,
                "kind": layer_kind(layer),
                "shape": list(w.shape),
                "weights": size,
                "nonzero": nz,
                "kept": nz / max(1, size),
                "dense_bytes": int(w.nbytes),
                "csr_bytes": sparse,
                "csr_smaller": sparse < w.nbytes,
                "csr_vs_dense": round(w.nbytes / sparse, 3) if sparse else None,
            }
        )
    return rows


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().cpu().numpy().copy() for n, m in compressible_layers(model).items()}


@dataclass
class PruneRun:
    """What ``run_prune`` produced: the figures and where the files are."""

    summary: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def prune_files(out: str | Path, log_dir: Optional[str | Path] = None) -> dict[str, Path]:
    """Every file ``run_prune`` writes: the checkpoint, then its log folder's files (by default
    ``<out stem>_prune`` beside it). The CLI checks them against the inputs before any work."""
    out = Path(out)
    folder = Path(log_dir) if log_dir else out.with_name(out.stem + "_prune")
    return {
        "checkpoint": out,
        "steps": folder / "steps.jsonl",
        "summary": folder / "summary.json",
        "hist_before": folder / "hist_before.png",
        "hist_after": folder / "hist_after.png",
    }


def sensitivity_files(out_dir: str | Path) -> dict[str, Path]:
    """The files a sensitivity scan writes into ``out_dir``."""
    return {"csv": Path(out_dir) / "sensitivity.csv", "plot": Path(out_dir) / "sensitivity.png"}


def run_prune(
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    cfg: PruneConfig,
    *,
    log_dir: Optional[str | Path] = None,
    storage: str = "auto",
    model_name: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    objective: ObjectiveSpec = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> PruneRun:
    """Prune a checkpoint and write the pruned checkpoint, the step log (JSON
    lines), the per-layer table, the histograms and a summary."""
    splits = splits or load_data(data)
    model, source_meta = load_for_data(checkpoint, splits, model_name, model_kwargs)
    input_bytes = Path(checkpoint).stat().st_size
    paths = prune_files(out, log_dir)
    out = paths["checkpoint"]
    distributed.on_main(lambda: paths["steps"].parent.mkdir(parents=True, exist_ok=True))
    before = _weights(model)
    sizes = source_meta.get("dense_weights") or {n: int(w.size) for n, w in before.items()}
    dense_weights = sum(sizes.values())
    objective = _objective(objective, model, splits)
    dense_test = metrics(model, splits, "test", objective)
    steps_path = paths["steps"]
    lines: list[str] = []

    def on_step(rec: StepRecord) -> None:  # rewritten whole each time: a crash leaves a complete log
        lines.append(json.dumps(rec.to_dict()))
        if distributed.is_main():
            write_text(steps_path, "\n".join(lines) + "\n")

    t0 = time.perf_counter()
    result = prune_model(model, splits, cfg, progress=progress, on_step=on_step, objective=objective)
    seconds = time.perf_counter() - t0
    pruned_test = metrics(model, splits, "test", objective)
    table = density_table(model, sizes)
    meta = {
        **source_meta,
        **_data_meta(splits),
        "pruned": True,
        "prune": cfg.to_dict(),
        "dense_params": int(source_meta.get("dense_params") or dense_test["params"]),
        "dense_weights": sizes,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": pruned_test["score"],
        "prune_drop": result.final_drop,
    }
    kept = sum(r["nonzero"] for r in table)
    summary = {
        "checkpoint": str(out),
        "data": splits.name,
        "transform": splits.transform,
        "seconds": round(seconds, 2),
        "metric": objective.metric,
        "objective": result.objective,
        "warnings": result.warnings,
        "dense": {
            "test_accuracy": dense_test["score"],
            "val_accuracy": result.dense_val_accuracy,
            "params": dense_test["params"],
            "nonzero": dense_test["nonzero"],
        },
        "pruned": {
            "test_accuracy": pruned_test["score"],
            "val_accuracy": result.val_accuracy,
            "params": pruned_test["params"],
            "nonzero": pruned_test["nonzero"],
        },
        "weights": dense_weights,
        "kept_weights": kept,
        "kept_fraction": kept / max(1, dense_weights),
        "compression": dense_weights / max(1, kept),
        "val_drop": result.final_drop,
        "test_drop_points": round(
            (objective.signed(dense_test["score"]) - objective.signed(pruned_test["score"])) * 100, 4
        ),
        "q": result.q,
        "dropout": result.dropout,
        "finetune": result.finetune,
        "layers": table,
        "storage": None,
        "removed_neurons": result.shrink.removed if result.shrink else {},
        "shrink_note": result.shrink.reason if result.shrink else "",
        "file_bytes": None,
        "input_file_bytes": input_bytes,
        "config": cfg.to_dict(),
    }
    summary = distributed.on_main(lambda: _write_pruned(out, model, meta, storage, before, paths, summary))
    drawn = figures_available()  # the histograms need matplotlib (the `plots` extra)
    return PruneRun(summary, {key: str(path) for key, path in paths.items() if drawn or not key.startswith("hist_")})


def _write_pruned(
    out: Path,
    model: nn.Module,
    meta: dict[str, Any],
    storage: str,
    before: dict[str, np.ndarray],
    paths: dict[str, Path],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """``run_prune``'s files (rank 0's job); the summary, completed with the checkpoint's layout and size."""
    summary["storage"] = save_checkpoint(out, model, meta=meta, storage=storage)
    weight_histograms(before, paths["hist_before"], "Weights before pruning")
    weight_histograms(_weights(model), paths["hist_after"], "Nonzero weights after pruning", nonzero_only=True)
    summary["file_bytes"] = out.stat().st_size
    write_text(paths["summary"], json.dumps(summary, indent=2))
    return summary


def run_sensitivity(
    checkpoint: str | Path,
    data: str,
    out_dir: str | Path,
    cfg: SensitivityConfig,
    *,
    model_name: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    objective: ObjectiveSpec = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """Write sensitivity.csv and sensitivity.png; return the table and the
    per-layer q scales the pruner would take from it."""
    splits = splits or load_data(data)
    model, _ = load_for_data(checkpoint, splits, model_name, model_kwargs)
    return scan_sensitivity(model, splits, cfg, out_dir, progress, objective=objective)


def scan_sensitivity(
    model: nn.Module,
    splits: Splits,
    cfg: SensitivityConfig,
    out_dir: Optional[str | Path],
    progress: Optional[ProgressFn] = None,
    objective: ObjectiveSpec = None,
) -> dict[str, Any]:
    """The scan on the validation split; with ``out_dir`` also its CSV and plot. The table's
    ``val_accuracy`` column holds the objective's score (negated for a lower-is-better metric)."""
    objective = _objective(objective, model, splits)
    base, rows = sensitivity_scan(
        model,
        q_schedule(cfg.q0, cfg.q_step, cfg.q_max),
        lambda: objective.signed(objective.score(model, splits.val_x, splits.val_y)),
        progress,
    )
    result = {
        "dense_val_accuracy": base,
        "rows": [r.__dict__ for r in rows],
        "layer_scale": layer_scales(rows, base, cfg.max_drop),
        "metric": objective.metric,
    }
    if out_dir is None:
        return result
    return distributed.on_main(lambda: _write_sensitivity(result, rows, base, objective, out_dir))


def _write_sensitivity(
    result: dict[str, Any], rows: list, base: float, objective: Objective, out_dir: str | Path
) -> dict[str, Any]:
    """The scan's CSV and plot (rank 0's job)."""
    files = sensitivity_files(out_dir)
    files["csv"].parent.mkdir(parents=True, exist_ok=True)
    to_csv(base, rows, files["csv"])
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        curves.setdefault(r.layer, []).append((r.q, r.val_accuracy))
    if objective.counts_examples:  # a fraction of examples: shown in %
        drawn = sensitivity_plot(base, curves, files["plot"], ylabel=f"validation {objective.metric} (%)")
    else:
        drawn = sensitivity_plot(base, curves, files["plot"], ylabel=f"validation {objective.metric}", scale=1.0)
    return {**result, "files": {key: str(path) for key, path in files.items() if drawn or key != "plot"}}


def save_trained(model: nn.Module, splits: Splits, out: str | Path, info: dict[str, Any]) -> None:
    distributed.on_main(lambda: save_checkpoint(out, model, meta={**_data_meta(splits), **info}, storage="dense"))


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
    it only by more than its standard error (paired with ``model`` as given)."""
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
    if tolerance is None:
        shared = share_weights_(layers, bits, inits, cfg.seed, progress=progress)
        val_before = objective.score(model, splits.val_x, splits.val_y)
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
        )
        bits = search.bits
        # the search's last reading is of the model as it stands (signed back to the metric's direction)
        val_before = objective.signed(readings[-1].score)
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
        codebooks = {n: s.codebook for n, s in shared.items()}
        saved.restore_(model, codebooks)  # into the codebook tensors themselves
    saved.close()
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
    return shared, {
        **info,
        "bits": bits,
        "codebook_used": used,
        "val_after_sharing": val_before,
        "val_after_centroid_tuning": val_after,
        "centroid_tuning_kept": kept,
        "centroid_tuning_diverged": diverged,
        "metric": objective.metric,
    }


def run_compress(
    checkpoint: str | Path,
    data: str,
    out: str | Path,
    prune_cfg: Optional[PruneConfig],
    share_cfg: ShareConfig,
    *,
    model_name: Optional[str] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    sensitivity_cfg: Optional[SensitivityConfig] = None,
    run: Optional[RunDir] = None,
    objective: ObjectiveSpec = None,
    model_kwargs: Optional[Mapping[str, Any]] = None,
) -> dict[str, Any]:
    """prune (unless ``prune_cfg`` is None or the checkpoint is already pruned)
    -> share -> fine-tune -> code; the reported accuracy is that of the model
    decoded from the written file. With ``run`` every stage leaves its files
    (and its training state, for resuming) in that run directory."""
    splits = splits or load_data(data)
    model, source_meta = load_for_data(checkpoint, splits, model_name, model_kwargs)
    return compress_model(
        model,
        source_meta,
        splits,
        out,
        prune_cfg,
        share_cfg,
        progress=progress,
        sensitivity_cfg=sensitivity_cfg,
        run=run,
        objective=objective,
    )


def _histograms(model: nn.Module, nonzero_only: bool) -> dict[str, Any]:
    from nncompress.report.histograms import histogram_record

    return histogram_record(_weights(model), nonzero_only=nonzero_only)


def _finite_number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sharing_budget(
    pruned: Optional[PruneResult], prune_cfg: Optional[PruneConfig], source_meta: Mapping[str, Any]
) -> Optional[dict[str, float]]:
    """The whole file's tolerance and what pruning spent of it (here, or as the pruned checkpoint
    records); the rest is weight sharing's. None where no pruning tolerance is known."""
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
        "sharing": round(max(0.0, float(tolerance) - float(spent)), 4),
    }


def compress_model(
    model: nn.Module,
    source_meta: dict[str, Any],
    splits: Splits,
    out: str | Path,
    prune_cfg: Optional[PruneConfig],
    share_cfg: ShareConfig,
    *,
    progress: Optional[ProgressFn] = None,
    sensitivity_cfg: Optional[SensitivityConfig] = None,
    run: Optional[RunDir] = None,
    objective: ObjectiveSpec = None,
) -> dict[str, Any]:
    """The stages of ``run_compress`` on a model already in memory (changed in place).
    ``objective`` (default: accuracy with labels, distillation from the model as
    given without) judges every stage against the model as given."""
    skipped = prune_cfg is not None and bool(source_meta.get("pruned"))
    if skipped:
        prune_cfg = None
    journal = run.journal if run else None
    histograms: dict[str, Any] = {}
    dense_params = int(source_meta.get("dense_params") or count_parameters(model)[0])
    # layer sizes before any neuron was removed, so the file's table counts removed neurons as pruned;
    # unknown for a checkpoint pruned elsewhere (or by an older nncompress) that did not record them
    dense_weights = source_meta.get("dense_weights") or (
        None if source_meta.get("pruned") else {n: m.weight.numel() for n, m in compressible_layers(model).items()}
    )
    objective = _objective(objective, model, splits)
    dense_test = metrics(model, splits, "test", objective)
    if run:
        histograms["pruned" if source_meta.get("pruned") else "dense"] = _histograms(
            model, nonzero_only=bool(source_meta.get("pruned"))
        )
    if sensitivity_cfg is not None and prune_cfg is not None:
        scan = scan_sensitivity(
            model, splits, sensitivity_cfg, run.path if run else None, progress, objective=objective
        )
        if not prune_cfg.layer_scale:  # per-layer q given by hand wins over the scan's
            prune_cfg = dataclasses.replace(prune_cfg, layer_scale=scan["layer_scale"])
    t0 = time.perf_counter()
    pruned = None
    if prune_cfg is not None:
        pruned = prune_model(
            model,
            splits,
            prune_cfg,
            progress=progress,
            on_step=(lambda rec: run.on_step(rec.to_dict())) if run else None,
            journal=journal,
            objective=objective,
        )
        histograms["pruned"] = _histograms(model, nonzero_only=True)
    t1 = time.perf_counter()
    budget = _sharing_budget(pruned, prune_cfg, source_meta)
    shared, share_info = share_model(
        model,
        splits,
        share_cfg,
        progress,
        journal=journal,
        objective=objective,
        budget=None if budget is None else budget["sharing"],
    )
    if budget is not None:
        share_info["budget"] = budget
    t2 = time.perf_counter()
    meta: dict[str, Any] = {"data": splits.name, "dense_params": dense_params}
    if dense_weights:
        meta["dense_weights"] = dense_weights
    if transform_record(splits.transform):
        meta["transform"] = transform_record(splits.transform)
    quantized = {f"{n}.weight": share_cfg.quantize_dtype for n in quantized_layers(model, share_cfg)}

    def finish() -> dict[str, Any]:  # rank 0: write the file, decode it and score what was decoded
        save_compressed(
            out,
            model,
            shared,
            meta=meta,
            rel_bits=share_cfg.rel_bits,
            raw_dtype=share_cfg.raw_dtype,
            codebook_dtype=share_cfg.codebook_dtype,
            quantized=quantized,
            progress=progress,
        )
        shared.clear()  # masks and indices are in the file now; decoding it needs their memory
        t3 = time.perf_counter()
        decoded = load_compressed(out, max_decoded_bytes=2**62, max_tensor_bytes=2**62)  # written here: no limit
        # the file records the factory this very model was built from: calling it again needs no more trust
        restored = decoded.build_model(
            None if decoded.header.get("arch") else model,
            trust_factory=(arch_record(model) or {}).get("factory", False),
        )
        test = metrics(restored, splits, "test", objective)
        table = file_table(decoded.header, decoded.section_bytes, decoded.file_bytes)
        scores = (
            {"dense_test_accuracy": dense_test["score"], "test_accuracy": test["score"]}
            if objective.kind == "classification"
            else {}
        )
        summary = {
            "file": str(out),
            **table,
            **scores,
            "metric": objective.metric,
            "transform": splits.transform,
            "dense_test_score": dense_test["score"],
            "test_score": test["score"],
            "test_drop_points": round(
                (objective.signed(dense_test["score"]) - objective.signed(test["score"])) * 100, 4
            ),
            "objective": pruned.objective if pruned else {**objective.describe()},
            "warnings": pruned.warnings if pruned else [],
            "val_accuracy_pruned": pruned.val_accuracy if pruned else None,
            "pruning_skipped": skipped,
            "finetune": pruned.finetune if pruned else None,
            **share_info,
            "config": {"prune": prune_cfg.to_dict() if prune_cfg else None, "share": share_cfg.to_dict()},
            "seconds": {
                "prune": round(t1 - t0, 2),
                "share": round(t2 - t1, 2),
                "encode": round(t3 - t2, 2),
                "decode_and_test": round(time.perf_counter() - t3, 2),
            },
        }
        if run:
            histograms["shared"] = _histograms(restored, nonzero_only=True)
            run.write_json("histograms.json", {"stages": histograms})
            summary["training_calls"] = run.journal.calls
            summary["resumed_training_calls"] = run.journal.resumed_calls
            run.write_json("summary.json", summary)
            run.journal.clear()
        return summary

    return distributed.on_main(finish)


def run_recipe(
    recipe: "Recipe",
    run: RunDir,
    *,
    checkpoint: Optional[str | Path] = None,
    out: Optional[str | Path] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    model: Optional[nn.Module] = None,
) -> dict[str, Any]:
    """A whole run described by a recipe, in a run directory: train (when neither a
    checkpoint nor a trained ``model`` in memory is given), sensitivity scan, prune,
    share, code. Interrupted, the same call with ``RunDir(..., resume=True)`` (and
    the same ``model``, whose weights are checked) continues from the last saved
    epoch and writes the same file, byte for byte. ``model`` is changed in place."""
    from nncompress.recipe import dump_recipe, recipe_to_dict

    if recipe.data is None and splits is None:
        raise ConfigError("the recipe names no data set; add `data:` to it or give --data")
    if checkpoint is not None and model is not None:
        raise ConfigError("give a checkpoint or a model in memory, not both")
    if checkpoint is None and recipe.model is None and model is None:
        raise ConfigError("nothing to compress: give a checkpoint, or name a `model:` in the recipe to train one")
    checkpoint = str(Path(checkpoint).resolve()) if checkpoint else None
    out = Path(out).resolve() if out else run.file("model.nnc").resolve()
    started = {"command": "compress", "checkpoint": checkpoint, "out": str(out), "recipe": recipe_to_dict(recipe)}
    if model is not None:
        started["model_weights_sha256"] = fingerprint(model)
    if run.resume:
        run.check_same_run(started)
    if splits is None:
        assert recipe.data is not None  # refused above
        splits = load_data(recipe.data, normalize=recipe.normalize)
    source_meta: dict[str, Any] = {}
    if model is not None:
        check_fits(model, splits, "the model")
    elif checkpoint is None:
        assert recipe.model is not None  # refused above
        set_seed(recipe.seed)  # the initial weights too
        model = model_for_data(recipe.model, splits, recipe.model_kwargs)
    else:
        model, source_meta = load_for_data(checkpoint, splits, recipe.model, recipe.model_kwargs)
    train_first = checkpoint is None and "model_weights_sha256" not in started
    if not splits.has_labels and train_first:  # refused before run.json: a typo leaves no half-made run
        raise ConfigError(
            f"{splits.name} carries no labels, so compress cannot train a model from scratch: "
            "give the trained checkpoint to compress (label-free runs distil from its outputs)"
        )
    if not splits.has_labels and recipe.objective == "classification":
        raise ConfigError(
            f"objective 'classification' needs labels, and {splits.name} carries none; use 'auto', "
            "'kl', 'cosine' or 'mse' to distil from the dense model"
        )
    check_layer_names(recipe, model)  # before hours of training, not after
    if not run.resume:  # written only once the inputs are known to be good: a typo leaves no half-made run
        from nncompress.rundir import environment

        run.write_json("environment.json", environment())
        run.write_text("recipe.yaml", dump_recipe(recipe))
        run.write_json("run.json", {**started, "torch_threads": torch.get_num_threads()})
    if train_first:
        info = train_model(model, splits, recipe.train, progress, journal=run.journal)
        save_trained(
            model,
            splits,
            run.file("base.pt"),
            {"test_accuracy": metrics(model, splits)["accuracy"], "val_accuracy": info["val"]["accuracy"]},
        )
    return compress_model(
        model,
        source_meta,
        splits,
        out,
        recipe.prune,
        recipe.share,
        progress=progress,
        sensitivity_cfg=recipe.sensitivity,
        run=run,
        objective=recipe.objective,
    )


def check_layer_names(recipe: "Recipe", model: nn.Module) -> None:
    """Every layer a recipe names must be one its section selects (pruned or shared)."""
    named: list[tuple[str, Iterable[str], dict[str, Compressible], str]] = [
        (
            "share.layers",
            recipe.share.layer_bits,
            select_layers(model, recipe.share.select, recipe.share.exclude, what="share.select"),
            "shared",
        )
    ]
    if recipe.prune is not None:
        named.insert(
            0,
            (
                "prune.layers",
                recipe.prune.layer_scale,
                prunable_layers(model, recipe.prune.select, recipe.prune.exclude),
                "pruned",
            ),
        )
    for key, names, layers, verb in named:
        unknown = sorted(set(names) - set(layers))
        if unknown:
            raise ConfigError(
                f"{key}: unknown layer(s) {unknown}; the model's {verb} layers are {list(layers)}", field=key
            )
    if recipe.prune is not None:
        try:
            pruning_groups(model, recipe.prune)  # the pruner's own checks: groups, layers too small to prune
        except ConfigError as exc:
            raise ConfigError(f"prune.{exc}", field=exc.field and f"prune.{exc.field}") from None
