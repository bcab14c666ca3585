"""Paired validation readings and the pooled drop (train/evidence.py, pruning/judge.py)."""

from __future__ import annotations

import math

import pytest
import torch

from nncompress.config import PruneConfig
from nncompress.pruning.judge import StepJudge
from nncompress.train.evidence import DoseResponse, Reading, ValidationReader, paired_drop
from nncompress.train.objective import Classification, resolve_objective
from nncompress.train.probe import _costs_too_much


def test_paired_drop_counts_only_the_examples_that_changed() -> None:
    before = torch.tensor([1.0] * 90 + [0.0] * 10)
    after = before.clone()
    after[:4] = 0.0  # four right answers lost
    after[99:] = 1.0  # ... and one wrong answer fixed: net 3 of 100
    drop, se = paired_drop(before, after)
    assert drop == pytest.approx(3.0)
    diff = before - after
    assert se == pytest.approx(float(diff.std()) / 10 * 100)
    assert se < 2.5  # an unpaired difference of two 90 % accuracies on 100 examples: about 4.2 points
    assert paired_drop(before, before) == (0.0, 1.0)  # never below one example's worth


def test_dose_response_pools_every_reading_through_the_origin() -> None:
    dose = DoseResponse()
    assert dose.estimate(0.01) is None
    for kl, drop in [(0.01, 0.12), (0.02, 0.18), (0.03, 0.33), (0.04, 0.38)]:
        dose.add(kl, drop, 0.25)
    estimate, se = dose.estimate(0.04)
    beta = sum(k * d for k, d in [(0.01, 0.12), (0.02, 0.18), (0.03, 0.33), (0.04, 0.38)]) / 0.003
    assert estimate == pytest.approx(beta * 0.04)
    assert se < 0.25  # four readings together know more than the last one alone
    dose.add(float("nan"), 1.0, 0.2)  # a reading without a usable KL adds nothing
    assert dose.estimate(0.04)[0] == pytest.approx(estimate)


def _reading(drop_examples: int, kl: float, n: int = 1000) -> Reading:
    examples = torch.ones(n, dtype=torch.float64)
    examples[:drop_examples] = 0.0
    return Reading(float(examples.mean()), examples, kl)


def test_one_unlucky_reading_does_not_stop_pooled_pruning() -> None:
    dense = _reading(0, 0.0)
    readings = [_reading(1, 0.01), _reading(1, 0.02), _reading(2, 0.03), _reading(4, 0.04)]  # 0.1 .. 0.4 points
    pooled, single = StepJudge(dense, pooled=True), StepJudge(dense, pooled=False)
    for reading in readings:
        p, s = pooled.judge(reading), single.judge(reading)
        assert p.drop == s.drop and p.se is not None and s.estimate is None
    assert s.decisive == pytest.approx(0.4) and s.decisive > 0.3  # the last reading alone: over 0.3
    assert p.decisive < 0.3  # the run's readings together: a drop of about 0.26 at this KL
    # a run whose readings all say the same thing is judged over the tolerance
    steady = StepJudge(dense, pooled=True)
    for kl in (0.01, 0.02, 0.03, 0.04):
        judged = steady.judge(_reading(round(kl * 100), kl))
    assert judged.decisive == pytest.approx(0.4)


def test_plain_scores_are_judged_one_reading_at_a_time() -> None:
    judge = StepJudge(Reading(0.9), pooled=True)
    judged = judge.judge(Reading(0.895))
    assert judged.estimate is None and judged.se is None and judged.decisive == pytest.approx(0.5)


def test_the_control_run_moves_the_reference_per_example() -> None:
    dense, control = _reading(0, 0.0), _reading(10, 0.01)
    judge = StepJudge(dense, pooled=True)
    judge.set_control(control)
    assert judge.reference == pytest.approx(0.995)
    assert float(judge.examples[:10].mean()) == pytest.approx(0.5)


