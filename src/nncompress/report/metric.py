"""How the report names and shows the score a run kept: accuracy, agreement, mean cosine or a user metric.

A run folder's summary names its metric (``metric``, ``objective``); folders
written before those keys existed are classification runs, scored by accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

# Scores that are fractions of examples: shown in %, their drops in percentage points.
PERCENT_METRICS = ("accuracy", "agreement")
LABELS = {"accuracy": "accuracy", "agreement": "agreement", "mean_cosine": "mean cosine"}


@dataclass(frozen=True)
class Metric:
    """The run's metric: its name, direction and the tolerance the pruner kept, in words."""

    name: str = "accuracy"
    higher_is_better: bool = True
    reference: Optional[str] = None
    tolerance: Optional[str] = None
    kind: str = "classification"

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> "Metric":
        objective = summary.get("objective")
        objective = objective if isinstance(objective, Mapping) else {}
        name = summary.get("metric") or objective.get("metric") or "accuracy"
        text = [objective.get(k) if isinstance(objective.get(k), str) else None for k in ("reference", "tolerance")]
        return cls(
            str(name),
            objective.get("higher_is_better") is not False,
            text[0],
            text[1],
            str(objective.get("kind") or ("classification" if name == "accuracy" else "objective")),
        )

    @property
    def percent(self) -> bool:
        return self.name in PERCENT_METRICS

    @property
    def label(self) -> str:
        """The metric in words, for headings and axis labels."""
        return LABELS.get(self.name, self.name.replace("_", " "))

    def shown(self, signed: float) -> float:
        """A score the pruner logged (negated for a lower-is-better metric) as the metric's own value."""
        return signed if self.higher_is_better else -signed

    def value(self, score: float) -> str:
        return f"{100 * score:.2f} %" if self.percent else _number(score)

    def drop(self, points: float) -> str:
        """A drop in points (1/100 of the score): points for a percentage, else in the metric's units."""
        return f"{points:.2f} pts" if self.percent else _number(points / 100)

    def axis(self, score: float) -> float:
        """A score on a figure's axis: percent for a percentage."""
        return 100 * score if self.percent else score

    @property
    def axis_label(self) -> str:
        return f"validation {self.label}" + (" (%)" if self.percent else "")

    @property
    def drop_unit(self) -> str:
        return "percentage points" if self.percent else f"in {self.label}"


ACCURACY = Metric()


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.4g}"


def score_keys(summary: Mapping[str, Any]) -> tuple[str, str]:
    """The summary's (dense, file) test-score keys: *_score, or *_accuracy in folders written before them."""
    if "dense_test_score" in summary and "test_score" in summary:
        return "dense_test_score", "test_score"
    return "dense_test_accuracy", "test_accuracy"
