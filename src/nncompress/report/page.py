"""The run report: one self-contained HTML page and its Markdown twin.

The HTML embeds every figure (data: URIs), its CSS and a small self-check
script, so it opens offline and can be mailed as one file; the Markdown
links PNG files in a folder beside it, for repositories and wikis. Both are
drawn from the run directory alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nncompress.atomic import atomic_open
from nncompress.errors import ReportError
from nncompress.report.doc import Cell, Doc, Inline
from nncompress.report.figures import histogram_grid, sensitivity_png, steps_png
from nncompress.report.histograms import STAGES
from nncompress.report.metric import ACCURACY, Metric, score_keys
from nncompress.report.plots import NO_MATPLOTLIB, figures_available
from nncompress.report.rundata import ENVIRONMENT, HISTOGRAMS, RECIPE, SENSITIVITY, STEPS, RunData, load_run

DASH = "\u2014"
_BYTES = {"file_bytes", "dense_bytes", "payload_bytes", "bytes"}
# scores in the metric's units; val_accuracy_pruned is as the pruner logs it (negated if lower is better)
_SCORES = {
    "dense_test_accuracy",
    "test_accuracy",
    "dense_test_score",
    "test_score",
    "val_after_sharing",
    "val_after_centroid_tuning",
}
_SIGNED_SCORES = {"val_accuracy_pruned"}
_COUNTS = {"weights", "nonzero", "codebook_size", "filler_entries"}
FIGURES = ("histograms.png", "sensitivity.png", "steps.png")


def format_field(key: str, value: Any, metric: Metric = ACCURACY) -> str:
    """How the page shows the summary value at ``key`` (a dotted path; the
    last part decides) of a run scored by ``metric`` (``Metric.of(summary)``).
    Tests compare the page's text against this."""
    leaf = key.rsplit(".", 1)[-1]
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    if leaf in _BYTES:
        return f"{int(value):,} B"
    if leaf == "ratio":
        return f"{value:.1f}\u00d7"
    if leaf in _SCORES:
        return metric.value(value)
    if leaf in _SIGNED_SCORES:
        return metric.value(metric.shown(value))
    if leaf == "test_drop_points":
        return metric.drop(value)
    if leaf == "kept":
        return _percent(value)
    if leaf in _COUNTS or leaf.endswith("_bits_fixed"):
        return f"{int(value):,}"
    if leaf.endswith("_bits_huffman"):
        return f"{value:.2f}"
    if key.startswith("seconds."):
        return f"{value:.1f} s"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %" if fraction >= 0.01 else f"{100 * fraction:.2f} %"


def field(summary: Mapping[str, Any], key: str) -> Cell:
    """The summary value at dotted ``key``, formatted and tagged with its origin."""
    value: Any = summary
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value.get(part)
    return Cell(
        format_field(key, value, Metric.of(summary)),
        key,
        value,
        num=isinstance(value, (int, float)) and not isinstance(value, bool),
    )


def _num(text: str) -> Cell:
    """A derived number (not in summary.json): aligned as a number, untagged."""
    return Cell(text, num=True)


def _shared_rows(layers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in layers if r.get("codec") == "shared"]


