"""Sensitivity analysis: table, CSV round trip, per-layer q scales."""

from __future__ import annotations

import pytest
import torch

from nncompress.errors import DataError
from nncompress.pruning.sensitivity import (
    SensitivityRow,
    from_csv,
    layer_q_limits,
    layer_scales,
    sensitivity_scan,
    to_csv,
)
from nncompress.train import evaluate


def test_scan_prunes_one_layer_at_a_time_and_restores(digits, trained_mlp) -> None:
    model = trained_mlp()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base, rows = sensitivity_scan(model, [0.5, 1.0, 2.0], lambda: evaluate(model, digits.val_x, digits.val_y)[1])
    assert [(r.layer, r.q) for r in rows] == [(n, q) for n in ("fc1", "fc2", "fc3") for q in (0.5, 1.0, 2.0)]
    for name in ("fc1", "fc2", "fc3"):
        dens = [r.density for r in rows if r.layer == name]
        assert dens == sorted(dens, reverse=True) and dens[-1] < 0.2
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert base == pytest.approx(evaluate(model, digits.val_x, digits.val_y)[1])
    assert min(r.val_accuracy for r in rows) < base  # heavy pruning must cost something


def test_csv_round_trip(tmp_path) -> None:
    rows = [SensitivityRow("fc1", 0.5, 0.6, 0.95), SensitivityRow("fc1", 1.0, 0.3, 0.9)]
    to_csv(0.96, rows, tmp_path / "s.csv")
    base, back = from_csv(tmp_path / "s.csv")
    assert base == pytest.approx(0.96) and back == rows
    assert from_csv(tmp_path / "s.csv")[1] == back
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="columns"):
        from_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="not found"):
        from_csv(tmp_path / "missing.csv")


def test_scales_follow_q_limits() -> None:
    rows = [
        SensitivityRow(layer, q, 0.0, acc)
        for layer, q, acc in [
            ("a", 1.0, 0.90),
            ("a", 2.0, 0.89),
            ("a", 3.0, 0.80),  # limit 2.0 at max_drop 2
            ("b", 1.0, 0.905),
            ("b", 2.0, 0.70),
            ("b", 3.0, 0.6),  # limit 1.0
            ("c", 1.0, 0.91),
            ("c", 2.0, 0.91),
            ("c", 3.0, 0.90),  # limit 3.0
        ]
    ]
    assert layer_q_limits(rows, 0.91, 2.0) == {"a": 2.0, "b": 1.0, "c": 3.0}
    assert layer_scales(rows, 0.91, 2.0) == {"a": 1.0, "b": 0.5, "c": 1.5}
