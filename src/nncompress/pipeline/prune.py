"""The pruning stage, and ``run_prune``: a checkpoint in, a pruned checkpoint with its step log,
per-layer table, histograms and summary out."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np
from torch import nn

from nncompress import distributed
from nncompress.atomic import write_text
from nncompress.coding.csr import csr_bytes
from nncompress.config import PruneConfig
from nncompress.data import Splits, load_data
from nncompress.data.batches import count
from nncompress.progress import ProgressFn
from nncompress.pruning import PruneResult, StepRecord, prune_
from nncompress.pruning.iterative import pruning_groups
from nncompress.layers import compressible_layers, layer_kind
from nncompress.report.plots import figures_available, weight_histograms
from nncompress.train import fit, set_seed
from nncompress.train.loop import Teacher
from nncompress.train.objective import ObjectiveSpec, resolution_warning
from nncompress.train.evidence import ValidationReader
from nncompress.train.probe import choose_finetune
from nncompress.train.checkpoint import save_checkpoint
from nncompress.train.journal import Journal
from nncompress.pipeline.measure import _data_meta, _objective, _weights, metrics
from nncompress.pipeline.modelfiles import load_for_data

# named for the package: the CLI prints the name before each message, whichever stage logs it
log = logging.getLogger("nncompress.pipeline")


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
