"""The per-layer sensitivity scan as a stage: the table, the q scales the pruner takes from it,
and (with a folder) its CSV and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from torch import nn

from nncompress import distributed
from nncompress.config import SensitivityConfig
from nncompress.data import Splits, load_data
from nncompress.progress import ProgressFn
from nncompress.pruning.schedule import q_schedule
from nncompress.pruning.sensitivity import layer_scales, sensitivity_scan, to_csv
from nncompress.report.plots import sensitivity_plot
from nncompress.train.objective import Objective, ObjectiveSpec
from nncompress.pipeline.measure import _objective
from nncompress.pipeline.modelfiles import load_for_data


def sensitivity_files(out_dir: str | Path) -> dict[str, Path]:
    """The files a sensitivity scan writes into ``out_dir``."""
    return {"csv": Path(out_dir) / "sensitivity.csv", "plot": Path(out_dir) / "sensitivity.png"}


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
