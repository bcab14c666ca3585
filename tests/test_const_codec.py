"""The ``const`` codec (format version 6): a tensor of one repeated value, stored as that value."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nncompress.coding.container import dumps, loads
from nncompress.errors import DecodeLimitError, FormatError
from nncompress.modelfile import load_compressed, save_compressed

from nnc_ref import RefError, decode as ref_decode


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))  # a fresh BatchNorm: 0s and 1s


def _rewrite(path, edit, version: int = 6) -> bytes:
    """The file with its header (and sections) edited and every checksum recomputed: a lie, not damage."""
    box = loads(path.read_bytes())
    header = {k: v for k, v in box.header.items() if k not in ("sections", "data_bytes")}
    sections = {e.name: box.sections[e.name] for e in box.entries}
    header, sections = edit(copy.deepcopy(header), sections)
    return dumps(header, list(sections.items()), version)


def _entry(header: dict, name: str) -> dict:
    return next(e for e in header["tensors"] if e["name"] == name)


def test_constant_tensors_take_no_section_and_decode_exactly(tmp_path) -> None:
    net = _net()
    with torch.no_grad():
        net[0].bias.fill_(-0.125)
        net[1].running_var.fill_(1 - 1e-5)  # float32 rounds 0.99999: the file keeps float32's value
    path = tmp_path / "m.nnc"
    save_compressed(path, net, {})
    box = load_compressed(path)
    codecs = {e["name"]: e["codec"] for e in box.header["tensors"]}
    assert [k for k, c in codecs.items() if c == "const"] == [
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert codecs["0.weight"] == "raw"
    assert not any(name in box.section_bytes for name, c in codecs.items() if c == "const")
    for key, tensor in net.state_dict().items():
        assert torch.equal(box.state[key], tensor.float() if tensor.is_floating_point() else tensor), key
    ref = ref_decode(path.read_bytes())  # the independent reader agrees bit for bit
    assert all(np.array_equal(ref[k], box.state[k].numpy()) for k in ref)
    import nncompress as nnc

    row = next(line for line in str(nnc.layer_table(path)).splitlines() if line.startswith("1.running_var"))
    assert row.split()[3] == "const" and row.split()[-2:] == ["0", "-"]  # no bytes, no ratio to speak of


def test_a_single_value_is_smaller_as_a_constant_than_raw(tmp_path, monkeypatch) -> None:
    from nncompress.coding import dense_codecs

    net = _net()
    net[1].num_batches_tracked.fill_(4690)
    save_compressed(tmp_path / "const.nnc", net, {})
    only_many = dense_codecs.constant_value
    monkeypatch.setattr(dense_codecs, "constant_value", lambda a: None if a.size < 2 else only_many(a))
    save_compressed(tmp_path / "raw.nnc", net, {})
    const_bytes, raw_bytes = ((tmp_path / f"{n}.nnc").stat().st_size for n in ("const", "raw"))
    assert load_compressed(tmp_path / "const.nnc").state["1.num_batches_tracked"].item() == 4690
    assert const_bytes + 12 < raw_bytes  # the 8 data bytes and the section's header entry


def test_values_float32_would_change_and_non_finite_ones_stay_raw() -> None:
    from nncompress.coding.layers import constant_value

    assert constant_value(np.full(4, 0.1, dtype=np.float64)) is None  # 0.1 is not a float32
    assert constant_value(np.full(4, np.nan, dtype=np.float32)) is None
    assert constant_value(np.full(4, np.inf, dtype=np.float32)) is None
    assert constant_value(np.array([1.0, 1.0, 1.5], dtype=np.float32)) is None
    assert constant_value(np.ones(1, dtype=np.float32)) == 1.0
    assert constant_value(np.array(3, dtype=np.int64)) == 3
    assert constant_value(np.full((2, 3), 7, dtype=np.int64)) == 7
    assert constant_value(np.zeros(0, dtype=np.float32)) is None
    assert constant_value(np.array([0.0, -0.0], dtype=np.float32)) is None  # the signs would be lost
    assert constant_value(np.full(3, -0.0, dtype=np.float32)) == 0.0
    assert constant_value(np.full(2, 2**64 - 1, dtype=np.uint64)) is None  # beyond int64: raw


def _lies():
    def value(v):
        def edit(h, s):
            _entry(h, "1.running_mean")["value"] = v
            return h, s

        return edit

    def int_value(h, s):
        e = _entry(h, "1.running_mean")
        e["dtype"] = "int64"
        e["value"] = 0.5
        return h, s

    def extra_key(h, s):
        _entry(h, "1.running_mean")["nonzero"] = 8
        return h, s

    def with_section(h, s):
        return h, {**s, "1.running_mean": b"\x00" * 32}

    def bad_dtype(h, s):
        _entry(h, "1.running_mean")["dtype"] = "float16"
        return h, s

    return [
        (value(1e39), "within float32's range"),
        (value("0"), "finite number"),
        (value(True), "finite number"),
        (int_value, "integer in int64's range"),
        (extra_key, "unknown key"),
        (with_section, "belong to no tensor"),
        (bad_dtype, "must be one of"),
    ]


def _forged(tmp_path, edit, version: int = 6):
    """A file of the net with ``edit`` made to its header (checksums recomputed)."""
    path = tmp_path / "m.nnc"
    save_compressed(path, _net(), {})
    bad = tmp_path / "bad.nnc"
    bad.write_bytes(_rewrite(path, edit, version))
    return bad


@pytest.mark.parametrize("edit, match", _lies())
def test_lying_const_entries_are_refused_by_both_readers(tmp_path, edit, match) -> None:
    bad = _forged(tmp_path, edit)
    with pytest.raises(FormatError, match=match):
        load_compressed(bad)
    with pytest.raises(RefError):
        ref_decode(bad.read_bytes())


def test_a_const_entry_in_an_older_version_is_refused(tmp_path) -> None:
    old = _forged(tmp_path, lambda h, s: (h, s), version=5)
    with pytest.raises(FormatError, match="'codec'"):
        load_compressed(old)
    with pytest.raises(RefError):
        ref_decode(old.read_bytes())


def test_a_huge_constant_is_refused_before_it_is_allocated(tmp_path) -> None:
    def huge(h, s):
        _entry(h, "1.running_mean")["shape"] = [2**40]
        return h, s

    with pytest.raises(DecodeLimitError, match="1.running_mean"):
        load_compressed(_forged(tmp_path, huge))
