"""Figures: weight histograms per layer and sensitivity curves.

matplotlib is imported lazily (and with the Agg backend) so importing the
package stays fast and works without a display. It is an optional extra
(``nncompress[plots]``): without it the figures are skipped, saying so, and
everything else (tables, CSVs, the report's text) is written as before.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nncompress.atomic import atomic_open


log = logging.getLogger(__name__)

NO_MATPLOTLIB = "matplotlib is not installed (pip install 'nncompress[plots]' draws it)"


def figures_available() -> bool:
    """Whether matplotlib can be imported, without importing it."""
    if "matplotlib" in sys.modules:  # imported already, or blocked (None)
        return sys.modules["matplotlib"] is not None
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _skipped(path: str | Path) -> bool:
    """True (after logging why) when ``path`` cannot be drawn."""
    if figures_available():
        return False
    log.warning("%s not drawn: %s", path, NO_MATPLOTLIB)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes in the house resolution (the report embeds them)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _save(fig, path: str | Path) -> None:
    data = png_bytes(fig)
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def weight_histograms(
    weights: Mapping[str, np.ndarray], path: str | Path, title: str, nonzero_only: bool = False, bins: int = 100
) -> bool:
    """One panel per layer: the before/after-pruning figures. After pruning, the
    zeros are left out so the bimodal shape shows. False: not drawn (no matplotlib)."""
    if _skipped(path):
        return False
    plt = _pyplot()
    n = len(weights)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, w) in zip(axes.flat, weights.items(), strict=False):  # the grid may hold more axes than weights
        values = w.ravel()
        if nonzero_only:
            values = values[values != 0]
        ax.hist(values, bins=bins, color="#3b6ea8")
        kept = np.count_nonzero(w) / max(1, w.size)
        ax.set_title(f"{name}  ({w.size:,} weights, {kept:.1%} nonzero)", fontsize=9)
        ax.set_xlabel("weight value", fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, y=1.02)
    _save(fig, path)
    plt.close(fig)
    return True


def sensitivity_plot(
    base: float,
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    ylabel: str = "validation accuracy (%)",
    scale: float = 100.0,
) -> bool:
    """The validation score against q, one line per layer pruned alone. False: not drawn
    (no matplotlib)."""
    if _skipped(path):
        return False
    fig = sensitivity_figure(base, curves, ylabel=ylabel, scale=scale)
    _save(fig, path)
    _pyplot().close(fig)
    return True


def sensitivity_figure(
    base: float,
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    ylabel: str = "validation accuracy (%)",
    scale: float = 100.0,
):
    """The sensitivity figure, unsaved: the CLI writes it to a file, the report embeds it.
    Scores are multiplied by ``scale`` (100: fractions shown in %)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, points in curves.items():
        qs, accs = zip(*points, strict=True)
        ax.plot(qs, [a * scale for a in accs], marker="o", markersize=3, label=name)
    ax.axhline(base * scale, color="grey", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("q (threshold = q x std of the layer's weights)")
    ax.set_ylabel(ylabel)
    ax.set_title("Sensitivity: each layer pruned alone, no fine-tuning")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
