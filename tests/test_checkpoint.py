"""Tests for nncompress.train.checkpoint (safe, CSR-aware checkpoints) and nncompress.coding.csr."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nncompress.train.checkpoint as ckpt_mod
from nncompress.coding.csr import CSR, csr_bytes, from_csr, to_csr
from nncompress.errors import CheckpointError, FormatError, ModelError
from nncompress.models import build_model
from nncompress.train.checkpoint import load_checkpoint, load_state, save_checkpoint


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape, k
        assert torch.equal(sa[k], sb[k]), k


def zero_most_of(layer: nn.Linear, keep: float = 0.1, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.mul_((torch.rand(layer.weight.shape, generator=gen) < keep).float())


def all_keys(obj: object) -> list[str]:
    """Every dict key anywhere in a nested structure of dicts/lists."""
    keys: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            keys.append(str(k))
            keys += all_keys(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            keys += all_keys(v)
    return keys


# ---------------------------------------------------------------- round trips


def test_round_trip_rebuilds_architecture_and_weights(tmp_path: Path) -> None:
    model = mlp()
    path = tmp_path / "m.pt"
    layout = save_checkpoint(path, model, meta={"note": "x", "acc": 0.5})
    assert set(layout) == set(model.state_dict())
    assert set(layout.values()) == {"dense"}  # nothing is sparse in a fresh model

    ckpt = load_checkpoint(path)
    assert ckpt.arch == {"name": "mlp", "config": {"sizes": [64, 128, 64, 10], "dropout": [0.2, 0.2]}}
    assert ckpt.meta == {"note": "x", "acc": 0.5}
    rebuilt = ckpt.build_model()
    assert type(rebuilt) is type(model)
    assert not rebuilt.training
    assert [n for n, _ in rebuilt.named_children()] == [n for n, _ in model.named_children()]
    assert_same_weights(rebuilt, model)

    raw = torch.load(path, weights_only=True)  # plain tensors and values only
    assert raw["nncompress_checkpoint"] == 1
    assert raw["arch"]["name"] == "mlp"


def test_auto_storage_uses_csr_for_sparse_weight(tmp_path: Path) -> None:
    model = mlp()
    zero_most_of(model.fc1, keep=0.1)
    density = float((model.fc1.weight != 0).float().mean())
    assert 0.05 < density < 0.15

    layout = save_checkpoint(tmp_path / "auto.pt", model, storage="auto")
    assert layout["fc1.weight"] == "csr"
    assert layout["fc2.weight"] == "dense" and layout["fc3.weight"] == "dense"
    assert all(v == "dense" for k, v in layout.items() if k.endswith("bias"))
    save_checkpoint(tmp_path / "dense.pt", model, storage="dense")

    raw = torch.load(tmp_path / "auto.pt", weights_only=True)
    keys = all_keys(raw)
    assert not [k for k in keys if "mask" in k or "_orig" in k]
    assert "fc1.weight" in raw["sparse"] and "fc1.weight" not in raw["state"]
    assert raw["sparse"]["fc1.weight"]["shape"] == [128, 64]

    rebuilt = load_checkpoint(tmp_path / "auto.pt").build_model()
    assert_same_weights(rebuilt, model)
    assert (tmp_path / "auto.pt").stat().st_size < (tmp_path / "dense.pt").stat().st_size


def test_csr_storage_forced_and_bad_storage_name(tmp_path: Path) -> None:
    model = mlp()
    layout = save_checkpoint(tmp_path / "c.pt", model, storage="csr")
    assert {k: v for k, v in layout.items() if k.endswith("weight")} == {
        "fc1.weight": "csr",
        "fc2.weight": "csr",
        "fc3.weight": "csr",
    }
    assert_same_weights(load_checkpoint(tmp_path / "c.pt").build_model(), model)
    with pytest.raises(CheckpointError, match="storage must be one of"):
        save_checkpoint(tmp_path / "x.pt", model, storage="zip")
    assert not (tmp_path / "x.pt").exists()


def test_torch_prune_reparametrisation_is_not_written(tmp_path: Path) -> None:
    import torch.nn.utils.prune as tprune

    model = mlp()
    tprune.l1_unstructured(model.fc1, "weight", amount=0.9)
    expected = model.fc1.weight.detach().clone()
    save_checkpoint(tmp_path / "p.pt", model)
    raw = torch.load(tmp_path / "p.pt", weights_only=True)
    assert not [k for k in all_keys(raw) if "mask" in k or "_orig" in k]
    rebuilt = load_checkpoint(tmp_path / "p.pt").build_model()
    assert torch.equal(rebuilt.fc1.weight, expected)


# ---------------------------------------------------------------- files from elsewhere


def test_bare_state_dict_needs_a_model(tmp_path: Path) -> None:
    model = mlp(1)
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.arch is None and ckpt.meta == {}
    with pytest.raises(CheckpointError, match="--model"):
        ckpt.build_model()
    target = mlp(2)
    out = ckpt.build_model(target)
    assert out is target
    assert_same_weights(out, model)


@pytest.mark.parametrize("wrap", ["module", "state_dict", "model_state_dict", "both"])
def test_prefixed_and_nested_state_dicts(tmp_path: Path, wrap: str) -> None:
    model = mlp(3)
    state = model.state_dict()
    if wrap in ("module", "both"):
        state = {"module." + k: v for k, v in state.items()}
    if wrap in ("state_dict", "both"):
        state = {"state_dict": state, "epoch": 7}
    if wrap == "model_state_dict":
        state = {"model_state_dict": state, "optimizer": {"lr": 0.1}}
    torch.save(state, tmp_path / "w.pt")
    ckpt = load_checkpoint(tmp_path / "w.pt")
    assert set(ckpt.state) == set(model.state_dict())
    assert_same_weights(ckpt.build_model(mlp(4)), model)


def test_whole_pickled_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(mlp(), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "holds pickled Python objects" in msg
    assert "state_dict" in msg
    assert str(path) in msg


class _Trap:
    """Unpickling this object creates (opens for writing) the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_no_code_runs_when_loading_a_malicious_file(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": torch.zeros(2, 2), "x": _Trap(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()
    # The trap is live: an unsafe load would have run it.
    handle = torch.load(path, weights_only=False)["x"]
    handle.close()
    assert marker.exists()


def test_random_bytes_and_missing_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(empty)
    good = tmp_path / "good.pt"
    save_checkpoint(good, mlp())
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")


@pytest.mark.parametrize(
    "payload",
    [
        b"hello world\n" * 10,
        b"PK\x03\x04" + b"\x00" * 60,
        b"\x80\x02}q\x00.",
        b"\x80\x02]q\x00(K\x01e",
        b"\x80\x02X\x03\x00\x00\x00abcq\x01h\x05.",
    ],
)
def test_any_garbage_is_a_checkpoint_error(tmp_path: Path, payload: bytes) -> None:
    # torch's reader fails on garbage with KeyError, IndexError, ...: the user must see one of ours
    (tmp_path / "x.pt").write_bytes(payload)
    with pytest.raises(CheckpointError, match="x.pt"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_damaged_compressed_file_is_not_called_a_bad_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "m.nnc").write_bytes(b"XNC" + b"\x00" * 60)
    with pytest.raises(CheckpointError, match="neither an nncompress file"):
        load_checkpoint(tmp_path / "m.nnc")


def test_random_bytes_are_not_called_a_pickled_model(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(garbage)
    assert "pickled Python objects" not in str(info.value)
    assert "not a readable PyTorch checkpoint" in str(info.value)


def test_non_state_dict_payloads(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "nt.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_checkpoint(tmp_path / "nt.pt")


# ---------------------------------------------------------------- bad contents


def test_nan_weights_refused_on_save_and_load(tmp_path: Path) -> None:
    model = mlp()
    with torch.no_grad():
        model.fc2.weight[3, 5] = float("nan")
    with pytest.raises(ModelError, match="NaN or Inf in fc2.weight"):
        save_checkpoint(tmp_path / "a.pt", model)
    assert not (tmp_path / "a.pt").exists()

    torch.save(model.state_dict(), tmp_path / "b.pt")
    with pytest.raises(ModelError, match="fc2.weight"):
        load_checkpoint(tmp_path / "b.pt")

    clean = mlp()
    with torch.no_grad():
        clean.fc3.bias[0] = float("inf")
    torch.save(clean.state_dict(), tmp_path / "c.pt")
    with pytest.raises(ModelError, match="fc3.bias"):
        load_checkpoint(tmp_path / "c.pt")


def test_load_state_shape_mismatch_names_key_and_shapes() -> None:
    big = build_model("mlp", (1, 28, 28), 10)
    with pytest.raises(CheckpointError) as info:
        load_state(mlp(), big.state_dict())
    msg = str(info.value)
    assert "fc1.weight" in msg
    assert "(128, 784)" in msg and "(128, 64)" in msg


def test_load_state_missing_and_unexpected_keys() -> None:
    state = dict(mlp().state_dict())
    state.pop("fc3.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing fc3\.bias; unexpected extra\.weight"):
        load_state(mlp(), state)


def test_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.pt"
    torch.save({"nncompress_checkpoint": 99, "arch": None, "state": mlp().state_dict(), "sparse": {}, "meta": {}}, path)
    with pytest.raises(CheckpointError, match="newer") as info:
        load_checkpoint(path)
    assert "99" in str(info.value)


def test_malformed_sparse_entry(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save(
        {
            "nncompress_checkpoint": 1,
            "state": {},
            "meta": {},
            "sparse": {
                "fc1.weight": {
                    "values": torch.ones(3),
                    "col_indices": torch.tensor([0, 1, 9]),
                    "crow_indices": torch.tensor([0, 1, 3]),
                    "shape": [2, 4],
                }
            },
        },
        path,
    )
    with pytest.raises(CheckpointError, match="sparse weight fc1.weight is malformed"):
        load_checkpoint(path)


# ---------------------------------------------------------------- atomic writes


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    calls = []

    def broken_save(obj: object, handle, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)
        handle.write(b"PK\x03\x04partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(folder / "m.pt", mlp())
    assert calls == [1]
    assert not (folder / "m.pt").exists()
    assert os.listdir(folder) == []


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.pt"
    first = mlp(5)
    save_checkpoint(path, first)
    before = path.read_bytes()

    def broken_save(obj: object, handle, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"xx")
        raise OSError("no space left")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="no space left"):
        save_checkpoint(path, mlp(6))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]
    assert_same_weights(load_checkpoint(path).build_model(), first)


# ---------------------------------------------------------------- CSR


def sparse_array(shape: tuple[int, ...], density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(np.float32)
    a[rng.random(shape) >= density] = 0.0
    return a


@pytest.mark.parametrize("shape", [(7, 13), (6, 3, 5, 5), (1, 1), (4,)])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_csr_round_trip(shape: tuple[int, ...], density: float) -> None:
    a = sparse_array(shape, density)
    c = to_csr(a)
    assert c.shape == shape
    assert len(c.values) == np.count_nonzero(a)
    assert c.values.dtype == np.float32
    assert c.crow_indices[0] == 0 and c.crow_indices[-1] == len(c.values)
    b = from_csr(c)
    assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_array_equal(b, a)


def test_csr_row_layout_of_a_known_matrix() -> None:
    a = np.array([[0, 2, 0], [0, 0, 0], [3, 0, 4]], dtype=np.float32)
    c = to_csr(a)
    np.testing.assert_array_equal(c.values, [2, 3, 4])
    np.testing.assert_array_equal(c.col_indices, [1, 0, 2])
    np.testing.assert_array_equal(c.crow_indices, [0, 1, 1, 3])


def test_csr_index_dtypes() -> None:
    small = to_csr(sparse_array((10, 300), 0.1))
    assert small.col_indices.dtype == np.int16
    assert small.crow_indices.dtype == np.int16
    wide = to_csr(sparse_array((2, 40000), 0.001))
    assert wide.col_indices.dtype == np.int32  # 40000 > int16 max
    assert wide.crow_indices.dtype == np.int16
    many = to_csr(np.ones((2, 20000), dtype=np.float32))  # 40000 nonzeros
    assert many.col_indices.dtype == np.int16
    assert many.crow_indices.dtype == np.int32


@pytest.mark.parametrize(
    "shape,density", [((7, 13), 0.3), ((6, 3, 5, 5), 0.1), ((2, 40000), 0.01), ((2, 20000), 1.0), ((5, 5), 0.0)]
)
def test_csr_bytes_matches_nbytes(shape: tuple[int, ...], density: float) -> None:
    a = sparse_array(shape, density)
    assert csr_bytes(a) == to_csr(a).nbytes
    c = to_csr(a)
    assert c.nbytes == c.values.nbytes + c.col_indices.nbytes + c.crow_indices.nbytes


def _good() -> CSR:
    return to_csr(np.array([[0, 2, 0], [0, 0, 0], [3, 0, 4]], dtype=np.float32))


@pytest.mark.parametrize(
    "change",
    [
        {"crow_indices": np.array([0, 1, 3])},  # wrong length
        {"crow_indices": np.array([1, 1, 1, 3])},  # does not start at 0
        {"crow_indices": np.array([0, 2, 1, 3])},  # decreasing
        {"crow_indices": np.array([0, 1, 1, 2])},  # last != nnz
        {"col_indices": np.array([1, 0, 3])},  # column out of range
        {"col_indices": np.array([1, -1, 2])},  # negative column
        {"values": np.array([2, 3], dtype=np.float32)},  # values/indices length mismatch
        {"shape": (4, 3)},  # rows disagree with crow
        {"col_indices": np.array([1, 0, 0])},  # a repeated column in one row would drop a value
        {"col_indices": np.array([1, 2, 0])},  # columns out of order within a row
        {"col_indices": np.array([1.0, 0.0, 2.0])},  # float indices would be truncated
        {"crow_indices": np.array([0.0, 1.0, 1.0, 3.0])},
        {"shape": (-3, 3)},
        {"shape": (3, True)},
        {"shape": ("3", 3)},
        {"shape": ()},
    ],
)
def test_from_csr_rejects_inconsistent_arrays(change: dict) -> None:
    good = _good()
    np.testing.assert_array_equal(from_csr(good), [[0, 2, 0], [0, 0, 0], [3, 0, 4]])
    parts = {
        "values": good.values,
        "col_indices": good.col_indices,
        "crow_indices": good.crow_indices,
        "shape": good.shape,
        **change,
    }
    with pytest.raises(FormatError, match="CSR arrays are inconsistent"):
        from_csr(CSR(**parts))


# ---------------------------------------------------------------- malformed files, foreign dtypes, prune masks


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("state", [1, 2], "field 'state' must be a dict, not a list"),
        ("meta", "x", "field 'meta' must be a dict, not a str"),
        ("sparse", [1], "field 'sparse' must be a dict, not a list"),
        ("state", {"fc1.weight": 3}, "bad entries 'fc1.weight'"),
        ("state", {7: torch.zeros(1)}, "bad entries 7"),
    ],
)
def test_malformed_fields_of_our_checkpoint_name_the_field(
    tmp_path: Path, field: str, value: object, fragment: str
) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, mlp())
    raw = torch.load(path, weights_only=True)
    raw[field] = value
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=fragment) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "save the model again" in str(info.value)


