"""The .nnc model file: exact decoding, determinism, refusal of damaged files."""

from __future__ import annotations

import copy
import json
import struct

import numpy as np
import pytest
import torch

from nncompress.cli import main
from nncompress.coding.container import read_container
from nncompress.coding.huffman_stream import encode_bare
from nncompress.coding.layers import SharedTensor, codebook_storage, decode_tensor, encode_shared
from nncompress.config import PruneConfig, ShareConfig
from nncompress.errors import ChecksumError, FormatError, TruncatedError, VersionError
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
    save_compressed(tmp_path / "m.nnc", model, shared, codebook_dtype="float32")
    box = load_compressed(tmp_path / "m.nnc")
    for name, layer in shared.items():
        w = box.state[f"{name}.weight"]
        expected = torch.zeros_like(w)
        expected[layer.mask] = layer.codebook[layer.indices]
        assert torch.equal(w, expected)
        assert torch.equal(w, model.state_dict()[f"{name}.weight"])
        assert len(torch.unique(w[w != 0])) <= 2**5
    assert torch.equal(box.state["fc1.bias"], model.fc1.bias.detach())
    restored = box.build_model()
    assert metrics(restored, digits)["accuracy"] == metrics(model, digits)["accuracy"]


def test_auto_codebooks_are_float16_and_decode_to_its_values_exactly(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits)
    save_compressed(tmp_path / "m.nnc", model, shared)  # codebook_dtype="auto" is the default
    save_compressed(tmp_path / "f.nnc", model, shared, codebook_dtype="float32")
    box = load_compressed(tmp_path / "m.nnc")
    stored = {e["name"]: e.get("codebook_dtype") for e in box.header["tensors"]}
    for name, layer in shared.items():
        assert stored[f"{name}.weight"] == "float16"
        expected = torch.zeros_like(layer.mask, dtype=torch.float32)
        expected[layer.mask] = layer.codebook.detach().half().float()[layer.indices]
        assert torch.equal(box.state[f"{name}.weight"], expected)
    half, full = (read_container(tmp_path / f).data_bytes for f in ("m.nnc", "f.nnc"))
    assert full - half == 2 * sum(len(layer.codebook) for layer in shared.values())


def test_auto_codebook_dtype_keeps_float32_outside_float16s_normal_range() -> None:
    ordinary = np.array([-0.31, -0.02, 0.0, 0.004, 0.27], np.float32)
    assert codebook_storage(ordinary) == "float16"
    assert codebook_storage(np.array([6.103515625e-05, -65504.0], np.float32)) == "float16"  # the range's ends
    for odd in (1e-6, -1e-6, 1e5, -1e5):
        assert codebook_storage(np.append(ordinary, np.float32(odd))) == "float32"
    assert codebook_storage(ordinary, "float32") == "float32"
    t = SharedTensor((6,), np.arange(6), np.arange(6), np.append(ordinary, np.float32(1e-6)))
    entry, sections = encode_shared("w", t, layout="huffman")
    assert entry["codebook_dtype"] == "float32"
    assert decode_tensor(entry, dict(sections))[5] == np.float32(1e-6)


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
    assert all(
        torch.equal(load_compressed(tmp_path / "f.nnc").state[k], v)
        for k, v in load_compressed(tmp_path / "a.nnc").state.items()
    )


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
    entry, sections = encode_shared("w", t, rel_bits=3, layout="huffman")
    assert entry["entries"] == 3 + 4 and entry["nonzero"] == 3  # gap of 35 zeros: 4 fillers of 8, then rel 3
    dense = decode_tensor(entry, dict(sections))
    assert dense.reshape(-1)[[0, 3, 39]].tolist() == [0.5, -1.0, 2.0] and np.count_nonzero(dense) == 3
    with pytest.raises(FormatError, match="'nonzero' is 4"):
        decode_tensor({**entry, "nonzero": 4}, dict(sections))
    with pytest.raises(FormatError, match="missing"):
        decode_tensor(entry, {})
    with pytest.raises(FormatError, match="codec"):
        decode_tensor({**entry, "codec": "zip"}, dict(sections))


