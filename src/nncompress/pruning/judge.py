"""How the pruner turns validation readings into the drop it holds to the tolerance.

The reference is the dense model's reading, or the mean of it and the control
run's (the dense model after one step's fine-tuning without pruning) when that
is lower. With ``pooled`` decisions a step is judged on the drop estimated from
every reading of the run (``train.evidence``); otherwise, or where a reading
carries no per-example scores or KL, on its own drop.

Each stage (group of layers) has its own fit: how much drop a nat of KL carries
depends on which layers are pruned and how they are fine-tuned (with
distillation the fine-tuning holds the KL itself down): on LeNet-5, a nat cost
20-60 points while its convolutions were pruned and about 10 while its fully
connected layers were. The first stage starts from the dense model, so its line
goes through the origin; a later stage starts from a model that already lost
some of the score, so its line has an intercept of its own (and its first two
readings stand alone). Only readings taken right after a pruning step enter a
fit. Fine-tuning
alone also moves the outputs away from the dense model's (the control run's two
epochs: KL 0.013-0.015 on LeNet-300-100, with no drop), so the readings after a
consolidating or the final fine-tune, which prune nothing, would read that drift
as damage. The final model is judged by the estimate of the model its final
fine-tune started from: that fine-tune is kept only when it does not leave the
model worse beyond the noise of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from nncompress.pruning.schedule import drop_points
from nncompress.train.evidence import DoseResponse, Reading, paired_drop


@dataclass(frozen=True)
class Judgement:
    drop: float  # this reading's drop against the reference, points
    se: Optional[float] = None  # its standard error, from the examples whose score changed
    estimate: Optional[float] = None  # the drop estimated from all readings so far (pooled decisions)

    @property
    def decisive(self) -> float:
        """The figure held to the tolerance."""
        return self.drop if self.estimate is None else self.estimate


class StepJudge:
    def __init__(self, dense: Reading, pooled: bool) -> None:
        self.reference = dense.score
        self.examples = dense.examples
        self.pooled = pooled
        self.dose = DoseResponse()
        self.last_estimate: Optional[float] = None

    def set_control(self, control: Reading) -> None:
        """Measure drops from the mean of the dense and the control readings when that is lower."""
        if control.score >= self.reference:
            return
        self.reference = (self.reference + control.score) / 2
        if self.examples is not None and control.examples is not None and len(control.examples) == len(self.examples):
            self.examples = (self.examples + control.examples) / 2
        else:
            self.examples = None

    def new_stage(self, first: bool) -> None:
        """A new group of layers: its readings get a fit of their own (through the origin for the first)."""
        self.dose = DoseResponse(through_origin=first)

    def judge(self, reading: Reading, after_pruning: bool = True) -> Judgement:
        """``after_pruning`` False: a reading after fine-tuning alone, recorded but not pooled."""
        drop = drop_points(self.reference, reading.score)
        se = None
        if self.examples is not None and reading.examples is not None and len(reading.examples) == len(self.examples):
            se = round(paired_drop(self.examples, reading.examples)[1], 4)
        estimate = None
        if self.pooled and after_pruning and se is not None and reading.kl is not None:
            self.dose.add(reading.kl, drop, se)
            fitted = self.dose.estimate(reading.kl)
            estimate = None if fitted is None else round(fitted[0], 4)
            self.last_estimate = estimate
        return Judgement(drop, se, estimate)

    def judge_final(self, reading: Reading) -> Judgement:
        """The final model: its own reading, judged by the estimate of the model before the final fine-tune."""
        own = self.judge(reading, after_pruning=False)
        return Judgement(own.drop, own.se, self.last_estimate if self.pooled else None)

    def keeps_final_tuning(self, before: Reading, after: Reading) -> bool:
        """The final fine-tune stays unless validation says it made the model worse: by more than
        one standard error of the paired difference (pooled), or at all (single readings)."""
        if (
            self.pooled
            and before.examples is not None
            and after.examples is not None
            and len(before.examples) == len(after.examples)
        ):
            worse, se = paired_drop(before.examples, after.examples)
            return worse <= se
        return after.score >= before.score
