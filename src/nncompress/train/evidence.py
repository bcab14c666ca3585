"""Validation readings that carry their own noise, and the drop a run's readings support together.

One accuracy reading on 5,000 validation images moves by about 0.2-0.3 points
between two nearly equal models (the images whose prediction changed decide
it), against a pruning tolerance of 0.3 points: a decision on one reading is
close to a coin toss. Two things make the evidence firmer:

- Readings are *paired*: every model is scored on the same images as the
  dense model, per example, so the standard error of a drop is known (it
  comes from the examples whose score changed, not from the whole split).
- Readings are *pooled*: how far a model's outputs moved from the dense
  model's (mean KL divergence, which the same images measure to within a
  few percent) grows smoothly as pruning goes on, and the drop grows with it.
  A line through the origin, drop = beta x KL, fitted to every reading of
  the run (weighted by 1 / SE^2), estimates the drop at the current KL from
  all of them rather than from the last one alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from nncompress import distributed
from nncompress.data.batches import Inputs, count, model_device, take, to_device
from nncompress.train.objective import EVAL_BATCH, Objective

# The dense model's log-probabilities are kept for the KL only while they take at most this much memory.
MAX_REFERENCE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Reading:
    """One model's validation score (signed: higher is better), per example where the metric allows."""

    score: float
    examples: Optional[torch.Tensor] = None  # float64, one signed score per validation example
    kl: Optional[float] = None  # mean KL(dense || model) of the outputs, nats


def as_reading(value: Union[float, Reading]) -> Reading:
    """Callers may hand the pruner a plain score (no pairing, no pooling: each reading stands alone)."""
    return value if isinstance(value, Reading) else Reading(float(value))


def paired_drop(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """(mean drop, its standard error), in points, of ``after`` against ``before`` on the same examples.
    The error is never put below one example's worth (100 / n points)."""
    diff = (before - after).double()
    n = max(1, diff.numel())
    sd = float(diff.std()) if n > 1 else 0.0
    return float(diff.mean()) * 100, max(sd / math.sqrt(n), 1 / n) * 100


@dataclass
class DoseResponse:
    """drop = beta x KL, fitted by weighted least squares over the run's readings: through the origin
    (``through_origin``: the readings start from the dense model), or with an intercept (a later stage
    of pruning starts from a model that already lost some of the score; with fewer than three
    readings such a line goes through them, so the estimate is the last reading)."""

    points: list[tuple[float, float, float]] = field(default_factory=list)  # (kl, drop, se)
    through_origin: bool = True

    def add(self, kl: float, drop: float, se: float) -> None:
        if kl > 0 and math.isfinite(kl) and math.isfinite(drop) and se > 0:
            self.points.append((kl, drop, se))

    def estimate(self, kl: float) -> Optional[tuple[float, float]]:
        """(estimated drop, its standard error) at ``kl``; None before any reading."""
        if not self.through_origin:
            return self._with_intercept(kl)
        den = sum(x * x / (s * s) for x, _, s in self.points)
        if den <= 0:
            return None
        beta = sum(x * d / (s * s) for x, d, s in self.points) / den
        return beta * kl, kl / math.sqrt(den)

    def _with_intercept(self, kl: float) -> Optional[tuple[float, float]]:
        if not self.points:
            return None
        if len(self.points) < 3:
            return self.points[-1][1], self.points[-1][2]
        w = [1 / (s * s) for _, _, s in self.points]
        sw = sum(w)
        mx = sum(wi * x for wi, (x, _, _) in zip(w, self.points, strict=True)) / sw
        md = sum(wi * d for wi, (_, d, _) in zip(w, self.points, strict=True)) / sw
        sxx = sum(wi * (x - mx) ** 2 for wi, (x, _, _) in zip(w, self.points, strict=True))
        if sxx <= 0:
            return md, math.sqrt(1 / sw)
        beta = sum(wi * (x - mx) * (d - md) for wi, (x, d, _) in zip(w, self.points, strict=True)) / sxx
        return md + beta * (kl - mx), math.sqrt(1 / sw + (kl - mx) ** 2 / sxx)


class ValidationReader:
    """Reads models on one validation split, paired with the dense model (see the module docstring).

    The per-example scores come from ``Objective.example_scores``; where the
    metric is not a mean over examples (a user's batch metric), or the run is
    spread over several processes, a reading is the plain score. ``with_kl`` False: no KL (no pooled fit
    will read it), so the dense model's outputs are not kept."""

    def __init__(
        self,
        objective: Objective,
        inputs: Inputs,
        labels: Optional[torch.Tensor],
        dense: nn.Module,
        batch_size: int = EVAL_BATCH,
        *,
        with_kl: bool = True,
    ) -> None:
        self.objective, self.inputs, self.labels, self.batch_size = objective, inputs, labels, batch_size
        self.paired = not distributed.active()
        self.dense_log_probs: Optional[torch.Tensor] = None
        if self.paired and with_kl and objective.kl_probe:
            self.dense_log_probs = self._log_probs_if_small(dense)

    def _log_probs_if_small(self, dense: nn.Module) -> Optional[torch.Tensor]:
        first = self._outputs(dense, slice(0, min(1, count(self.inputs))))
        per_example = first[0].numel() * 4 if len(first) else 0
        if per_example * count(self.inputs) > MAX_REFERENCE_BYTES:
            return None
        return torch.cat([F.log_softmax(out.float(), dim=-1) for out in self._batches(dense)])

    def _outputs(self, model: nn.Module, part: slice) -> torch.Tensor:
        with torch.no_grad():
            return self.objective.outputs(model, to_device(take(self.inputs, part), model_device(model))).cpu()

    def _batches(self, model: nn.Module):
        training = model.training
        model.eval()
        try:
            for i in range(0, count(self.inputs), self.batch_size):
                yield self._outputs(model, slice(i, min(i + self.batch_size, count(self.inputs))))
        finally:
            model.train(training)

    def read(self, model: nn.Module) -> Reading:
        objective = self.objective
        if not self.paired:
            return Reading(objective.signed(objective.score(model, self.inputs, self.labels)))
        targets = objective.targets(self.inputs, self.labels, self.batch_size)
        scores: list[torch.Tensor] = []
        kl_sum, start = 0.0, 0
        for out in self._batches(model):
            end = start + len(out)
            per = objective.example_scores(out, targets[start:end].cpu())
            if per is None:
                return Reading(objective.signed(objective.score(model, self.inputs, self.labels)))
            scores.append(per.double().reshape(len(out)))
            if self.dense_log_probs is not None:
                dense = self.dense_log_probs[start:end]
                logp = F.log_softmax(out.float(), dim=-1)
                kl_sum += float((dense.exp() * (dense - logp)).sum(-1).reshape(len(out), -1).mean(1).sum())
            start = end
        examples = torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)
        if not objective.higher_is_better:
            examples = -examples
        kl = kl_sum / max(1, start) if self.dense_log_probs is not None else None
        return Reading(float(examples.mean()) if len(examples) else 0.0, examples, kl)