@pytest.mark.parametrize(
    "payload", [b'{"fc1.weight": [1, 2]}', b"# README\nnot a model\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64]
)
def test_unreadable_file_message_carries_no_unsafe_torch_advice(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "x.pt").write_bytes(payload)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "x.pt")
    msg = str(info.value)
    assert "not a readable PyTorch checkpoint" in msg
    assert "weights_only" not in msg and "arbitrary code" not in msg and "pickled Python objects" not in msg


def test_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty") as info:
        load_checkpoint(tmp_path / "e.pt")
    assert "no detail" not in str(info.value)


def test_torch_protocol_warning_does_not_reach_the_user(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    import pickle

    (tmp_path / "p4.pt").write_bytes(pickle.dumps({"fc1.weight": [1.0]}, protocol=4))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "p4.pt")
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool])
def test_integer_weights_are_refused_not_cast(tmp_path: Path, dtype: torch.dtype) -> None:
    state = {k: (v * 100).to(dtype) for k, v in mlp().state_dict().items()}
    torch.save(state, tmp_path / "q.pt")
    with pytest.raises(CheckpointError, match="dequantize") as info:
        load_checkpoint(tmp_path / "q.pt").build_model(mlp(1))
    assert f"fc1.weight ({dtype})" in str(info.value)


