"""Codebook widths chosen by measurement (quantization/bitsearch.py)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.quantization.bitsearch import choose_raises, fit_bits_


def test_choose_raises_takes_the_costliest_drop_per_weight_until_the_excess_is_covered() -> None:
    parts = {"big": 1.0, "small": 0.5, "free": -0.1, "mid": 0.4}
    sizes = {"big": 1000, "small": 10, "free": 10, "mid": 100}
    # per weight: small 0.05, mid 0.004, big 0.001; 0.75 * (0.5 + 0.4) = 0.675 covers 0.6
    assert choose_raises(parts, sizes, 0.6) == ["small", "mid"]
    # an excess the parts cannot cover: every layer that costs drop grows, never one that costs none
    assert choose_raises(parts, sizes, 5.0) == ["small", "mid", "big"]
    # nothing measurably costs drop (not additive): all grow
    assert sorted(choose_raises({"a": 0.0, "b": -1.0}, {"a": 1, "b": 1}, 1.0)) == ["a", "b"]


def _net() -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8))
    return net, torch.randn(256, 16)


def _cosine_drop(net: nn.Module, x: torch.Tensor) -> Callable[[], float]:
    """The drop, in points of mean cosine, of ``net``'s outputs from what they are now."""
    with torch.no_grad():
        reference = net(x)

    def drop() -> float:
        with torch.no_grad():
            return float(100 * (1 - nn.functional.cosine_similarity(net(x), reference, dim=1).mean()))

    return drop


def test_fit_bits_widens_until_the_drop_fits_and_leaves_consistent_layers() -> None:
    net, x = _net()
    drop = _cosine_drop(net, x)
    reference = net(x).detach()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    start = {n: 1 for n in layers}
    net_copy, _ = _net()
    shared_at_start = {"0": net_copy[0], "2": net_copy[2], "4": net_copy[4]}
    from nncompress.quantization import share_weights_

    share_weights_(shared_at_start, start)
    with torch.no_grad():
        start_drop = float(100 * (1 - nn.functional.cosine_similarity(net_copy(x), reference, dim=1).mean()))
    assert start_drop > 0.5  # one bit per weight is far off: the search has work to do

    shared, search = fit_bits_(layers, start, "linear", drop, tolerance=0.5, max_bits=8)
    assert search.met and drop() <= 0.5
    assert search.rounds[0]["drop"] == pytest.approx(start_drop, rel=1e-4)
    assert len(search.rounds) > 1 and any(search.bits[n] > 1 for n in layers)
    for name, layer in shared.items():  # each weight is exactly its codebook's values
        assert torch.equal(layer.module.weight, layer.weights())
        assert layer.codebook.numel() <= 2 ** search.bits[name]


def test_fit_bits_says_when_the_caps_stop_it() -> None:
    net, x = _net()
    drop = _cosine_drop(net, x)
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    _, search = fit_bits_(layers, {n: 1 for n in layers}, "linear", drop, tolerance=0.0, max_bits=2)
    assert not search.met and all(b <= 2 for b in search.bits.values())


def test_compress_with_a_share_tolerance_records_the_search(tmp_path, digits, trained_mlp) -> None:
    share = nnc.ShareConfig(fc_bits=1, epochs=0, tolerance=1.0, max_bits=6)
    result = nnc.compress(trained_mlp(), digits, tmp_path / "m.nnc", nnc.CompressConfig(prune=None, share=share))
    search = result.summary["bit_search"]
    assert search["rounds"][0]["drop"] > 1.0  # 1-bit codebooks cost the MLP more than a point
    assert search["met"] == (search["rounds"][-1]["drop"] <= 1.0)
    assert max(result.summary["bits"].values()) > 1
    with pytest.raises(ConfigError, match="tolerance"):
        nnc.ShareConfig(tolerance=-1)
    with pytest.raises(ConfigError, match="max_bits"):
        nnc.ShareConfig(max_bits=0)


