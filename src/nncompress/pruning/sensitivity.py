"""Sensitivity analysis: each layer pruned alone at a range of q, no fine-tuning.

Takes an evaluation callback and returns a table (exports to CSV); the table
turns into per-layer q scales for the pruner, so robust layers are pruned
harder than sensitive ones.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from nncompress.atomic import write_text
from nncompress.errors import ConfigError, DataError
from nncompress.progress import ProgressFn, report
from nncompress.pruning.masks import prunable_layers, std_threshold, threshold_mask
from nncompress.pruning.schedule import drop_points

FIELDS = ("layer", "q", "density", "val_accuracy")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SensitivityRow:
    layer: str
    q: float
    density: float
    val_accuracy: float


def sensitivity_scan(
    model: nn.Module, qs: Sequence[float], evaluate: Callable[[], float], progress: Optional[ProgressFn] = None
) -> tuple[float, list[SensitivityRow]]:
    """(dense accuracy, one row per layer and q). The model is left unchanged."""
    layers = prunable_layers(model)
    base = evaluate()
    rows: list[SensitivityRow] = []
    total, done = len(layers) * len(qs), 0
    for name, layer in layers.items():
        original = layer.weight.detach().clone()
        std = float(original.std())
        try:
            for q in qs:
                mask = threshold_mask(original, std_threshold(std, q))
                with torch.no_grad():
                    layer.weight.copy_(original * mask)
                kept = int(torch.count_nonzero(mask)) / max(1, mask.numel())
                rows.append(SensitivityRow(name, float(q), kept, evaluate()))
                done += 1
                report(progress, "sensitivity", done, total, layer=name, q=q)
        finally:
            with torch.no_grad():
                layer.weight.copy_(original)
    return base, rows


DENSE = "(dense)"


def to_csv(base: float, rows: Sequence[SensitivityRow], path: str | Path) -> None:
    """The first data row, layer ``(dense)``, carries the unpruned accuracy."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(FIELDS)
    writer.writerow([DENSE, "0", "1.000000", f"{base:.6f}"])
    for r in rows:
        writer.writerow([r.layer, f"{r.q:g}", f"{r.density:.6f}", f"{r.val_accuracy:.6f}"])
    write_text(path, buf.getvalue())


def from_csv(path: str | Path) -> tuple[float, list[SensitivityRow]]:
    path = Path(path)
    if path.is_dir():
        path = path / "sensitivity.csv"
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise DataError(f"{path}: expected CSV columns {','.join(FIELDS)}, got {reader.fieldnames}")
            rows = [
                SensitivityRow(r["layer"], float(r["q"]), float(r["density"]), float(r["val_accuracy"])) for r in reader
            ]
    except FileNotFoundError as exc:
        raise DataError(f"sensitivity table {path} not found: run `nncompress sensitivity` first") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed sensitivity table ({exc})") from exc
    dense = [r for r in rows if r.layer == DENSE]
    if len(dense) != 1 or len(rows) < 2:
        raise DataError(f"{path}: a sensitivity table needs one '{DENSE}' row and at least one layer row")
    return dense[0].val_accuracy, [r for r in rows if r.layer != DENSE]


def layer_q_limits(rows: Sequence[SensitivityRow], base: float, max_drop: float) -> dict[str, float]:
    """Per layer, the largest q whose accuracy drop (points) stays within ``max_drop``."""
    limits: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: (r.layer, r.q)):
        limits.setdefault(r.layer, 0.0)
        if drop_points(base, r.val_accuracy) <= max_drop:
            limits[r.layer] = max(limits[r.layer], r.q)
    return limits


def layer_scales(rows: Sequence[SensitivityRow], base: float, max_drop: float) -> dict[str, float]:
    """q multipliers relative to the median layer; a layer that tolerates no
    pruning at all gets the smallest positive scale seen."""
    limits = layer_q_limits(rows, base, max_drop)
    if not limits:
        raise ConfigError("the sensitivity table is empty")
    positive = [v for v in limits.values() if v > 0]
    if not positive:
        log.warning("no layer stays within %.2f points at any q of the table: per-layer q scales are all 1", max_drop)
        return {name: 1.0 for name in limits}
    ref = statistics.median(positive)
    floor = min(positive)
    return {name: round(max(v, floor) / ref, 4) for name, v in limits.items()}
