"""Compose data, models, training and pruning into the runs the CLI offers.

Every function here returns plain results and writes files atomically; none
prints. Progress goes through the ``progress`` callback.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from nncompress.atomic import write_text
from nncompress.coding.csr import csr_bytes
from nncompress.config import PruneConfig, SensitivityConfig, TrainConfig
from nncompress.data import Splits, load_data
from nncompress.errors import CheckpointError
from nncompress.models import build_model
from nncompress.progress import ProgressFn
from nncompress.pruning import PruneResult, StepRecord, prunable_layers, prune_
from nncompress.pruning.apply import count_parameters
from nncompress.pruning.masks import layer_kind
from nncompress.pruning.schedule import q_schedule
from nncompress.pruning.sensitivity import layer_scales, sensitivity_scan, to_csv
from nncompress.report.plots import sensitivity_plot, weight_histograms
from nncompress.train import evaluate, fit, set_seed
from nncompress.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def _data_meta(splits: Splits) -> dict[str, Any]:
    return {"data": splits.name, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}


def metrics(model: nn.Module, splits: Splits, split: str = "test") -> dict[str, Any]:
    """Accuracy (fraction), loss, and weight counts of ``model`` on a split."""
    x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
    loss, acc = evaluate(model, x, y)
    params, nonzero = count_parameters(model)
    return {"accuracy": acc, "loss": loss, "params": params, "nonzero": nonzero, "split": split,
            "examples": len(y)}


def load_for_data(path: str | Path, splits: Splits, model_name: Optional[str] = None) -> tuple[nn.Module, Checkpoint]:
    """Load a checkpoint into its recorded architecture (or ``model_name``) and
    check it fits the data."""
    ckpt = load_checkpoint(path)
    model = build_model(model_name, splits.input_shape, splits.num_classes) if model_name else None
    model = ckpt.build_model(model)
    try:
        with torch.no_grad():
            out = model.eval()(splits.val_x[:2])
    except RuntimeError as exc:
        raise CheckpointError(f"model in {path} does not accept {splits.name} inputs of shape "
                              f"{tuple(splits.input_shape)}: {str(exc).splitlines()[0]}") from exc
    if out.shape[-1] != splits.num_classes:
        raise CheckpointError(f"model in {path} has {out.shape[-1]} outputs but {splits.name} has "
                              f"{splits.num_classes} classes")
    return model, ckpt


def train_model(model: nn.Module, splits: Splits, cfg: TrainConfig,
                progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    gen = set_seed(cfg.seed)
    t0 = time.perf_counter()
    losses = fit(model, splits.train_x, splits.train_y, cfg, generator=gen, progress=progress)
    return {"train_seconds": round(time.perf_counter() - t0, 2), "train_losses": losses,
            "val": metrics(model, splits, "val"), "train": cfg.to_dict()}


def prune_model(model: nn.Module, splits: Splits, cfg: PruneConfig, progress: Optional[ProgressFn] = None,
                on_step: Optional[Callable[[StepRecord], None]] = None) -> PruneResult:
    """Iterative pruning of any Linear/Conv model on these splits; decisions on validation only."""
    gen = set_seed(cfg.seed)

    def finetune(params: Iterable[nn.Parameter], epochs: int, after_step: Callable[[], None]) -> None:
        fit(model, splits.train_x, splits.train_y, cfg.finetune(epochs), params=params, after_step=after_step,
            generator=gen, progress=progress, task="fine-tune")

    def val_accuracy() -> float:
        return evaluate(model, splits.val_x, splits.val_y)[1]

    return prune_(model, cfg, finetune=finetune, evaluate=val_accuracy, progress=progress, on_step=on_step)


def layer_table(model: nn.Module, original: Optional[dict[str, int]] = None) -> list[dict[str, Any]]:
    """Per prunable layer: kept weights (against ``original`` sizes, i.e.
    before dead neurons were removed), and dense vs CSR bytes (fp32 values)."""
    rows = []
    for name, layer in prunable_layers(model).items():
        w = layer.weight.detach().cpu().numpy()
        nz = int(np.count_nonzero(w))
        sparse = csr_bytes(w)
        size = (original or {}).get(name, int(w.size))
        rows.append({"layer": name, "kind": layer_kind(layer), "shape": list(w.shape), "weights": size,
                     "nonzero": nz, "kept": nz / max(1, size), "dense_bytes": int(w.nbytes),
                     "csr_bytes": sparse, "csr_smaller": sparse < w.nbytes,
                     "csr_vs_dense": round(w.nbytes / sparse, 3) if sparse else None})
    return rows


def _weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: m.weight.detach().cpu().numpy().copy() for n, m in prunable_layers(model).items()}


@dataclass
class PruneRun:
    """What ``run_prune`` produced: the figures and where the files are."""

    summary: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)


def run_prune(checkpoint: str | Path, data: str, out: str | Path, cfg: PruneConfig, *,
              log_dir: Optional[str | Path] = None, storage: str = "auto", model_name: Optional[str] = None,
              progress: Optional[ProgressFn] = None, splits: Optional[Splits] = None) -> PruneRun:
    """Prune a checkpoint and write the pruned checkpoint, the step log (JSON
    lines), the per-layer table, the histograms and a summary."""
    splits = splits or load_data(data)
    model, ckpt = load_for_data(checkpoint, splits, model_name)
    out = Path(out)
    log_dir = Path(log_dir) if log_dir else out.with_name(out.stem + "_prune")
    log_dir.mkdir(parents=True, exist_ok=True)
    before = _weights(model)
    dense_weights = sum(w.size for w in before.values())
    dense_test = metrics(model, splits, "test")
    steps_path = log_dir / "steps.jsonl"
    lines: list[str] = []

    def on_step(rec: StepRecord) -> None:  # rewritten whole each time: a crash leaves a complete log
        lines.append(json.dumps(rec.to_dict()))
        write_text(steps_path, "\n".join(lines) + "\n")

    t0 = time.perf_counter()
    result = prune_model(model, splits, cfg, progress=progress, on_step=on_step)
    seconds = time.perf_counter() - t0
    pruned_test = metrics(model, splits, "test")
    table = layer_table(model, {n: int(w.size) for n, w in before.items()})
    meta = {**ckpt.meta, **_data_meta(splits), "pruned": True, "prune": cfg.to_dict(),
            "val_accuracy": result.val_accuracy, "test_accuracy": pruned_test["accuracy"]}
    layout = save_checkpoint(out, model, meta=meta, storage=storage)
    weight_histograms(before, log_dir / "hist_before.png", "Weights before pruning")
    weight_histograms(_weights(model), log_dir / "hist_after.png", "Nonzero weights after pruning",
                      nonzero_only=True)
    kept = sum(r["nonzero"] for r in table)
    summary = {
        "checkpoint": str(out), "data": splits.name, "seconds": round(seconds, 2),
        "dense": {"test_accuracy": dense_test["accuracy"], "val_accuracy": result.dense_val_accuracy,
                  "params": dense_test["params"], "nonzero": dense_test["nonzero"]},
        "pruned": {"test_accuracy": pruned_test["accuracy"], "val_accuracy": result.val_accuracy,
                   "params": pruned_test["params"], "nonzero": pruned_test["nonzero"]},
        "weights": dense_weights, "kept_weights": kept, "kept_fraction": kept / max(1, dense_weights),
        "compression": dense_weights / max(1, kept),
        "test_drop_points": round((dense_test["accuracy"] - pruned_test["accuracy"]) * 100, 4),
        "q": result.q, "dropout": result.dropout, "layers": table, "storage": layout,
        "removed_neurons": result.shrink.removed if result.shrink else {},
        "shrink_note": result.shrink.reason if result.shrink else "",
        "file_bytes": out.stat().st_size, "input_file_bytes": Path(checkpoint).stat().st_size,
        "config": cfg.to_dict(),
    }
    write_text(log_dir / "summary.json", json.dumps(summary, indent=2))
    files = {"checkpoint": str(out), "steps": str(steps_path), "summary": str(log_dir / "summary.json"),
             "hist_before": str(log_dir / "hist_before.png"), "hist_after": str(log_dir / "hist_after.png")}
    return PruneRun(summary, files)


def run_sensitivity(checkpoint: str | Path, data: str, out_dir: str | Path, cfg: SensitivityConfig, *,
                    model_name: Optional[str] = None, progress: Optional[ProgressFn] = None,
                    splits: Optional[Splits] = None) -> dict[str, Any]:
    """Write sensitivity.csv and sensitivity.png; return the table and the
    per-layer q scales the pruner would take from it."""
    splits = splits or load_data(data)
    model, _ = load_for_data(checkpoint, splits, model_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base, rows = sensitivity_scan(model, q_schedule(cfg.q0, cfg.q_step, cfg.q_max),
                                  lambda: evaluate(model, splits.val_x, splits.val_y)[1], progress)
    to_csv(base, rows, out_dir / "sensitivity.csv")
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        curves.setdefault(r.layer, []).append((r.q, r.val_accuracy))
    sensitivity_plot(base, curves, out_dir / "sensitivity.png")
    return {"dense_val_accuracy": base, "rows": [r.__dict__ for r in rows],
            "layer_scale": layer_scales(rows, base, cfg.max_drop),
            "files": {"csv": str(out_dir / "sensitivity.csv"), "plot": str(out_dir / "sensitivity.png")}}


def save_trained(model: nn.Module, splits: Splits, out: str | Path, info: dict[str, Any]) -> None:
    save_checkpoint(out, model, meta={**_data_meta(splits), **info}, storage="dense")
