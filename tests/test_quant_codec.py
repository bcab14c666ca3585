"""The ``quant`` codec (format version 4): uniform int8/int16 with per-channel scales."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.coding.container import DEFAULT_WRITE_VERSION, loads
from nncompress.errors import ConfigError, FormatError
from nncompress.modelfile import load_compressed, save_compressed

from nnc_ref import RefError, decode as ref_decode


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    with torch.no_grad():
        net[0].weight[net[0].weight.abs() < 0.05] = 0  # pruned zeros
        net[2].weight[1] = 0  # a whole output channel pruned away: scale 0
    return net


@pytest.mark.parametrize("dtype,levels", [("int8", 127), ("int16", 32767)])
def test_values_are_within_half_a_step_of_their_channel_and_zeros_stay_zero(tmp_path, dtype, levels) -> None:
    net = _net()
    path = tmp_path / "q.nnc"
    save_compressed(path, net, {}, quantized={"0.weight": dtype, "2.weight": dtype})
    assert path.read_bytes()[8:12] == struct.pack("<I", DEFAULT_WRITE_VERSION)
    state = load_compressed(path).state
    for key in ("0.weight", "2.weight"):
        w = net.state_dict()[key]
        rows = w.reshape(w.shape[0], -1)
        step = rows.abs().amax(dim=1) / levels
        err = (state[key] - w).reshape(w.shape[0], -1).abs()
        assert bool((err <= step[:, None] / 2 + 1e-7).all())
        assert bool((state[key][w == 0] == 0).all())  # a pruned weight stays pruned
        assert bool((rows.abs().amax(dim=1) - state[key].reshape(w.shape[0], -1).abs().amax(dim=1)).abs().max() < 1e-6)
    assert torch.equal(state["0.bias"], net[0].bias.detach())  # the rest is stored as before
    ref = ref_decode(path.read_bytes())  # the independent reader agrees bit for bit
    assert all(np.array_equal(ref[k], state[k].numpy()) for k in ref)


def test_files_are_written_as_the_newest_version_and_read_as_4_too(tmp_path) -> None:
    path = tmp_path / "plain.nnc"
    net = _net()
    save_compressed(path, net, {}, quantized={"0.weight": "int8"})
    assert path.read_bytes()[8:12] == struct.pack("<I", DEFAULT_WRITE_VERSION) == struct.pack("<I", 7)
    old = tmp_path / "v4.nnc"
    old.write_bytes(_rewrite(path, lambda h, s: (h, s), version=4))
    assert old.read_bytes()[8:12] == struct.pack("<I", 4)
    assert all(
        torch.equal(a, b)
        for a, b in zip(load_compressed(old).state.values(), load_compressed(path).state.values(), strict=True)
    )


def test_bad_requests_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="quantised dtype"):
        save_compressed(tmp_path / "x.nnc", _net(), {}, quantized={"0.weight": "int4"})
    with pytest.raises(ConfigError, match="does not hold"):
        save_compressed(tmp_path / "x.nnc", _net(), {}, quantized={"nope.weight": "int8"})
    with pytest.raises(ConfigError, match="quantize_dtype"):
        nnc.ShareConfig(quantize="fc", quantize_dtype="uint8")
    assert not (tmp_path / "x.nnc").exists()


def _rewrite(path, edit, version: int = 4) -> bytes:
    """The file with its header edited and every checksum recomputed: a lie, not damage."""
    box = loads(path.read_bytes())
    header = {k: v for k, v in box.header.items() if k not in ("sections", "data_bytes")}
    sections = [(e.name, box.sections[e.name]) for e in box.entries]
    header, sections = edit(header, dict(sections))
    from nncompress.coding.container import dumps

    return dumps(header, list(sections.items()), version)


def _entry(header: dict, name: str) -> dict:
    return next(e for e in header["tensors"] if e["name"] == name)


def _lies():
    def scales(h, s):
        _entry(h, "2.weight")["scales"] = 7
        return h, s

    def negative(h, s):
        blob = bytearray(s["2.weight"])
        blob[0:4] = struct.pack("<f", -1.0)
        s["2.weight"] = bytes(blob)
        return h, s

    def out_of_range(h, s):
        blob = bytearray(s["2.weight"])
        blob[4 * 5] = 0x80  # int8 -128: the symmetric range ends at -127
        s["2.weight"] = bytes(blob)
        return h, s

    def zero_scale(h, s):
        blob = bytearray(s["2.weight"])
        blob[4 * 5 + 96] = 3  # a value in the pruned channel 1, whose scale is 0
        s["2.weight"] = bytes(blob)
        return h, s

    def dtype(h, s):
        _entry(h, "2.weight")["dtype"] = "int16"
        return h, s

    def extra_key(h, s):
        _entry(h, "2.weight")["zero_point"] = 0
        return h, s

    return [scales, negative, out_of_range, zero_scale, dtype, extra_key]


@pytest.mark.parametrize("lie", _lies(), ids=lambda f: f.__name__)
def test_lies_with_valid_checksums_are_refused_by_both_readers(tmp_path, lie) -> None:
    path = tmp_path / "q.nnc"
    save_compressed(path, _net(), {}, quantized={"2.weight": "int8"})
    forged = tmp_path / "forged.nnc"
    forged.write_bytes(_rewrite(path, lie))
    with pytest.raises(FormatError):
        load_compressed(forged)
    with pytest.raises(RefError):
        ref_decode(forged.read_bytes())


def test_a_version_3_file_cannot_use_the_codec(tmp_path) -> None:
    path = tmp_path / "q.nnc"
    save_compressed(path, _net(), {}, quantized={"2.weight": "int8"})
    old = tmp_path / "v3.nnc"
    old.write_bytes(_rewrite(path, lambda h, s: (h, s), version=3))
    with pytest.raises(FormatError, match="codec"):
        load_compressed(old)


def test_compress_quantizes_the_layers_named_and_shares_the_rest(tmp_path, digits, trained_mlp) -> None:
    share = nnc.ShareConfig(epochs=0, batch_size=64, quantize="fc3")
    result = nnc.compress(trained_mlp(), digits, tmp_path / "m.nnc", nnc.CompressConfig(prune=None, share=share))
    codecs = {r["tensor"]: r["codec"] for r in result.table.rows}
    assert codecs["fc3.weight"] == "quant" and codecs["fc1.weight"] == "shared"
    assert "int8" in str(result.table)
    assert abs(result.drop_points) < 3
