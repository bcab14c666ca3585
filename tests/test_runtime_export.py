"""Exports (ONNX checked in onnxruntime, safetensors) and the benchmark command."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.cli import main
from nncompress.errors import ModelError
from nncompress.models import LeNet5, LeNet300
from nncompress.modelfile import save_compressed

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _pruned(model: nn.Module, kept: float) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            with torch.no_grad():
                module.weight.mul_((torch.rand(module.weight.shape, generator=gen) < kept).float())
    return model.eval()


@pytest.fixture
def lenet5_file(tmp_path):
    path = tmp_path / "l5.nnc"
    save_compressed(path, _pruned(LeNet5(), 0.1), {}, meta={"input_shape": [1, 28, 28]})
    return path


@pytest.fixture
def lenet300_file(tmp_path):
    path = tmp_path / "l300.nnc"
    save_compressed(path, _pruned(LeNet300.default(), 0.07), {}, meta={"input_shape": [1, 28, 28]})
    return path


def test_safetensors_round_trip_dense_and_sparse(lenet5_file, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    from nncompress.runtime.export import read_safetensors

    want = nnc.load(lenet5_file).state_dict()
    dense = nnc.export(lenet5_file, tmp_path / "d.safetensors")
    sparse = nnc.export(lenet5_file, tmp_path / "s.safetensors", sparse=True)
    assert dense.sparse_tensors == [] and set(sparse.sparse_tensors) == {
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
        "fc2.weight",
    }
    assert sparse.file_bytes < 0.3 * dense.file_bytes
    plain = st.load_file(str(tmp_path / "d.safetensors"))  # the library reads the dense file as is
    assert plain.keys() == want.keys() and all(torch.equal(plain[k], want[k]) for k in want)
    back = read_safetensors(tmp_path / "s.safetensors")
    assert back.keys() == want.keys() and all(torch.equal(back[k], want[k]) for k in want)


def test_decompress_to_onnx_runs_in_onnxruntime_with_the_same_outputs(lenet5_file, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "m.onnx"
    assert main(["decompress", str(lenet5_file), "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "onnx" and res["checked_batches"] == [1, 3] and res["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model = nnc.load(lenet5_file)
    x = torch.randn(5, 1, 28, 28)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - model(x).numpy()).max() < 1e-4


def test_onnx_sparse_initializers_shrink_the_file_and_keep_the_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _pruned(LeNet300.default(), 0.07)
    res = nnc.export(model, tmp_path / "s.onnx", input_shape=(784,), sparse=True)
    assert len(res.sparse_tensors) == 3 and res.max_abs_diff < 1e-4
    assert res.file_bytes < 0.25 * 4 * sum(p.numel() for p in model.parameters())


def test_an_export_that_fails_leaves_no_file(lenet5_file, tmp_path):
    pytest.importorskip("onnxscript")
    with pytest.raises(ModelError):
        nnc.export(lenet5_file, tmp_path / "bad.onnx", input_shape=(3, 5))
    assert list(tmp_path.iterdir()) == [lenet5_file]


def test_benchmark_json_schema(lenet300_file, capsys):
    assert (
        main(
            [
                "benchmark",
                str(lenet300_file),
                "--batch",
                "1",
                "--batch",
                "16",
                "--repeats",
                "2",
                "--threads",
                "1",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["threads"] == 1 and res["runtime"] == "auto" and res["input_shape"] == [1, 28, 28]
    assert [b["batch"] for b in res["batches"]] == [1, 16]
    for row in res["batches"] + res["layers"]:
        assert row["dense_ms"] > 0 and row["runtime_ms"] > 0
        # speedup is rounded to 3 places: half a unit of that is the whole error allowed on a slow runtime
        assert row["speedup"] == pytest.approx(row["dense_ms"] / row["runtime_ms"], rel=1e-2, abs=5e-4)
    assert {(r["layer"], r["batch"]) for r in res["layers"]} == {(f"fc{i}", b) for i in (1, 2, 3) for b in (1, 16)}
    assert all(
        r["kernel"] in ("dense", "csr", "numba", "numba-shared") or r["kernel"].startswith("csr/")
        for r in res["layers"]
    )
    csr_only = all(r["kernel"] != "dense" for r in res["layers"])
    assert res["runtime_bytes"] > 0 and (res["runtime_bytes"] < res["dense_bytes"] or not csr_only)


def test_benchmark_text_and_a_missing_input_shape(tmp_path, capsys):
    path = tmp_path / "no_shape.nnc"
    save_compressed(path, _pruned(LeNet5(), 0.1), {})
    assert main(["benchmark", str(path), "--batch", "2", "--repeats", "1"]) == 1
    assert "--input-shape" in capsys.readouterr().err
    assert (
        main(
            [
                "benchmark",
                str(path),
                "--batch",
                "2",
                "--repeats",
                "1",
                "--runtime",
                "sparse",
                "--input-shape",
                "1,28,28",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "speedup" in text and "fc1" in text and "weights held" in text
