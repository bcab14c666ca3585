"""The .nnc model file: exact decoding, determinism, refusal of damaged files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nncompress.cli import main
from nncompress.coding.layers import SharedTensor, decode_tensor, encode_shared
from nncompress.config import PruneConfig, ShareConfig
from nncompress.errors import ChecksumError, FormatError, TruncatedError
from nncompress.modelfile import layer_table, load_compressed, save_compressed
from nncompress.pipeline import metrics, run_compress, save_trained, share_model
from nncompress.pruning import prunable_layers


def _pruned_shared(trained_mlp, digits, epochs: int = 1):
    model = trained_mlp()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            layer.weight.mul_(layer.weight.abs() > layer.weight.abs().quantile(0.85))
    shared, _ = share_model(model, digits, ShareConfig(epochs=epochs, batch_size=64))
    return model, shared


def test_decoded_weights_are_the_codebook_values_bit_for_bit(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits)
    save_compressed(tmp_path / "m.nnc", model, shared)
    box = load_compressed(tmp_path / "m.nnc")
    for name, layer in shared.items():
        w = box.state[f"{name}.weight"]
        expected = torch.zeros_like(w)
        expected[layer.mask] = layer.codebook[layer.indices]
        assert torch.equal(w, expected)
        assert torch.equal(w, model.state_dict()[f"{name}.weight"])
        assert len(torch.unique(w[w != 0])) <= 2 ** 5
    assert torch.equal(box.state["fc1.bias"], model.fc1.bias.detach())
    restored = box.build_model()
    assert metrics(restored, digits)["accuracy"] == metrics(model, digits)["accuracy"]


def test_same_model_and_seed_give_the_same_bytes(tmp_path, trained_mlp, digits) -> None:
    a, sa = _pruned_shared(trained_mlp, digits)
    b, sb = _pruned_shared(trained_mlp, digits)
    save_compressed(tmp_path / "a.nnc", a, sa, meta={"seed": 0})
    save_compressed(tmp_path / "b.nnc", b, sb, meta={"seed": 0})
    assert (tmp_path / "a.nnc").read_bytes() == (tmp_path / "b.nnc").read_bytes()


def test_auto_index_width_is_never_larger_than_fixed(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    fixed = save_compressed(tmp_path / "f.nnc", model, shared, rel_bits=5)
    auto = save_compressed(tmp_path / "a.nnc", model, shared, rel_bits="auto")
    assert auto <= fixed
    assert all(torch.equal(load_compressed(tmp_path / "f.nnc").state[k], v)
               for k, v in load_compressed(tmp_path / "a.nnc").state.items())


def test_damaged_files_are_refused(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    size = save_compressed(tmp_path / "m.nnc", model, shared)
    data = (tmp_path / "m.nnc").read_bytes()
    (tmp_path / "cut.nnc").write_bytes(data[: size - 7])
    with pytest.raises(TruncatedError):
        load_compressed(tmp_path / "cut.nnc")
    flipped = bytearray(data)
    flipped[size - 40] ^= 0x10  # inside the last section
    (tmp_path / "flip.nnc").write_bytes(bytes(flipped))
    with pytest.raises(ChecksumError):
        load_compressed(tmp_path / "flip.nnc")


def test_layer_codec_fillers_and_inconsistent_headers() -> None:
    t = SharedTensor((4, 10), np.array([0, 3, 39]), np.array([1, 0, 2]), np.array([-1.0, 0.5, 2.0], np.float32))
    entry, sections = encode_shared("w", t, rel_bits=3)
    assert entry["entries"] == 3 + 4 and entry["nonzero"] == 3  # gap of 35 zeros: 4 fillers of 8, then rel 3
    dense = decode_tensor(entry, dict(sections))
    assert dense.reshape(-1)[[0, 3, 39]].tolist() == [0.5, -1.0, 2.0] and np.count_nonzero(dense) == 3
    with pytest.raises(FormatError, match="header says"):
        decode_tensor({**entry, "nonzero": 4}, dict(sections))
    with pytest.raises(FormatError, match="missing"):
        decode_tensor(entry, {k: v for k, v in sections if not k.endswith("indices")})
    with pytest.raises(FormatError, match="codec"):
        decode_tensor({**entry, "codec": "zip"}, dict(sections))


def test_run_compress_reports_the_decoded_files_accuracy(tmp_path, trained_mlp, digits) -> None:
    model, _ = _pruned_shared(trained_mlp, digits, epochs=0)
    save_trained(model, digits, tmp_path / "pruned.pt", {"pruned": True, "dense_params": 17226})
    res = run_compress(tmp_path / "pruned.pt", "digits", tmp_path / "m.nnc", None,
                       ShareConfig(epochs=1, batch_size=64), splits=digits)
    box = load_compressed(tmp_path / "m.nnc")
    assert res["test_accuracy"] == metrics(box.build_model(), digits)["accuracy"]
    assert res["file_bytes"] == (tmp_path / "m.nnc").stat().st_size
    assert res["ratio"] == pytest.approx(17226 * 4 / res["file_bytes"])
    table = layer_table(box.header, box.section_bytes, box.file_bytes)
    assert sum(r["bytes"] for r in table["layers"]) < res["file_bytes"]


def test_cli_compress_inspect_evaluate_decompress(tmp_path, trained_mlp, digits, capsys) -> None:
    model, _ = _pruned_shared(trained_mlp, digits, epochs=0)
    save_trained(model, digits, tmp_path / "pruned.pt", {"pruned": True})
    out = tmp_path / "m.nnc"
    assert main(["--quiet", "compress", str(tmp_path / "pruned.pt"), "--data", "digits", "--out", str(out),
                 "--share-epochs", "1", "--run-dir", str(tmp_path / "run")]) == 0
    assert "pruning skipped" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file_bytes"] == out.stat().st_size and info["ratio"] > 1
    assert {"file_bytes", "dense_bytes", "ratio", "layers"} <= set(info)
    assert main(["--quiet", "evaluate", str(out), "--data", "digits", "--json"]) == 0
    assert 0.5 < json.loads(capsys.readouterr().out)["accuracy"] <= 1
    assert main(["decompress", str(out), "--out", str(tmp_path / "d.pt")]) == 0
    state = torch.load(tmp_path / "d.pt", weights_only=True)
    assert torch.equal(state["fc1.weight"], load_compressed(out).state["fc1.weight"])
    out.write_bytes(out.read_bytes()[:50])
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nncompress: error:") and "Traceback" not in err


def test_golden_bytes_of_a_shared_tensor() -> None:
    """Pins the layer codec (FORMAT.md). Worked by hand: positions 1, 2, 7 of 8 with 2-bit
    relative indices are entries rel 1, 0, a filler (rel 3, at position 6), rel 0; the index
    stream is 0, 1, 2 (= filler, K), 1. Canonical codes: positions {0: '0', 1: '10', 3: '11'},
    indices {1: '0', 0: '10', 2: '11'}; both payloads are 10 0 11 0 + padding = 0x98."""
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, sections = encode_shared("w", t, rel_bits=2)
    assert entry == {"name": "w", "codec": "shared", "shape": [2, 4], "codebook_size": 2,
                     "codebook_dtype": "float32", "rel_bits": 2, "entries": 4, "nonzero": 3}
    assert dict(sections) == {
        "w:codebook": bytes.fromhex("000000bf0000803e"),
        "w:positions": bytes.fromhex("01020400000004000000000000000600000000000000" "0102" "000103" "98" "59508db7"),
        "w:indices": bytes.fromhex("01020300000004000000000000000600000000000000" "0102" "010002" "98" "6c172bcf"),
    }
    assert decode_tensor(entry, dict(sections)).reshape(-1).tolist() == [0, -0.5, 0.25, 0, 0, 0, 0, 0.25]


def test_whole_compress_is_deterministic(tmp_path, trained_mlp, digits) -> None:
    model, _ = _pruned_shared(trained_mlp, digits, epochs=0)
    save_trained(model, digits, tmp_path / "pruned.pt", {"pruned": True})
    for name in ("a", "b"):
        run_compress(tmp_path / "pruned.pt", "digits", tmp_path / f"{name}.nnc", None,
                     ShareConfig(epochs=2, batch_size=64, seed=3), splits=digits)
    assert (tmp_path / "a.nnc").read_bytes() == (tmp_path / "b.nnc").read_bytes()


def test_small_layers_get_small_codebooks() -> None:
    from nncompress.pipeline import _codebook_bits
    assert _codebook_bits(8, 300, 8) == 5       # 32 centroids x 8 members <= 300 weights
    assert _codebook_bits(8, 5000, 8) == 8
    assert _codebook_bits(5, 133, 8) == 4
    assert _codebook_bits(8, 3, 8) == 1


def test_fp16_raw_tensors_halve_the_biases(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    full = save_compressed(tmp_path / "a.nnc", model, shared)
    half = save_compressed(tmp_path / "b.nnc", model, shared, raw_dtype="float16")
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert full - half >= 2 * biases - 64  # 2 bytes saved per bias, header text aside
    restored = load_compressed(tmp_path / "b.nnc").state["fc1.bias"]
    assert torch.equal(restored, model.fc1.bias.detach().half().float())


def test_compress_reports_progress_of_every_stage(tmp_path, trained_mlp, digits) -> None:
    save_trained(trained_mlp(), digits, tmp_path / "base.pt", {})
    events = []
    run_compress(tmp_path / "base.pt", "digits", tmp_path / "m.nnc",
                 PruneConfig(epochs_per_step=1, final_epochs=1, q_max=0.75, batch_size=64),
                 ShareConfig(epochs=1, batch_size=64), splits=digits, progress=events.append)
    tasks = {e.task for e in events}
    assert {"fine-tune", "prune", "k-means", "centroids", "coding"} <= tasks
    coding = [e for e in events if e.task == "coding"]
    assert coding[-1].done == coding[-1].total == len(trained_mlp().state_dict())