def _headline(doc: Doc, s: Mapping[str, Any]) -> None:
    doc.heading("Headline", "headline")
    # against the dense model's parameters, not the rows' shapes: removed dead neurons count as pruned
    dense = int(s["dense_bytes"]) // 4
    kept = sum(int(r.get("nonzero", r.get("weights", 0))) for r in s["layers"])
    metric = Metric.of(s)
    dense_key, file_key = score_keys(s)
    drop: Inline = (
        field(s, "test_drop_points")
        if "test_drop_points" in s
        else _num(metric.drop(100 * (metric.shown(s[dense_key]) - metric.shown(s[file_key]))))
    )
    label = metric.label
    doc.cards(
        [
            ("File on disk", field(s, "file_bytes"), ["dense fp32: ", field(s, "dense_bytes")]),
            ("Compression", field(s, "ratio"), ["whole file vs dense fp32"]),
            (f"Test {label}, dense", field(s, dense_key), ["before compression"]),
            (f"Test {label}, file", field(s, file_key), ["model decoded from the file"]),
            (f"{label.capitalize()} drop", drop, [f"{metric.drop_unit}, test split; negative: a gain"]),
            (
                "Parameters kept",
                _num(_percent(kept / max(1, dense))),
                [f"{kept:,} of the dense model's {dense:,} weights and biases"],
            ),
        ]
    )
    _objective(doc, s, metric)
    vals: list[Inline] = [f"Validation {label}: "]
    for key, label in (
        ("val_accuracy_pruned", "after pruning "),
        ("val_after_sharing", "after weight sharing "),
        ("val_after_centroid_tuning", "after centroid fine-tuning "),
    ):
        if key in s:
            vals += ([" \u00b7 "] if len(vals) > 1 else []) + [label, field(s, key)]
            if s[key] is None:
                vals.append(
                    " (diverged, rolled back)" if key == "val_after_centroid_tuning" else " (not pruned in this run)"
                )
    if "centroid_tuning_kept" in s:
        vals += [" (centroid fine-tuning kept: ", field(s, "centroid_tuning_kept"), ")"]
    if len(vals) > 1:
        doc.para(vals)
    search = s.get("bit_search")
    if isinstance(search, Mapping) and isinstance(search.get("rounds"), list) and search["rounds"]:
        last = len(search["rounds"]) - 1
        doc.para(
            [
                "Codebook widths chosen by measurement: validation drop after sharing ",
                field(s, "bit_search.rounds.0.drop"),
                " points at the configured widths, ",
                field(s, f"bit_search.rounds.{last}.drop"),
                f" after {last} round(s) of widening (tolerance ",
                field(s, "config.share.tolerance"),
                "; met: ",
                field(s, "bit_search.met"),
                ").",
            ]
        )
    if s.get("pruning_skipped"):
        doc.para(["Pruning skipped: the input checkpoint was already pruned (", field(s, "pruning_skipped"), ")."])
    seconds = s.get("seconds")
    if isinstance(seconds, Mapping) and seconds:
        parts: list[Inline] = ["Time: "]
        for i, key in enumerate(seconds):
            parts += ([" \u00b7 "] if i else []) + [key.replace("_", " ") + " ", field(s, f"seconds.{key}")]
        doc.para(parts)


def _objective(doc: Doc, s: Mapping[str, Any], metric: Metric) -> None:
    """What the run kept, in the metric's own words, and the run's warnings."""
    if metric.kind != "classification" or metric.tolerance:
        parts: list[Inline] = ["Scored by ", field(s, "metric") if "metric" in s else metric.name]
        if metric.reference:
            parts.append(f" against {metric.reference}")
        if not metric.higher_is_better:
            parts.append(" (lower is better)")
        if metric.tolerance:
            parts += ["; pruning tolerance: ", field(s, "objective.tolerance")]
        doc.para([*parts, "."])
    warnings = s.get("warnings")
    for i, _ in enumerate(warnings if isinstance(warnings, list) else []):
        doc.para(["Warning: ", field(s, f"warnings.{i}")], cls="note")


_LAYER_COLUMNS = (
    "tensor",
    "codec",
    "weights",
    "kept",
    "weight_bits_fixed",
    "weight_bits_huffman",
    "index_bits_fixed",
    "index_bits_huffman",
    "bytes",
    "ratio",
)
_LAYER_HEADER = (
    "Tensor",
    "Codec",
    "Weights",
    "Kept",
    "Weight bits, fixed",
    "Weight bits, Huffman",
    "Index bits, fixed",
    "Index bits, Huffman",
    "Bytes",
    "Ratio",
)


