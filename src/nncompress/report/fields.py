"""How the report shows a summary value: formatted in the run's metric and units, tagged with its key."""

from __future__ import annotations

from typing import Any, Mapping

from nncompress.report.doc import Cell
from nncompress.report.metric import ACCURACY, Metric

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