def test_the_final_tuning_stays_unless_it_is_worse_beyond_its_noise() -> None:
    before = _reading(5, 0.02)
    pooled, single = StepJudge(_reading(0, 0.0), pooled=True), StepJudge(_reading(0, 0.0), pooled=False)
    slightly_worse = _reading(6, 0.02)
    assert pooled.keeps_final_tuning(before, slightly_worse)
    assert not single.keeps_final_tuning(before, slightly_worse)
    assert not pooled.keeps_final_tuning(before, _reading(40, 0.05))


def test_the_probe_falls_back_on_accuracy_only_beyond_two_standard_errors() -> None:
    n = 5000
    dense = _reading(0, 0.0, n)
    unlucky = _reading(30, 0.01, n)  # 0.6 points, paired SE about 0.11: over 0.3 beyond doubt
    changed = torch.zeros(n, dtype=torch.float64)  # 0.35 points net from 400 changed answers: SE about 0.4
    changed[:200] = 1.0
    changed[200:400] = -1.0
    changed[400:417] = 1.0
    lucky = Reading(float((dense.examples - changed).mean()), dense.examples - changed, 0.01)
    assert _costs_too_much(dense, unlucky, PruneConfig())
    assert not _costs_too_much(dense, lucky, PruneConfig())
    assert _costs_too_much(dense, lucky, PruneConfig(decision="reading"))


def test_reader_pairs_examples_with_the_objective_and_measures_kl(digits, trained_mlp) -> None:
    model = trained_mlp()
    objective = resolve_objective(None, model, digits)
    reader = ValidationReader(objective, digits.val_x, digits.val_y, model)
    dense = reader.read(model)
    assert isinstance(objective, Classification)
    assert dense.score == pytest.approx(objective.score(model, digits.val_x, digits.val_y))
    assert len(dense.examples) == len(digits.val_y) and dense.kl == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.fc1.weight.mul_(0.5)
    moved = reader.read(model)
    assert moved.kl > 1e-3 and math.isfinite(moved.kl)
    assert moved.score == pytest.approx(objective.score(model, digits.val_x, digits.val_y))


def test_a_batch_metric_gives_plain_readings(digits, trained_mlp) -> None:
    from nncompress.train.objective import UserObjective

    model = trained_mlp()
    objective = resolve_objective(
        UserObjective(metric=lambda out, y: float((out.argmax(1) == y).float().mean())), model, digits
    )
    reading = ValidationReader(objective, digits.val_x, digits.val_y, model).read(model)
    assert reading.examples is None and reading.kl is None
    assert reading.score == pytest.approx(objective.score(model, digits.val_x, digits.val_y))


def test_sharing_never_gets_more_than_the_whole_tolerance() -> None:
    from nncompress.pipeline.share import _sharing_budget

    meta = lambda drop: {"pruned": True, "prune": {"tolerance": 0.5}, "prune_drop": drop}  # noqa: E731
    assert _sharing_budget(None, None, meta(0.2))["sharing"] == pytest.approx(0.3)
    assert _sharing_budget(None, None, meta(0.7))["sharing"] == 0.0
    assert _sharing_budget(None, None, meta(-0.2))["sharing"] == pytest.approx(0.5)  # read better: noise