def test_a_drop_within_its_noise_buys_no_wider_codebook() -> None:
    net, x = _net()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    drop = _cosine_drop(net, x)
    # the same 1-bit start: far over a zero tolerance, but not when the reading is that noisy
    _, quiet = fit_bits_(layers, {n: 1 for n in layers}, "linear", drop, tolerance=0.0, max_bits=3, noise=lambda: 1e6)
    assert quiet.met and len(quiet.rounds) == 1 and set(quiet.bits.values()) == {1}
    net, x = _net()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    _, noisy = fit_bits_(
        layers, {n: 1 for n in layers}, "linear", _cosine_drop(net, x), tolerance=0.0, max_bits=3, noise=lambda: 0.0
    )
    assert len(noisy.rounds) > 1 and max(noisy.bits.values()) > 1


def test_every_width_is_tuned_before_its_drop_is_read() -> None:
    """With ``tune`` the search judges the model as it will be stored: each sharing (the start and every
    round's wider layers) is tuned first, and a tuning that wins the drop back ends the search there."""
    net, x = _net()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    drop = _cosine_drop(net, x)
    originals = {n: m.weight.detach().clone() for n, m in layers.items()}
    tuned: list[dict[str, int]] = []
    read: list[int] = []

    def counted_drop() -> float:
        read.append(len(tuned))
        return drop()

    def record(shared) -> bool:
        tuned.append({n: s.codebook.numel() for n, s in shared.items()})
        return True  # kept: every width is tuned

    _, search = fit_bits_(layers, {n: 1 for n in layers}, "linear", counted_drop, 0.5, max_bits=8, tune=record)
    assert len(search.rounds) > 1 and len(tuned) == len(search.rounds)
    # every round's drop was read after that round's tuning (the per-layer parts in between read the same state)
    assert [r for r in read if r > 0][0] == 1 and read[-1] == len(tuned)
    assert all(max(t.values()) <= 2 ** max(search.bits.values()) for t in tuned)

    def perfect(shared) -> bool:  # a tuning that restores each layer's weights: no drop left to buy back
        with torch.no_grad():
            for name, layer in shared.items():
                layer.module.weight.copy_(originals[name])
        return True

    net, x = _net()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    start = {n: 1 for n in layers}
    _, won_back = fit_bits_(layers, start, "linear", _cosine_drop(net, x), 0.5, max_bits=8, tune=perfect)
    assert won_back.met and len(won_back.rounds) == 1 and set(won_back.bits.values()) == {1}


def test_a_round_that_lowers_nothing_ends_the_search(caplog) -> None:
    """A drop that one more bit does not lower is not width's to fix: no round after it is tuned for."""
    net, _ = _net()
    layers = {"0": net[0], "2": net[2], "4": net[4]}
    tuned: list[int] = []

    def kept(shared) -> bool:
        tuned.append(1)
        return True

    with caplog.at_level("WARNING", logger="nncompress.quantization.bitsearch"):
        _, search = fit_bits_(layers, {n: 1 for n in layers}, "linear", lambda: 2.0, 0.5, max_bits=8, tune=kept)
    assert search.stalled and not search.met
    assert len(search.rounds) == 2 and len(tuned) == 2  # the start and one round, not eight
    assert "did not lower it" in caplog.text


@pytest.mark.parametrize("wins", [True, False], ids=["tuning-kept", "tuning-rejected"])
def test_rounds_are_tuned_while_tuning_wins_and_once_at_the_end_after(monkeypatch, tmp_path, digits, trained_mlp, wins):
    """Tuning that validation keeps runs for every width the search judges; once it is rejected, later
    rounds are judged as shared and the final widths are tuned once."""
    from nncompress.pipeline import share as share_stage

    calls: list[int] = []

    def fake_tune(model, splits, cfg, shared, objective, progress, journal):
        calls.append(len(shared))
        return {
            "val_after_sharing": 0.5,
            "val_after_centroid_tuning": 0.5,
            "centroid_tuning_kept": wins,
            "centroid_tuning_diverged": False,
        }

    monkeypatch.setattr(share_stage, "_tune_centroids", fake_tune)
    share = nnc.ShareConfig(fc_bits=1, tolerance=0.0, max_bits=3)
    result = nnc.compress(trained_mlp(), digits, tmp_path / "m.nnc", nnc.CompressConfig(prune=None, share=share))
    rounds = len(result.summary["bit_search"]["rounds"])
    assert rounds >= 3  # 1-bit codebooks cost the MLP: the search widened layers over several rounds
    assert len(calls) == (rounds if wins else 2)