def test_integer_buffers_that_are_integer_in_the_model_still_load() -> None:
    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))

    source = net()
    source[1].num_batches_tracked.fill_(12)
    target = net()
    load_state(target, source.state_dict())
    assert target[1].num_batches_tracked.dtype == torch.int64 and int(target[1].num_batches_tracked) == 12


def test_state_dict_saved_with_torch_prune_masks_loads_folded(tmp_path: Path) -> None:
    import torch.nn.utils.prune as tprune

    model = mlp()
    tprune.l1_unstructured(model.fc1, "weight", amount=0.8)
    tprune.l1_unstructured(model.fc2, "weight", amount=0.5)
    expected = {"fc1.weight": model.fc1.weight.detach().clone(), "fc2.weight": model.fc2.weight.detach().clone()}
    raw = model.state_dict()
    assert "fc1.weight_mask" in raw and "fc1.weight" not in raw  # the masks really are in the file
    torch.save(raw, tmp_path / "masked.pt")
    ckpt = load_checkpoint(tmp_path / "masked.pt")
    assert not [k for k in ckpt.state if k.endswith(("_orig", "_mask"))]
    rebuilt = ckpt.build_model(mlp(1))
    for name, weight in expected.items():
        got = rebuilt.get_parameter(name)
        assert torch.equal(got, weight), name
    assert (rebuilt.fc1.weight == 0).float().mean() >= 0.79


def test_lone_or_mismatched_prune_halves_are_not_folded(tmp_path: Path) -> None:
    state = dict(mlp().state_dict())
    state["fc1.weight_orig"] = state.pop("fc1.weight")
    torch.save(state, tmp_path / "lone.pt")
    with pytest.raises(CheckpointError, match=r"missing fc1\.weight; unexpected fc1\.weight_orig"):
        load_checkpoint(tmp_path / "lone.pt").build_model(mlp())
    state["fc1.weight_mask"] = torch.ones(3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"fc1\.weight_mask has shape \(3, 3\)"):
        load_checkpoint(tmp_path / "bad.pt")


def test_model_for_state_takes_any_mapping_as_the_record() -> None:
    """``model_for_state`` is typed for a Mapping: a read-only record of a built-in model rebuilds it."""
    from types import MappingProxyType

    from nncompress.models import arch_record
    from nncompress.train.checkpoint import model_for_state

    model = mlp(1)
    record = MappingProxyType(arch_record(model))
    rebuilt = model_for_state(record, model.state_dict())
    load_state(rebuilt, model.state_dict())
    assert type(rebuilt) is type(model)
    assert_same_weights(rebuilt, model)
