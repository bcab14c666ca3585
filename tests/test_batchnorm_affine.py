"""``--batchnorm affine``: each BatchNorm stored as the scale and shift it computes in eval mode."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.modelfile import load_compressed, save_compressed
from nncompress.models.batchnorm import batchnorm_as_affine_


class BnNet(nn.Module):
    """Conv + BatchNorm2d, Linear + BatchNorm1d, a BatchNorm without running statistics and one without affine
    parameters (neither can be rewritten)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 8 * 8, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.batch_only = nn.BatchNorm1d(16, track_running_stats=False)
        self.plain = nn.BatchNorm1d(16, affine=False)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.reshape(-1, 1, 8, 8)))).flatten(1)
        h = self.plain(self.bn1(self.fc(h)))
        return self.out(torch.relu(h + 0 * self.batch_only(h)))


def _trained_statistics(net: BnNet) -> BnNet:
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        for _ in range(5):  # running statistics far from 0 and 1
            net(torch.randn(32, 64) * 3 + 1)
        for m in (net.bn, net.bn1):
            m.weight.uniform_(0.5, 2.0)
            m.weight[0] = -0.7  # a negative scale stays a scale
            m.bias.uniform_(-1, 1)
    return net.eval()


def test_eval_outputs_stay_and_half_the_vectors_become_constants() -> None:
    net = _trained_statistics(BnNet())
    x = torch.randn(20, 64)
    before = net(x)
    untouched = {k: v.clone() for k, v in net.state_dict().items() if k.startswith(("batch_only", "plain"))}
    assert batchnorm_as_affine_(net) == ["bn", "bn1"]
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)
    for m in (net.bn, net.bn1):
        assert bool((m.running_mean == 0).all()) and bool((m.running_var == 1 - m.eps).all())
    assert all(torch.equal(net.state_dict()[k], v) for k, v in untouched.items())


def test_the_file_is_smaller_by_the_two_constant_vectors_and_decodes_to_the_same_outputs(tmp_path) -> None:
    net = _trained_statistics(BnNet())
    x = torch.randn(20, 64)
    exact, affine = tmp_path / "exact.nnc", tmp_path / "affine.nnc"
    save_compressed(exact, net, {}, raw_dtype="float32")  # every stored value exact
    rewritten = copy.deepcopy(net)
    batchnorm_as_affine_(rewritten)
    save_compressed(affine, rewritten, {}, raw_dtype="float32")
    saved = exact.stat().st_size - affine.stat().st_size
    assert saved >= 0.8 * 2 * 4 * (6 + 16)  # running_mean and running_var of both layers, less their entries
    decoded = load_compressed(affine).build_model(BnNet()).eval()
    torch.testing.assert_close(decoded(x), net(x), rtol=1e-5, atol=1e-5)
    codecs = {e["name"]: e["codec"] for e in load_compressed(affine).header["tensors"]}
    assert codecs["bn.running_mean"] == codecs["bn1.running_var"] == "const"


def test_compress_stores_batchnorm_as_affine_when_asked(tmp_path, digits) -> None:
    torch.manual_seed(0)
    cfg = nnc.CompressConfig(prune=None, share=nnc.ShareConfig(epochs=0, batchnorm="affine"))
    net = _trained_statistics(BnNet())
    result = nnc.compress(net, digits, tmp_path / "m.nnc", cfg)
    header = load_compressed(result.path).header
    assert header["meta"]["batchnorm_affine"] == ["bn", "bn1"]
    from nncompress.pipeline import metrics

    assert metrics(result.model, digits)["accuracy"] == pytest.approx(result.score_after)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="batchnorm"):
        nnc.ShareConfig(batchnorm="folded")