@pytest.mark.slow
def test_compress_gives_sharing_what_pruning_left_of_the_tolerance(tmp_path, digits, trained_mlp) -> None:
    from nncompress.pipeline import run_compress, run_prune, save_trained
    import nncompress as nnc

    prune = nnc.PruneConfig(
        q0=1.0,
        q_step=0.5,
        q_max=1.5,
        tolerance=3.0,
        epochs_per_step=1,
        final_epochs=1,
        recover_epochs=0,
        refine_steps=0,
        lr=0.02,
        batch_size=64,
        probe=False,
    )
    share = nnc.ShareConfig(fc_bits=2, epochs=0, max_bits=4)
    result = nnc.compress(trained_mlp(), digits, tmp_path / "m.nnc", nnc.CompressConfig(prune=prune, share=share))
    budget = result.summary["budget"]
    assert budget["tolerance"] == 3.0
    assert budget["sharing"] == pytest.approx(min(3.0, max(0.0, 3.0 - budget["pruning"])))
    assert result.summary["bit_search"]["tolerance"] == pytest.approx(budget["sharing"])
    # the two-step path: the pruned checkpoint records what pruning spent, and compress reads it
    save_trained(trained_mlp(), digits, tmp_path / "base.pt", {})
    pruned = run_prune(tmp_path / "base.pt", "digits", tmp_path / "pruned.pt", prune, splits=digits).summary
    assert pruned["val_drop"] is not None
    second = run_compress(tmp_path / "pruned.pt", "digits", tmp_path / "p.nnc", None, share, splits=digits)
    assert second["budget"] == {
        "tolerance": 3.0,
        "pruning": round(pruned["val_drop"], 4),
        "sharing": round(max(0.0, 3.0 - pruned["val_drop"]), 4),
    }
    # a stated share tolerance wins over the budget
    third = nnc.compress(
        trained_mlp(),
        digits,
        tmp_path / "t.nnc",
        nnc.CompressConfig(prune=prune, share=nnc.ShareConfig(fc_bits=2, epochs=0, tolerance=50.0)),
    )
    assert third.summary["bit_search"]["tolerance"] == 50.0 and len(third.summary["bit_search"]["rounds"]) == 1


def test_fine_tuning_alone_is_recorded_but_not_pooled_and_the_final_takes_the_kept_estimate() -> None:
    judge = StepJudge(_reading(0, 0.0), pooled=True)
    kept = judge.judge(_reading(1, 0.01))
    judge.judge(_reading(9, 0.03))  # a step that fails ...
    judge.last_estimate = kept.estimate  # ... and is rolled back (as the pruner does)
    drifted = judge.judge(_reading(2, 0.05), after_pruning=False)  # more KL from training, nothing pruned
    assert drifted.estimate is None and len(judge.dose.points) == 2
    final = judge.judge_final(_reading(2, 0.06))
    assert final.drop == pytest.approx(0.2) and final.estimate == kept.estimate
    assert StepJudge(_reading(0, 0.0), pooled=False).judge_final(_reading(2, 0.06)).estimate is None


def test_each_stage_fits_its_own_line() -> None:
    judge = StepJudge(_reading(0, 0.0), pooled=True)
    for kl, lost in ((0.002, 2), (0.004, 3)):  # convolutions: dear per nat of KL
        judge.judge(_reading(lost, kl))
    judge.new_stage(first=False)
    first = judge.judge(_reading(2, 0.01))  # the first two readings of a later stage stand alone ...
    assert first.estimate == pytest.approx(0.2)
    assert judge.judge(_reading(3, 0.012)).estimate == pytest.approx(0.3)
    # ... then the stage's own line, with the drop it started from as its intercept
    later = judge.judge(_reading(2, 0.014))
    assert len(judge.dose.points) == 3 and 0.2 < later.estimate < 0.3


def test_a_later_stages_line_keeps_the_drop_it_inherited() -> None:
    from nncompress.train.evidence import DoseResponse

    dose = DoseResponse(through_origin=False)
    for kl, drop in [(0.010, 0.20), (0.012, 0.22), (0.014, 0.24), (0.016, 0.26)]:  # 0.1 inherited + 10/nat
        dose.add(kl, drop, 0.15)
    estimate, se = dose.estimate(0.016)
    assert estimate == pytest.approx(0.26) and se < 0.15
    through = DoseResponse()
    for point in dose.points:
        through.add(*point)
    assert through.estimate(0.016)[0] > estimate + 0.015  # through the origin the inherited drop grows with the KL
