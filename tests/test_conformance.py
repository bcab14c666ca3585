"""Conformance to FORMAT.md: the main reader and an independent one (tests/nnc_ref.py,
numpy only, written from the spec) decode the golden and freshly written files to the
same weights, bit for bit; the writer still writes the golden files byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import nnc_ref
from nncompress.coding.layers import SharedTensor
from nncompress.modelfile import load_compressed, save_compressed
from nncompress.quantization import SharedLayer

GOLDEN = Path(__file__).parent / "data" / "golden"
NAMES = ["v3_layouts", "v3_mlp", "v2_relative", "v4_quant", "v5_mlp", "v6_const", "v7_pairs"]


def _maker():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("name", NAMES)
def test_both_readers_decode_the_golden_files_to_the_pinned_weights(name) -> None:
    data = (GOLDEN / f"{name}.nnc").read_bytes()
    with np.load(GOLDEN / f"{name}.npz", allow_pickle=False) as pinned:
        want = {k: pinned[k] for k in pinned.files}
    ref = nnc_ref.decode(data)
    main = {k: v.numpy() for k, v in load_compressed(GOLDEN / f"{name}.nnc").state.items()}
    _same(dict(sorted(ref.items())), dict(sorted(want.items())))
    _same(main, ref)


@pytest.mark.parametrize("name", NAMES)
def test_the_writer_still_writes_the_golden_bytes(name) -> None:
    data, _ = _maker().GOLDEN[name]()
    assert data == (GOLDEN / f"{name}.nnc").read_bytes()


def test_tied_tensors_stay_one_tensor() -> None:
    box = load_compressed(GOLDEN / "v3_layouts.nnc")
    assert box.state["tied.weight"] is box.state["rel.weight"]


def _model_and_layers(seed: int, keep: float, bits: int) -> tuple[torch.nn.Module, dict]:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(40, 30), torch.nn.ReLU(), torch.nn.Linear(30, 8))
    layers = {}
    for name in ("0", "2"):
        mask = torch.rand(getattr(model, name).weight.shape, generator=gen) < keep
        k = min(2**bits, int(mask.sum()))
        book = torch.linspace(-1, 1, max(k, 1))[:k] + 0.01 * seed
        idx = torch.randint(0, max(k, 1), (int(mask.sum()),), generator=gen) if k else torch.zeros(0, dtype=torch.long)
        layer = SharedLayer(getattr(model, name), mask=mask, indices=idx, codebook=book.float())
        layer.apply_()
        layers[name] = layer
    return model, layers


@pytest.mark.parametrize(
    "seed,keep,bits,layout,book",
    [
        (0, 0.1, 4, "auto", "auto"),
        (1, 0.5, 3, "huffman", "float32"),
        (2, 1.0, 5, "auto", "float16"),
        (3, 0.02, 2, "packed", "float32"),
        (4, 0.3, 6, "raw", "auto"),
        (5, 0.0, 3, "auto", "auto"),
        (6, 0.9, 8, "huffman", "float16"),
        (7, 0.05, 1, "packed", "float16"),
    ],
)
def test_both_readers_agree_on_freshly_written_files(tmp_path, seed, keep, bits, layout, book) -> None:
    model, layers = _model_and_layers(seed, keep, bits)
    save_compressed(
        tmp_path / "m.nnc", model, layers, layout=layout, codebook_dtype=book, rel_bits="auto" if seed % 2 else 3
    )
    ref = nnc_ref.decode((tmp_path / "m.nnc").read_bytes())
    main = {k: v.numpy() for k, v in load_compressed(tmp_path / "m.nnc").state.items()}
    _same(main, ref)
    for name, layer in layers.items():  # and both are the weights the writer was given
        expected = torch.zeros(layer.mask.shape)
        expected[layer.mask] = layer.codebook[layer.indices]
        assert np.allclose(main[f"{name}.weight"], expected.numpy(), rtol=2**-10, atol=0)


def test_a_hand_built_codebook_with_unused_entries_is_written_without_them(tmp_path) -> None:
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 3, 3]), np.array([-0.5, 0.1, 9.0, 0.25], np.float32))
    model = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False))
    mask = torch.zeros(8, dtype=torch.bool)
    mask[t.positions] = True
    layer = SharedLayer(
        model[0], mask=mask.view(2, 4), indices=torch.from_numpy(t.indices), codebook=torch.from_numpy(t.codebook)
    )
    layer.apply_()
    save_compressed(tmp_path / "m.nnc", model, {"0": layer}, codebook_dtype="float32", layout="huffman")
    box = load_compressed(tmp_path / "m.nnc")
    assert box.header["tensors"][0]["codebook_size"] == 2
    assert torch.equal(box.state["0.weight"], model[0].weight.detach())
    _same({k: v.numpy() for k, v in box.state.items()}, nnc_ref.decode((tmp_path / "m.nnc").read_bytes()))