def test_one_section_per_tensor_and_lying_lengths_are_format_errors() -> None:
    t = SharedTensor((4, 10), np.array([0, 3, 39]), np.array([1, 0, 2]), np.array([-1.0, 0.5, 2.0], np.float16))
    entry, sections = encode_shared("w", t, rel_bits=3, layout="huffman")
    [(name, blob)] = sections
    assert name == "w" and 6 + entry["positions_bytes"] < len(blob)
    for lie, fragment in [
        ({"positions_bytes": len(blob)}, "positions_bytes"),
        ({"positions_bytes": len(blob) - 6 + 1}, "positions_bytes"),
        ({"positions_bytes": -1}, "positions_bytes"),
        ({"positions_bytes": 1.5}, "positions_bytes"),
        ({"positions_bytes": True}, "positions_bytes"),
        ({"positions_bytes": None}, "positions_bytes"),
        ({"positions_bytes": entry["positions_bytes"] - 1}, "'w'"),
        ({"positions_bytes": entry["positions_bytes"] + 1}, "'w'"),
        ({"codebook_size": len(blob)}, "codebook"),
        ({"codebook_size": -1}, "codebook"),
        ({"codebook_dtype": "float32", "codebook_size": len(blob) // 4 + 1}, "codebook"),
    ]:
        with pytest.raises(FormatError, match=fragment) as info:
            decode_tensor({**entry, **lie}, {"w": blob})
        assert "'w'" in str(info.value)
    with pytest.raises(FormatError, match="'w'"):
        decode_tensor(entry, {"w": blob[:6]})  # the codebook alone


@pytest.mark.parametrize("version", [6, 7])
def test_lying_codebook_fields_are_never_called_a_newer_version(version: int) -> None:
    """A blob (version 6) read from the wrong offset can look like a newer blob version: still a lie, not a
    reason to upgrade."""
    t = SharedTensor((4, 10), np.array([0, 3, 39]), np.array([1, 0, 2]), np.array([-1.0, 0.5, 2.0], np.float16))
    entry, [(_, blob)] = encode_shared("w", t, rel_bits=3, layout="huffman", version=version)
    for lie in (
        {"codebook_size": 2},
        {"codebook_size": 4},
        {"codebook_dtype": "float32"},
        {"rel_bits": 0},
        {"rel_bits": 17},
    ):
        with pytest.raises(FormatError) as info:
            decode_tensor({**entry, **lie}, {"w": blob}, version)
        assert not isinstance(info.value, VersionError) and "upgrade" not in str(info.value)


def test_header_lies_with_good_checksums_are_format_errors(tmp_path, trained_mlp, digits) -> None:
    from nncompress.coding.container import write_container

    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    save_compressed(tmp_path / "m.nnc", model, shared)
    box = read_container(tmp_path / "m.nnc")
    sections = list(box.sections.items())
    tensors = box.header["tensors"]
    for header, fragment in [
        ({**box.header, "meta": [1]}, "meta"),
        ({**box.header, "meta": {"dense_params": "x"}}, "dense_params"),
        ({**box.header, "meta": {"dense_weights": {"fc1": "x"}}}, "dense_weights"),
        ({**box.header, "meta": {"dense_weights": [1]}}, "dense_weights"),
        ({**box.header, "tensors": [tensors[0], *tensors]}, "listed twice"),
        ({**box.header, "tensors": tensors[1:]}, "belong to no tensor"),
    ]:
        write_container(tmp_path / "lie.nnc", header, sections)
        with pytest.raises(FormatError, match=fragment):
            load_compressed(tmp_path / "lie.nnc")
        assert main(["evaluate", str(tmp_path / "lie.nnc"), "--data", "digits"]) == 1


@pytest.mark.parametrize(
    "version,match",
    [(6, "alphabet of 4 symbols where the header implies 2"), (7, "3 codes for an alphabet of 2 symbols")],
)
def test_index_outside_the_codebook_is_a_format_error(version: int, match: str) -> None:
    # checksums can be right while the header's codebook is shorter than the indices need; a bare stream
    # (version 7) holds no alphabet size, so its code table is what gives it away
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 2, 1]), np.array([-0.5, 0.1, 0.25], np.float32))
    entry, [(_, blob)] = encode_shared("w", t, rel_bits=3, codebook_dtype="float32", layout="huffman", version=version)
    with pytest.raises(FormatError, match=match):
        decode_tensor({**entry, "codebook_size": 1}, {"w": blob[:4] + blob[12:]}, version)  # the first centroid only


