"""The report's figures, returned as PNG bytes (the page embeds them).

Drawn from the run directory's numbers, not from a model, so a report can
be made long after the run, on a machine without the data.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nncompress.pruning.sensitivity import SensitivityRow
from nncompress.report.histograms import STAGES
from nncompress.report.metric import ACCURACY, Metric
from nncompress.report.plots import _pyplot, png_bytes, sensitivity_figure

STAGE_TITLES = {
    "dense": "dense (all weights)",
    "pruned": "after pruning (nonzero)",
    "shared": "after weight sharing (nonzero)",
}
STAGE_COLORS = {"dense": "#3b6ea8", "pruned": "#c0692b", "shared": "#3f8f4f"}
STEP_COLORS = {
    "dense": "#222222",
    "control": "#8c8c8c",
    "consolidate": "#8e5ab5",
    "step": "#3b6ea8",
    "recover": "#d08a1e",
    "final": "#3f8f4f",
}


def _finish(fig) -> bytes:
    data = png_bytes(fig)
    _pyplot().close(fig)
    return data


def histogram_grid(stages: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> bytes:
    """One row per layer, one column per stage present, each row on one x scale
    so a layer's three shapes compare at a glance."""
    plt = _pyplot()
    cols = [s for s in STAGES if s in stages] + [s for s in stages if s not in STAGES]
    layers: list[str] = []
    for s in cols:
        layers += [name for name in stages[s] if name not in layers]
    fig, axes = plt.subplots(len(layers), len(cols), figsize=(3.9 * len(cols), 2.3 * len(layers) + 0.4), squeeze=False)
    for r, layer in enumerate(layers):
        recs = [stages[s].get(layer) for s in cols]
        drawn = [rec for rec in recs if rec and sum(rec["counts"]) > 0]  # an all-pruned layer has no range
        lo = min((rec["edges"][0] for rec in drawn), default=-1.0)
        hi = max((rec["edges"][-1] for rec in drawn), default=1.0)
        for c, (stage, rec) in enumerate(zip(cols, recs, strict=True)):
            ax = axes[r][c]
            if r == 0:
                ax.set_title(STAGE_TITLES.get(stage, stage), fontsize=10, fontweight="bold")
            if c == 0:
                ax.set_ylabel(f"{layer}\ncount", fontsize=9)
            if rec is None or rec not in drawn:
                ax.text(
                    0.5,
                    0.5,
                    "not recorded" if rec is None else "no nonzero weights",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                )
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.stairs(rec["counts"], rec["edges"], fill=True, color=STAGE_COLORS.get(stage, "#555555"))
            ax.set_xlim(lo, hi)
            ax.set_ylim(0, 1.3 * max(max(rec["counts"], default=0), 1))  # headroom for the caption
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.25)
            ax.text(
                0.98,
                0.95,
                _caption(stage, rec),
                ha="right",
                va="top",
                fontsize=7.5,
                transform=ax.transAxes,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
            if r == len(layers) - 1:
                ax.set_xlabel("weight value", fontsize=8)
    fig.tight_layout()
    return _finish(fig)


def _caption(stage: str, rec: Mapping[str, Any]) -> str:
    size, nonzero = int(rec.get("weights", 0)), int(rec.get("nonzero", 0))
    if stage == "dense":
        return f"{size:,} weights"
    return f"{nonzero:,} of {size:,} ({nonzero / max(1, size):.1%})"


def sensitivity_png(base: float, rows: Sequence[SensitivityRow], metric: Metric = ACCURACY) -> bytes:
    """The validation score against q, one line per layer, dense level dashed (the
    table holds the score as the pruner reads it: negated if lower is better)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in sorted(rows, key=lambda r: r.q):
        curves.setdefault(row.layer, []).append((row.q, metric.axis(metric.shown(row.val_accuracy))))
    return _finish(sensitivity_figure(metric.axis(metric.shown(base)), curves, ylabel=metric.axis_label, scale=1.0))


def _group_label(steps: Sequence[Mapping[str, Any]], start: int) -> str:
    """'reference' before pruning, 'final' for the last fine-tune, else the
    group number and the layers whose q it raised."""
    group = steps[start].get("group")
    members = [s for s in steps if s.get("group") == group]
    if isinstance(group, int) and group < 0:
        return "reference"
    if all(s.get("stage") == "final" for s in members):
        return "final"
    accepted = [s for s in steps[:start] if s.get("accepted")]  # a rejected step was rolled back
    before = accepted[-1].get("q") if accepted else {}
    raised: list[str] = []
    for rec in members:
        q = rec.get("q")
        if isinstance(q, Mapping) and isinstance(before, Mapping):
            raised += [n for n, v in q.items() if v != before.get(n, 0.0) and n not in raised]
    names = ", ".join(raised[:3]) + (", ..." if len(raised) > 3 else "")
    return f"group {group}" + (f": {names}" if names else "")


def steps_png(steps: Sequence[Mapping[str, Any]], metric: Metric = ACCURACY) -> bytes:
    """The validation score and overall density per step-log record: colour is
    the stage, a cross a rejected step, dotted lines separate the groups."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    x = list(range(len(steps)))
    acc = [metric.axis(metric.shown(float(s["val_accuracy"]))) for s in steps]
    dens = [100 * float(s["overall_density"]) for s in steps]
    for ax, ys in ((top, acc), (bottom, dens)):
        ax.plot(x, ys, color="#bbbbbb", linewidth=1, zorder=1)
        for stage in dict.fromkeys(str(s.get("stage", "step")) for s in steps):
            color = STEP_COLORS.get(stage, "#555555")
            for accepted, marker in ((True, "o"), (False, "x")):
                pts = [
                    (i, ys[i])
                    for i, s in enumerate(steps)
                    if str(s.get("stage", "step")) == stage and bool(s["accepted"]) == accepted
                ]
                if pts:
                    xs, vs = zip(*pts, strict=True)
                    ax.scatter(
                        xs,
                        vs,
                        marker=marker,
                        s=42 if accepted else 60,
                        color=color,
                        zorder=3,
                        linewidths=None if accepted else 2,
                    )
        ax.grid(alpha=0.3)
    dense = [a for s, a in zip(steps, acc, strict=True) if s.get("stage") == "dense"]
    if dense:
        top.axhline(dense[0], color="grey", linestyle="--", linewidth=1, zorder=0)
    groups = [s.get("group") for s in steps]
    if len(set(groups)) > 1:
        for i in range(len(steps)):
            if i and groups[i] != groups[i - 1]:
                for ax in (top, bottom):
                    ax.axvline(i - 0.5, color="#999999", linestyle=":", linewidth=1)
            if i == 0 or groups[i] != groups[i - 1]:
                top.text(
                    i - 0.4,
                    1.01,
                    _group_label(steps, i),
                    transform=top.get_xaxis_transform(),
                    fontsize=8,
                    va="bottom",
                    color="#555555",
                )
    top.set_ylabel(metric.axis_label)
    top.set_title("Pruning log: one point per record (x = rejected)", pad=34)
    bottom.set_ylabel("weights kept (%)")
    bottom.set_xlabel("record in steps.jsonl")
    from matplotlib.lines import Line2D

    present = list(dict.fromkeys(str(s.get("stage", "step")) for s in steps))
    handles: list[Any] = [
        Line2D([], [], marker="o", color=STEP_COLORS.get(st, "#555555"), linestyle="none") for st in present
    ]
    labels = list(present)
    handles.append(Line2D([], [], marker="x", color="black", linestyle="none", markeredgewidth=2))
    labels.append("rejected")
    if dense:
        handles.append(Line2D([], [], color="grey", linestyle="--"))
        labels.append(f"dense {metric.label}")
    top.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.04),
        ncol=len(labels),
        frameon=False,
        handletextpad=0.3,
        columnspacing=1.2,
    )
    if len(x) <= 40:
        bottom.set_xticks(x)
    bottom.tick_params(labelsize=8)
    fig.tight_layout()
    return _finish(fig)