def _layers(doc: Doc, s: Mapping[str, Any]) -> None:
    doc.heading("Per-layer table of the compressed file", "layers")
    layers = s["layers"]
    rows = [
        [field(s, f"layers.{i}.{col}") if col in row else Cell(DASH) for col in _LAYER_COLUMNS]
        for i, row in enumerate(layers)
    ]
    shared = _shared_rows(layers)
    nz = sum(int(r.get("nonzero", 0)) for r in shared)

    def mean_bits(key: str) -> Inline:
        if not shared:
            return DASH
        return _num(f"{sum(float(r[key]) * int(r.get('nonzero', 0)) for r in shared) / max(1, nz):.2f}")

    weights = sum(int(r.get("weights", 0)) for r in layers)
    kept = sum(int(r.get("nonzero", r.get("weights", 0))) for r in layers)
    payload: Inline = (
        field(s, "payload_bytes")
        if "payload_bytes" in s
        else _num(f"{sum(int(r.get('bytes', 0)) for r in layers):,} B")
    )
    payload_n = s.get("payload_bytes", sum(int(r.get("bytes", 0)) for r in layers))
    dense_rows = sum(int(r.get("dense_bytes", 4 * r.get("weights", 0))) for r in layers)
    foot: list[list[Inline]] = [
        [
            "all tensors",
            "",
            _num(f"{weights:,}"),
            _num(_percent(kept / max(1, weights))),
            mean_bits("weight_bits_fixed"),
            mean_bits("weight_bits_huffman"),
            mean_bits("index_bits_fixed"),
            mean_bits("index_bits_huffman"),
            payload,
            _num(f"{dense_rows / max(1, payload_n):.1f}\u00d7"),
        ],
        ["whole file", "", "", "", "", "", "", "", field(s, "file_bytes"), field(s, "ratio")],
    ]
    doc.table(_LAYER_HEADER, rows, foot)
    doc.para(
        [
            "Bits are per nonzero weight: fixed = the code width, Huffman = the coded section's size \u00d7 8 "
            "/ nonzero weights; the totals average them over the coded layers. Raw tensors (biases) are stored "
            f"as floats and have no bits ({DASH}). Each row's ratio compares the tensor with its own fp32 size; "
            "the whole file adds the header and checksums, and its ratio compares it with the fp32 bytes of the "
            "model before pruning (",
            field(s, "dense_bytes"),
            ").",
        ],
        cls="note",
    )
    if dense_rows < int(s["dense_bytes"]):
        doc.note(
            f"Dead neurons were removed: the tensors hold {dense_rows // 4:,} parameters, the dense model "
            f"had {int(s['dense_bytes']) // 4:,}; kept % in the rows is of the smaller shapes."
        )


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


def build(run: RunData, files_dir: str) -> Doc:
    """All sections, in the page's order."""
    name = Path(str(run.summary.get("file", "") or run.path.name)).name
    doc = Doc(f"nncompress report: {name}", files_dir)
    _headline(doc, run.summary)
    _layers(doc, run.summary)
    _histograms(doc, run)
    _sensitivity(doc, run)
    _steps(doc, run)
    _provenance(doc, run)
    return doc


def write_report(run_dir: str | Path, out_html: str | Path) -> tuple[Path, Path]:
    """Write the HTML page ``out_html`` and ``<stem>.md`` with its PNGs in
    ``<stem>_files/``, all beside each other; return (html, markdown)."""
    out_html = Path(out_html)
    if out_html.suffix.lower() == ".md":
        raise ReportError(f"{out_html}: give the HTML page's name (e.g. report.html); the Markdown twin goes beside it")
    run = load_run(run_dir)
    out_md = out_html.with_suffix(".md")
    files = out_html.parent / f"{out_html.stem}_files"
    try:
        doc = build(run, files.name)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(
            f"{run.path}: a file holds a value of an unexpected type or shape ({exc!r}); "
            "was it written by `nncompress compress --run-dir`?"
        ) from exc
    subtitle: list[Inline] = (
        ["File ", field(run.summary, "file"), f" \u00b7 run directory {run.path}"]
        if "file" in run.summary
        else [f"Run directory {run.path}"]
    )
    for name, png in doc.images.items():
        with atomic_open(files / name, "wb") as handle:
            handle.write(png)
    for stale in FIGURES:  # a figure this run lacks must not linger from an earlier report
        if stale not in doc.images and (files / stale).is_file():
            (files / stale).unlink()
    for path, text in ((out_md, doc.render_markdown(subtitle)), (out_html, doc.render_html(subtitle))):
        with atomic_open(path, "wb") as handle:  # bytes: UTF-8 whatever the locale
            handle.write(text.encode("utf-8"))
    return out_html, out_md
