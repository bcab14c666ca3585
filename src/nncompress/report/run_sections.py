"""The report's sections drawn from the run directory's other files: figures, the step log, recipe and
environment (each left out with a note when its file is missing)."""

from __future__ import annotations

import json
from typing import Callable

from nncompress.report.doc import Doc
from nncompress.report.fields import DASH, _num, _percent, field
from nncompress.report.figures import histogram_grid, sensitivity_png, steps_png
from nncompress.report.histograms import STAGES
from nncompress.report.metric import Metric
from nncompress.report.plots import NO_MATPLOTLIB, figures_available
from nncompress.report.rundata import ENVIRONMENT, HISTOGRAMS, RECIPE, SENSITIVITY, STEPS, RunData


def _figure(doc: Doc, name: str, draw: Callable[[], bytes], alt: str, caption: str) -> None:
    """A figure, or a note that it is missing: matplotlib is an optional extra."""
    if not figures_available():
        doc.note(f"{alt}: figure left out, {NO_MATPLOTLIB}.")
        return
    doc.image(name, draw(), alt, caption)


def _histograms(doc: Doc, run: RunData) -> None:
    doc.heading("Weight histograms", "histograms")
    if not run.histograms or not any(run.histograms.values()):
        doc.note(f"No {HISTOGRAMS} in this run directory: histograms left out.")
        return
    stages = {k: v for k, v in run.histograms.items() if v}
    missing = [st for st in STAGES if st not in stages]
    _figure(
        doc,
        "histograms.png",
        lambda: histogram_grid(stages),
        "Weight histograms per layer and stage",
        "One row per layer, on one x scale per row. After pruning and after sharing the zeros are left out, "
        "so the shape of the surviving weights shows; after sharing the weights sit on the codebook values.",
    )
    if missing:
        doc.note(f"Stage(s) not recorded in this run: {', '.join(missing)}.")


def _sensitivity(doc: Doc, run: RunData) -> None:
    doc.heading("Sensitivity", "sensitivity")
    if run.sensitivity is None:
        doc.note(f"No {SENSITIVITY} in this run directory: sensitivity curves left out.")
        return
    base, rows = run.sensitivity
    metric = Metric.of(run.summary)
    _figure(
        doc,
        "sensitivity.png",
        lambda: sensitivity_png(base, rows, metric),
        f"Validation {metric.label} against q per layer",
        f"Each layer pruned alone at threshold q \u00d7 std, no fine-tuning; dashed: dense "
        f"({metric.value(metric.shown(base))}).",
    )


def _steps(doc: Doc, run: RunData) -> None:
    doc.heading("Pruning steps", "steps")
    if isinstance(run.summary.get("finetune"), dict) and "note" in run.summary["finetune"]:
        doc.para(["Pruning fine-tuned at ", field(run.summary, "finetune.note"), "."])
    if run.steps is None:
        doc.note(f"No {STEPS} in this run directory (pruning skipped or not logged): step log left out.")
        return
    if not run.steps:
        doc.note(f"{STEPS} holds no records: step log left out.")
        return
    accepted = sum(bool(r["accepted"]) for r in run.steps)
    metric = Metric.of(run.summary)
    steps = run.steps
    _figure(
        doc,
        "steps.png",
        lambda: steps_png(steps, metric),
        f"Validation {metric.label} and density at every pruning step",
        f"{len(run.steps)} records, {accepted} accepted, {len(run.steps) - accepted} rejected.",
    )
    rows = [
        [
            _num(str(i)),
            str(r.get("stage", "")),
            _num(str(r.get("group", ""))),
            _num(str(r.get("step", ""))),
            _num(_percent(float(r["overall_density"]))),
            _num(metric.value(metric.shown(float(r["val_accuracy"])))),
            *(
                _num(metric.drop(float(r[key])).removesuffix(" pts")) if isinstance(r.get(key), (int, float)) else DASH
                for key in ("drop_points", "drop_se", "estimated_drop")
            ),
            "yes" if r["accepted"] else "no",
            _num(f"{float(r['seconds']):.1f} s") if isinstance(r.get("seconds"), (int, float)) else DASH,
        ]
        for i, r in enumerate(run.steps)
    ]
    doc.table(
        (
            "Record",
            "Stage",
            "Group",
            "Step",
            "Weights kept",
            f"Validation {metric.label}",
            "Drop (points)" if metric.percent else f"Drop ({metric.label})",
            "Standard error",
            "Judged drop (all readings)",
            "Accepted",
            "Time",
        ),
        rows,
        collapsed=f"All {len(rows)} records",
    )


def _provenance(doc: Doc, run: RunData) -> None:
    doc.heading("Recipe", "recipe")
    if run.recipe is None:
        doc.note(f"No {RECIPE} in this run directory: recipe left out.")
    else:
        doc.pre(run.recipe, "yaml")
    doc.heading("Environment", "environment")
    if run.environment is None:
        doc.note(f"No {ENVIRONMENT} in this run directory: environment left out.")
    else:
        doc.table(
            ("Name", "Value"),
            [[str(k), v if isinstance(v, str) else json.dumps(v)] for k, v in run.environment.items()],
        )
