"""The report's sections drawn from summary.json: the headline figures, the objective and the per-layer table."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from nncompress.report.doc import Cell, Doc, Inline
from nncompress.report.fields import DASH, _num, _percent, field
from nncompress.report.metric import Metric, score_keys


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
