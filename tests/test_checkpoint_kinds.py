"""Checkpoints from the wild hold every tensor kind torch can save: each one loads correctly or is refused
with a CheckpointError that says what it is; our own CSR weights and versions are checked before use."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from nncompress.errors import CheckpointError
from nncompress.models import build_model
from nncompress.train.checkpoint import load_checkpoint, save_checkpoint


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), 10)


def _quantized() -> torch.Tensor:
    return torch.quantize_per_tensor(torch.ones(3, 3), 0.1, 0, torch.qint8)


REFUSED: list[tuple[str, Callable[[], torch.Tensor], str]] = [
    ("coo", lambda: torch.eye(3).to_sparse(), "sparse_coo layout"),
    ("csr", lambda: torch.eye(3).to_sparse_csr(), "sparse_csr layout"),
    ("csc", lambda: torch.eye(3).to_sparse_csc(), "sparse_csc layout"),
    ("bsr", lambda: torch.eye(4).to_sparse_bsr((2, 2)), "sparse_bsr layout"),
    ("meta", lambda: torch.empty(3, 3, device="meta"), "meta-device tensor"),
    ("complex", lambda: torch.ones(3, 3, dtype=torch.complex64), "complex"),
    ("quantized", _quantized, "quantized"),
]


@pytest.mark.parametrize("name,make,words", REFUSED, ids=[r[0] for r in REFUSED])
@pytest.mark.parametrize("ours", [False, True], ids=["state-dict", "nncompress"])
def test_unsupported_tensor_kinds_are_refused_by_name(
    tmp_path: Path, name: str, make: Callable[[], Any], words: str, ours: bool
) -> None:
    tensor = make()
    state = {"fc1.weight": tensor}
    torch.save({"nncompress_checkpoint": 1, "state": state} if ours else state, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="fc1.weight") as info:
        load_checkpoint(tmp_path / "x.pt")
    assert words in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_weights_load_widened_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    source = mlp()
    small = {k: v.to(dtype) for k, v in source.state_dict().items()}
    torch.save(small, tmp_path / "f8.pt")
    model = load_checkpoint(tmp_path / "f8.pt").build_model(mlp(1))
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32
        assert torch.equal(v, small[k].to(torch.float32)), k  # each float8 value is exact in float32


def test_bool_where_the_model_has_floats_is_refused(tmp_path: Path) -> None:
    state = dict(mlp().state_dict())
    state["fc1.weight"] = state["fc1.weight"] > 0
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"fc1\.weight \(torch\.bool\) are not floating point"):
        load_checkpoint(tmp_path / "b.pt").build_model(mlp())


@pytest.mark.parametrize("version", [True, "1", 0, -1, 1.0, None])
def test_a_version_must_be_a_plain_integer(tmp_path: Path, version: Any) -> None:
    torch.save({"nncompress_checkpoint": version, "state": dict(mlp().state_dict())}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="checkpoint version must be an integer >= 1") as info:
        load_checkpoint(tmp_path / "v.pt")
    assert "newer" not in str(info.value)


def test_a_newer_version_says_so(tmp_path: Path) -> None:
    torch.save({"nncompress_checkpoint": 2, "state": dict(mlp().state_dict())}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="newer nncompress"):
        load_checkpoint(tmp_path / "v.pt")


def _sparse_file(path: Path, **change: Any) -> None:
    """Our checkpoint of one 2x3 CSR weight [[0, 2, 0], [3, 0, 4]], with fields replaced by ``change``."""
    parts = {
        "values": torch.tensor([2.0, 3.0, 4.0]),
        "col_indices": torch.tensor([1, 0, 2], dtype=torch.int16),
        "crow_indices": torch.tensor([0, 1, 3], dtype=torch.int16),
        "shape": [2, 3],
        **change,
    }
    torch.save({"nncompress_checkpoint": 1, "state": {}, "sparse": {"w.weight": parts}}, path)


def test_a_good_sparse_weight_loads(tmp_path: Path) -> None:
    _sparse_file(tmp_path / "s.pt")
    got = load_checkpoint(tmp_path / "s.pt").state["w.weight"]
    assert torch.equal(got, torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 4.0]]))


@pytest.mark.parametrize(
    "change,words",
    [
        ({"col_indices": torch.tensor([1, 0, 0])}, "strictly increasing"),  # a repeat: one of 3, 4 would be lost
        ({"col_indices": torch.tensor([1, 2, 0])}, "strictly increasing"),
        ({"col_indices": torch.tensor([1, 0, 3])}, "must lie in 0..2"),
        ({"crow_indices": torch.tensor([1, 1, 3])}, "row pointers"),
        ({"crow_indices": torch.tensor([0, 2, 1])}, "row pointers"),
        ({"col_indices": torch.tensor([1.0, 0.0, 2.0])}, "col_indices must be integers"),
        ({"values": torch.tensor([2, 3, 4])}, "values must be floating point"),
        ({"values": torch.ones(3, 1)}, "one-dimensional"),
        ({"values": [2.0, 3.0, 4.0]}, "values is a list, not a tensor"),
        ({"values": torch.eye(3).to_sparse()}, "sparse_coo layout"),
        ({"shape": [-2, 3]}, "non-negative integers"),
        ({"shape": ["2", 3]}, "non-negative integers"),
        ({"shape": [True, 3]}, "non-negative integers"),
        ({"shape": [2.0, 3]}, "non-negative integers"),
        ({"shape": "2x3"}, "non-negative integers"),
        ({"shape": [2, 3, 1]}, None),  # a rank-3 view of the same matrix is fine
        ({"shape": [2, 10**12]}, "more than the"),  # checked before anything is allocated
        ({"shape": [10**30, 3]}, "more than the"),
        ({"extra": 1}, "expected an object with"),
    ],
)
def test_sparse_weights_are_checked_before_use(tmp_path: Path, change: dict[str, Any], words: str | None) -> None:
    _sparse_file(tmp_path / "s.pt", **change)
    if words is None:
        assert load_checkpoint(tmp_path / "s.pt").state["w.weight"].shape == (2, 3, 1)
        return
    with pytest.raises(CheckpointError, match="w.weight") as info:
        load_checkpoint(tmp_path / "s.pt")
    assert words in str(info.value)


def test_the_csr_bound_counts_all_sparse_weights_and_can_be_raised(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(40, 30), nn.Linear(30, 20))
    with torch.no_grad():
        for layer in model:
            layer.weight.mul_((torch.rand(layer.weight.shape) < 0.1).float())
    save_checkpoint(tmp_path / "m.pt", model, storage="csr")
    assert load_checkpoint(tmp_path / "m.pt", max_elements=40 * 30 + 30 * 20).state["0.weight"].shape == (30, 40)
    with pytest.raises(CheckpointError, match="1.weight is malformed.*more than the 0 left"):
        load_checkpoint(tmp_path / "m.pt", max_elements=40 * 30)


def test_a_builtin_record_asking_for_a_giant_model_costs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp()
    save_checkpoint(tmp_path / "m.pt", model)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["arch"]["config"]["sizes"] = [64, 100_000, 100_000, 10]  # 40 GB if allocated
    torch.save(raw, tmp_path / "giant.pt")
    real_init = nn.init.kaiming_uniform_

    def only_small(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        assert tensor.device.type == "meta" or tensor.numel() <= 128 * 128, "a record-sized tensor was allocated"
        return real_init(tensor, *args, **kwargs)

    monkeypatch.setattr(nn.init, "kaiming_uniform_", only_small)
    rebuilt = load_checkpoint(tmp_path / "giant.pt").build_model()  # built at the stored sizes only
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    raw["state"]["fc3.weight"] = torch.zeros(11, 64)  # 11 outputs where the record says 10
    torch.save(raw, tmp_path / "lie.pt")
    with pytest.raises(CheckpointError, match="does not match the stored weights"):
        load_checkpoint(tmp_path / "lie.pt").build_model()


def test_arch_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", mlp())
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["arch"] = ["mlp"]
    torch.save(raw, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="'arch' must be a dict"):
        load_checkpoint(tmp_path / "a.pt")


def _as_if_saved_on(device: str, src: Path, dst: Path) -> None:
    """``src`` rewritten as torch.save writes tensors that lived on ``device``: only the storage location
    in the pickle differs."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") >= 1
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X" + len(device).to_bytes(4, "little") + device.encode())
            zout.writestr(info, data)


def test_gpu_saved_data_parallel_state_dict_loads(tmp_path: Path) -> None:
    model = mlp()
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "cpu.pt")
    _as_if_saved_on("cuda:0", tmp_path / "cpu.pt", tmp_path / "gpu.pt")
    if not torch.cuda.is_available():  # the file really names the GPU: torch alone cannot read it here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    rebuilt = load_checkpoint(tmp_path / "gpu.pt").build_model(mlp(1))
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_our_gpu_saved_checkpoint_loads(tmp_path: Path) -> None:
    model = mlp()
    with torch.no_grad():
        model.fc1.weight.mul_((torch.rand(model.fc1.weight.shape) < 0.05).float())
    save_checkpoint(tmp_path / "cpu.pt", model)
    _as_if_saved_on("cuda:0", tmp_path / "cpu.pt", tmp_path / "gpu.pt")
    rebuilt = load_checkpoint(tmp_path / "gpu.pt").build_model()
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.pt")
    with pytest.raises(CheckpointError, match="is a FIFO"):
        load_checkpoint(tmp_path / "pipe.pt")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_refused_unread() -> None:
    with pytest.raises(CheckpointError, match="is a character device"):
        load_checkpoint("/dev/zero")