def _relative_streams(
    weight: torch.Tensor, mask: torch.Tensor, codebook: torch.Tensor, bits: int
) -> tuple[list[int], list[int]]:
    """FORMAT.md's relative layout walked by hand: before each kept weight, a gap of g zeros is
    g // 2**bits fillers (relative index 2**bits - 1, codebook index K), then g % 2**bits."""
    flat, kept, book = weight.flatten().tolist(), mask.flatten().tolist(), codebook.tolist()
    m, rel, values, last = 1 << bits, [], [], -1
    for at, w in enumerate(flat):
        if kept[at]:
            gap = at - last - 1
            rel += [m - 1] * (gap // m) + [gap % m]
            values += [len(book)] * (gap // m) + [book.index(w)]
            last = at
    return rel, values


def test_layer_table_splits_the_section_into_its_streams(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    size = save_compressed(tmp_path / "m.nnc", model, shared, layout="huffman", codebook_dtype="float32")
    box = load_compressed(tmp_path / "m.nnc")
    sections = read_container(tmp_path / "m.nnc").sections
    entries = {e["name"]: e for e in box.header["tensors"]}
    rows = {r["tensor"]: r for r in layer_table(box.header, box.section_bytes, box.file_bytes)["layers"]}
    assert set(box.section_bytes) == set(entries) == set(model.state_dict())
    for name, layer in shared.items():
        e, row = entries[f"{name}.weight"], rows[f"{name}.weight"]
        codebook = layer.codebook.detach()
        rel, values = _relative_streams(layer.module.weight.detach(), layer.mask, codebook, e["rel_bits"])
        positions = encode_bare(np.array(rel), 2 ** e["rel_bits"])
        indices = encode_bare(np.array(values), len(codebook) + 1)
        assert sections[f"{name}.weight"] == codebook.numpy().astype("<f4").tobytes() + positions + indices
        assert row["index_bits_huffman"] == 8 * len(positions) / e["nonzero"]
        assert row["weight_bits_huffman"] == 8 * len(indices) / e["nonzero"]
        assert row["bytes"] == 4 * len(codebook) + len(positions) + len(indices)
    assert sum(r["bytes"] for r in rows.values()) < size


def test_version_one_files_are_refused_with_a_recompress_message(tmp_path, trained_mlp, digits) -> None:
    model, shared = _pruned_shared(trained_mlp, digits, epochs=0)
    save_compressed(tmp_path / "m.nnc", model, shared)
    data = (tmp_path / "m.nnc").read_bytes()
    (tmp_path / "old.nnc").write_bytes(data[:8] + struct.pack("<I", 1) + data[12:])
    with pytest.raises(FormatError, match="earlier pre-release.*recompress"):
        load_compressed(tmp_path / "old.nnc")


def test_run_compress_reports_the_decoded_files_accuracy(tmp_path, trained_mlp, digits) -> None:
    model, _ = _pruned_shared(trained_mlp, digits, epochs=0)
    save_trained(model, digits, tmp_path / "pruned.pt", {"pruned": True, "dense_params": 17226})
    res = run_compress(
        tmp_path / "pruned.pt", "digits", tmp_path / "m.nnc", None, ShareConfig(epochs=1, batch_size=64), splits=digits
    )
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
    assert (
        main(
            [
                "--quiet",
                "compress",
                str(tmp_path / "pruned.pt"),
                "--data",
                "digits",
                "--out",
                str(out),
                "--share-epochs",
                "1",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert "pruning skipped" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["file_bytes"] == out.stat().st_size and info["ratio"] > 1
    assert {"file_bytes", "dense_bytes", "ratio", "layers", "totals"} <= set(info)
    totals, rows = info["totals"], info["layers"]
    assert totals["bytes"] == sum(r["bytes"] for r in rows) < info["file_bytes"]
    assert totals["nonzero"] == sum(r["nonzero"] for r in rows) and 0 < totals["kept"] < 1
    shared = [r for r in rows if r["codec"] == "shared"]
    assert (
        min(r["weight_bits_huffman"] for r in shared)
        <= totals["weight_bits_huffman"]
        <= max(r["weight_bits_huffman"] for r in shared)
    )
    assert main(["inspect", str(out)]) == 0
    assert "\ntotal " in capsys.readouterr().out
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
    indices {1: '0', 0: '10', 2: '11'}; both payloads are 10 0 11 0 + padding = 0x98. The
    codebook is float16 ("auto": -0.5 = 0xB800, 0.25 = 0x3400); each blob is 22 + 2 + 3 + 1 + 4
    = 32 bytes, so positions_bytes = 32 and the one section is 4 + 32 + 32 bytes (as version 6)."""
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, sections = encode_shared("w", t, rel_bits=2, layout="huffman", version=6)
    assert entry == {
        "name": "w",
        "codec": "shared",
        "shape": [2, 4],
        "codebook_size": 2,
        "codebook_dtype": "float16",
        "rel_bits": 2,
        "entries": 4,
        "nonzero": 3,
        "positions_bytes": 32,
    }
    assert sections == [
        (
            "w",
            bytes.fromhex(
                "00b80034"
                "01020400000004000000000000000600000000000000"
                "0102"
                "000103"
                "98"
                "59508db7"
                "01020300000004000000000000000600000000000000"
                "0102"
                "010002"
                "98"
                "6c172bcf"
            ),
        )
    ]
    assert decode_tensor(entry, dict(sections), 6).reshape(-1).tolist() == [0, -0.5, 0.25, 0, 0, 0, 0, 0.25]


def test_golden_bytes_of_a_shared_tensor_with_bare_streams() -> None:
    """The same tensor as version 7 writes it: each stream is its longest code length (2), the counts per
    length (1, 2), the symbols in canonical order and the payload 0x98; 1 + 2 + 3 + 1 = 7 bytes, where a
    version 6 blob took 32."""
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, sections = encode_shared("w", t, rel_bits=2, layout="huffman")
    assert entry["positions_bytes"] == 7
    assert sections == [("w", bytes.fromhex("00b800340201020001039802010201000298"))]
    assert decode_tensor(entry, dict(sections)).reshape(-1).tolist() == [0, -0.5, 0.25, 0, 0, 0, 0, 0.25]


def test_whole_compress_is_deterministic(tmp_path, trained_mlp, digits) -> None:
    model, _ = _pruned_shared(trained_mlp, digits, epochs=0)
    save_trained(model, digits, tmp_path / "pruned.pt", {"pruned": True})
    for name in ("a", "b"):
        run_compress(
            tmp_path / "pruned.pt",
            "digits",
            tmp_path / f"{name}.nnc",
            None,
            ShareConfig(epochs=2, batch_size=64, seed=3),
            splits=digits,
        )
    assert (tmp_path / "a.nnc").read_bytes() == (tmp_path / "b.nnc").read_bytes()


def test_small_layers_get_small_codebooks() -> None:
    from nncompress.pipeline import _codebook_bits

    assert _codebook_bits(8, 300, 8) == 5  # 32 centroids x 8 members <= 300 weights
    assert _codebook_bits(8, 5000, 8) == 8
    assert _codebook_bits(5, 133, 8) == 4
    assert _codebook_bits(8, 3, 8) == 1


def test_default_codebooks_keep_small_output_layers_at_full_width() -> None:
    # LeNet-300-100's output layer keeps ~125 weights: one centroid per 8 of them
    # left it 8 centroids, the largest accuracy cost of the whole sharing stage
    from nncompress.pipeline import _codebook_bits

    default = ShareConfig()
    assert _codebook_bits(default.fc_bits, 125, default.min_members) == default.fc_bits
    assert _codebook_bits(default.conv_bits, 500, default.min_members) == default.conv_bits
    assert _codebook_bits(8, 500, default.min_members) == 7  # 128 entries for 500 weights


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
    run_compress(
        tmp_path / "base.pt",
        "digits",
        tmp_path / "m.nnc",
        PruneConfig(epochs_per_step=1, final_epochs=1, q_max=0.75, batch_size=64),
        ShareConfig(epochs=1, batch_size=64),
        splits=digits,
        progress=events.append,
    )
    tasks = {e.task for e in events}
    assert {"fine-tune", "prune", "k-means", "centroids", "coding"} <= tasks
    coding = [e for e in events if e.task == "coding"]
    assert coding[-1].done == coding[-1].total == len(trained_mlp().state_dict())


def test_integer_buffers_survive_float16_storage(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model[1].num_batches_tracked.fill_(100_000)  # float16 tops out at 65,504
    model[1].running_var.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))  # not one value: stored raw
    save_compressed(tmp_path / "m.nnc", model, {}, raw_dtype="float16")
    box = load_compressed(tmp_path / "m.nnc")
    counter = box.state["1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and int(counter) == 100_000
    assert {e["name"]: e["dtype"] for e in box.header["tensors"]}["1.running_var"] == "float16"
    restored = box.build_model(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)))
    assert int(restored[1].num_batches_tracked) == 100_000


def test_non_finite_decoded_tensors_are_a_format_error(tmp_path) -> None:
    # the checksums are right (the writer put the NaN there): only the values tell
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    with torch.no_grad():
        model[0].bias[2] = float("nan")
    save_compressed(tmp_path / "nan.nnc", model, {})
    with pytest.raises(FormatError, match=r"0\.bias': its values hold NaN or Inf"):
        load_compressed(tmp_path / "nan.nnc")


def test_centroid_tuning_that_diverges_is_rolled_back(trained_mlp, digits) -> None:
    model = trained_mlp()
    with torch.no_grad():
        for layer in prunable_layers(model).values():
            layer.weight.mul_(layer.weight.abs() > layer.weight.abs().quantile(0.85))
    untuned = copy.deepcopy(model)
    share_model(untuned, digits, ShareConfig(epochs=0))
    shared, info = share_model(model, digits, ShareConfig(epochs=2, batch_size=64, centroid_lr=1e8))
    assert info["centroid_tuning_diverged"] and not info["centroid_tuning_kept"]
    assert info["val_after_centroid_tuning"] is None
    for name, tensor in untuned.state_dict().items():  # exactly the codebooks k-means gave
        assert torch.equal(model.state_dict()[name], tensor), name


def test_the_table_counts_removed_neurons_as_pruned(tmp_path, trained_mlp, digits) -> None:
    save_trained(trained_mlp(), digits, tmp_path / "base.pt", {})
    run_compress(
        tmp_path / "base.pt",
        "digits",
        tmp_path / "m.nnc",
        PruneConfig(epochs_per_step=1, final_epochs=1, q_max=0.75, batch_size=64),
        ShareConfig(epochs=0),
        splits=digits,
    )
    box = load_compressed(tmp_path / "m.nnc")
    sizes = {n: m.weight.numel() for n, m in prunable_layers(trained_mlp()).items()}
    assert box.header["meta"]["dense_weights"] == sizes
    # a layer that lost neurons is stored smaller; its row still counts the weights it started with
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, sections = encode_shared("fc.weight", t, rel_bits=3, layout="huffman")
    header = {"tensors": [entry], "meta": {"dense_weights": {"fc": 16}}}
    [row] = layer_table(header, {"fc.weight": len(sections[0][1])}, 100)["layers"]
    assert row["weights"] == 16 and row["kept"] == 3 / 16 and row["dense_bytes"] == 64
