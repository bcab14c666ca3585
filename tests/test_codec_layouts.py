"""Format 3's layouts of a shared tensor, raw float16 storage and tied-weight aliases."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from nncompress.coding import huffman
from nncompress.coding.huffman_stream import encode_bare
from nncompress.coding.container import dumps
from nncompress.coding.layers import SharedTensor, _entry_bytes, decode_tensor, encode_raw, encode_shared, raw_storage
from nncompress.errors import ConfigError, FormatError
from nncompress.modelfile import KIND, layer_table, load_compressed, save_compressed
from nncompress.quantization import share_weights_
from nncompress.train.checkpoint import load_state


def _decode(entry: dict, sections: list) -> np.ndarray:
    return decode_tensor(json.loads(json.dumps(entry)), dict(sections))


def _cost(entry: dict, sections: list) -> int:
    return _entry_bytes(entry) + sum(len(b) for _, b in sections)


def test_golden_bytes_of_a_packed_tensor() -> None:
    """FORMAT.md's worked example, packed: bitmap 01100001, then 1-bit indices 0 1 1."""
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, [(name, blob)] = encode_shared("w", t, layout="packed")
    assert entry == {
        "name": "w",
        "codec": "shared",
        "shape": [2, 4],
        "codebook_size": 2,
        "codebook_dtype": "float16",
        "nonzero": 3,
        "indices": "packed",
        "positions": "bitmap",
        "positions_bytes": 1,
    }
    assert blob.hex() == "00b800346160"
    assert np.array_equal(_decode(entry, [(name, blob)]), t.dense())


def test_every_layout_decodes_to_the_stored_codebook_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    book = np.sort(rng.standard_normal(12)).astype(np.float32)  # not float16 numbers: stored rounded
    for size, kept in ((40, 0.3), (40, 1.0), (3000, 0.1), (3000, 1.0)):
        positions = np.sort(rng.choice(size, int(size * kept), replace=False))
        t = SharedTensor((size,), positions, rng.integers(0, 12, len(positions)), book)
        stored = book.astype(np.float16).astype(np.float32)
        want = SharedTensor(t.shape, positions, t.indices, stored).dense()
        results = {}
        for layout in ("huffman", "packed", "raw"):
            entry, sections = encode_shared("w", t, layout=layout)
            got = _decode(entry, sections)
            assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (size, kept, layout)
            results[layout] = _cost(entry, sections)
        entry, sections = encode_shared("w", t)
        assert _cost(entry, sections) == min(results.values())
        assert _decode(entry, sections).tobytes() == want.tobytes()


def test_an_unpruned_tensor_stores_no_positions() -> None:
    rng = np.random.default_rng(1)
    n = 64 * 64
    skewed = np.clip(np.round(rng.standard_normal(n) * 2 + 8), 0, 15).astype(np.int64)  # Huffman beats 4 bits
    skewed[:16] = np.arange(16)  # every centroid used: a writer stores no unused one
    book = (np.arange(-8, 8) / 8).astype(np.float32)  # float16 numbers: stored exactly
    t = SharedTensor((64, 64), np.arange(n), skewed, book)
    entry, [(name, blob)] = encode_shared("w", t)
    assert entry["positions"] == "all" and entry["positions_bytes"] == 0 and "rel_bits" not in entry
    assert blob == book.astype(np.float16).tobytes() + encode_bare(t.indices, 16)
    rel = np.zeros(n, dtype=np.int64)  # what version 2 paid: a relative index (every gap 0) per weight
    assert len(huffman.encode(rel, 4)) > n / 8
    assert np.array_equal(_decode(entry, [(name, blob)]), t.dense())
    row = layer_table({"tensors": [entry]}, {name: len(blob)}, 100 + len(blob))["layers"][0]
    assert row["layout"] == "all/huffman" and row["index_bits_huffman"] == 0.0 and row["codebook_used"] == 16


def test_tiny_tensors_fall_back_to_packed_or_raw() -> None:
    t = SharedTensor((4,), np.array([0, 3]), np.array([0, 1]), np.array([-0.5, 0.25], np.float32))
    entry, [(_, blob)] = encode_shared("b", t)
    assert entry["codec"] == "raw" and entry["dtype"] == "float16" and entry["nonzero"] == 2
    assert np.frombuffer(blob, "<f2").tolist() == [-0.5, 0.0, 0.0, 0.25]
    rng = np.random.default_rng(2)
    t = SharedTensor(
        (500,),
        np.sort(rng.choice(500, 250, replace=False)),
        rng.integers(0, 4, 250),
        np.array([-0.5, -0.1, 0.1, 0.5], np.float32),
    )
    entry, sections = encode_shared("w", t)
    assert entry.get("indices") == "packed" and entry["positions"] == "bitmap"
    assert _cost(entry, sections) < _cost(*encode_shared("w", t, layout="huffman"))


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda e, b: ({**e, "positions": "sideways"}, b), "is not a layout"),
        (lambda e, b: ({**e, "nonzero": 2}, b), "'nonzero' is 2"),
        (lambda e, b: ({**e, "positions_bytes": 2}, b), "'bitmap' of 8 weights take 1 bytes"),
        (lambda e, b: (e, b[:-1] + b"\x61"), "padding"),
        (lambda e, b: (e, b + b"\x00"), "packed indices"),
    ],
)
def test_a_lying_packed_entry_is_a_format_error(mutate, match) -> None:
    t = SharedTensor((2, 4), np.array([1, 2, 7]), np.array([0, 1, 1]), np.array([-0.5, 0.25], np.float32))
    entry, [(name, blob)] = encode_shared("w", t, layout="packed")
    bad_entry, bad_blob = mutate(entry, blob)
    with pytest.raises(FormatError, match=match):
        decode_tensor(bad_entry, {name: bad_blob})


def test_raw_auto_halves_large_float_tensors_only() -> None:
    big = np.linspace(-3, 3, 4096, dtype=np.float32)
    assert raw_storage(big) == "float16" and raw_storage(big[:4095]) == "float32"
    assert raw_storage(np.append(big, np.float32(1e5))) == "float32"  # beyond float16's range
    assert raw_storage(np.arange(5000)) == "int64" and raw_storage(big, "float32") == "float32"
    entry, [(name, data)] = encode_raw("w", big)
    assert entry["dtype"] == "float16" and len(data) == 2 * 4096
    assert np.array_equal(decode_tensor(entry, {name: data}), big.astype(np.float16).astype(np.float32))


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 40, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.embed(ids))))


def test_a_tied_weight_is_stored_once_and_restored_under_both_names(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TiedLM()
    assert list(model.state_dict()) == ["embed.weight", "hidden.weight", "hidden.bias", "head.weight"]
    layers = {"embed": model.embed, "hidden": model.hidden, "head": model.head}
    shared = share_weights_(layers, {"embed": 4, "hidden": 3, "head": 4})
    save_compressed(tmp_path / "m.nnc", model, shared, codebook_dtype="float32")
    box = load_compressed(tmp_path / "m.nnc")
    entries = {e["name"]: e for e in box.header["tensors"]}
    assert entries["head.weight"] == {"name": "head.weight", "codec": "alias", "of": "embed.weight", "shape": [40, 8]}
    assert entries["embed.weight"]["codec"] == "shared" and "head.weight" not in box.section_bytes
    assert box.state["head.weight"] is box.state["embed.weight"]
    for key, value in model.state_dict().items():
        assert box.state[key].numpy().tobytes() == value.numpy().tobytes(), key
    fresh = _TiedLM()
    load_state(fresh, box.state)
    assert fresh.head.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, model.embed.weight)
    ids = torch.tensor([[1, 5, 9]])
    assert torch.equal(fresh(ids), model(ids))
    table = layer_table(box.header, box.section_bytes, box.file_bytes)
    alias = next(r for r in table["layers"] if r["tensor"] == "head.weight")
    assert alias["of"] == "embed.weight" and alias["bytes"] == alias["dense_bytes"] == 0


def test_the_tied_name_that_is_shared_is_the_one_stored(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TiedLM()
    shared = share_weights_({"head": model.head}, {"head": 4})  # only the Linear side was selected
    save_compressed(tmp_path / "m.nnc", model, shared)
    entries = {e["name"]: e for e in load_compressed(tmp_path / "m.nnc").header["tensors"]}
    assert entries["embed.weight"] == {"name": "embed.weight", "codec": "alias", "of": "head.weight", "shape": [40, 8]}
    assert entries["head.weight"]["codec"] == "shared"


@pytest.mark.parametrize(
    "tensors,sections,match",
    [
        ([{"name": "a", "codec": "alias", "of": "b", "shape": [2]}], [], "alias of 'b'"),
        (
            [
                {"name": "w", "codec": "raw", "dtype": "float32", "shape": [2]},
                {"name": "a", "codec": "alias", "of": "w", "shape": [2]},
                {"name": "c", "codec": "alias", "of": "a", "shape": [2]},
            ],
            [("w", bytes(8))],
            "alias of 'a'",
        ),
        (
            [
                {"name": "w", "codec": "raw", "dtype": "float32", "shape": [2]},
                {"name": "a", "codec": "alias", "of": "w", "shape": [1, 2]},
            ],
            [("w", bytes(8))],
            "with the same shape",
        ),
        (
            [
                {"name": "w", "codec": "raw", "dtype": "float32", "shape": [2]},
                {"name": "a", "codec": "alias", "of": "w", "shape": [2]},
            ],
            [("w", bytes(8)), ("a", bytes(8))],
            "no tensor",
        ),
    ],
)
def test_a_bad_alias_is_a_format_error(tmp_path, tensors, sections, match) -> None:
    header = {"kind": KIND, "arch": None, "meta": {}, "tensors": tensors}
    (tmp_path / "bad.nnc").write_bytes(dumps(header, sections))
    with pytest.raises(FormatError, match=match):
        load_compressed(tmp_path / "bad.nnc")


def _as_version_2(data: bytes) -> bytes:
    """The same file stamped version 2 (header CRC recomputed)."""
    version, hlen = struct.unpack_from("<II", data, 8)
    text = zlib.decompress(data[16 : 16 + hlen]) if version >= 5 else data[16 : 16 + hlen]
    body = struct.pack("<II", 2, len(text)) + text
    return data[:8] + body + struct.pack("<I", zlib.crc32(body)) + data[20 + hlen :]


def test_a_version_2_model_file_is_still_read(tmp_path) -> None:
    rng = np.random.default_rng(3)
    t = SharedTensor(
        (30, 20),
        np.sort(rng.choice(600, 90, replace=False)),
        rng.integers(0, 8, 90),
        (np.arange(-4, 4) / 4).astype(np.float32),
    )  # float16 numbers: stored exactly
    entry, sections = encode_shared("fc.weight", t, layout="huffman", version=2)
    bias_entry, bias_sections = encode_raw("fc.bias", np.ones(30, np.float32), "float32")
    assert set(entry) == {
        "name",
        "codec",
        "shape",
        "codebook_size",
        "codebook_dtype",
        "rel_bits",
        "entries",
        "nonzero",
        "positions_bytes",
    }  # exactly version 2's keys
    header = {"kind": KIND, "arch": None, "meta": {}, "tensors": [entry, bias_entry]}
    (tmp_path / "v2.nnc").write_bytes(_as_version_2(dumps(header, sections + bias_sections, 3)))
    box = load_compressed(tmp_path / "v2.nnc")
    assert np.array_equal(box.state["fc.weight"].numpy(), t.dense())
    assert torch.equal(box.state["fc.bias"], torch.ones(30))


@pytest.mark.parametrize("bare", [True, False])
@pytest.mark.parametrize("density", [1e-4, 0.003, 0.08, 0.6])
def test_stream_sizes_from_histograms_equal_the_streams_coded(density: float, bare: bool) -> None:
    """The width is chosen from histograms; each width's figure must be what coding the two
    streams at that width gives, fillers (gaps past 2**bits, and past 2**12 too) included, as bare
    streams (version 7) and as blobs."""
    from nncompress.coding.layers import StreamSizes, _streams

    rng = np.random.default_rng(int(density * 1e4))
    size = 300_000
    positions = np.flatnonzero(rng.random(size) < density)
    k = 23
    t = SharedTensor((size,), positions, rng.integers(0, k, len(positions)), np.linspace(-1, 1, k, dtype=np.float32))
    sizes = StreamSizes(t, 13, bare)
    coder = encode_bare if bare else huffman.encode
    for bits in range(1, 14):
        rel, values = _streams(t, bits)
        coded = 8 * (len(coder(rel, 2**bits)) + len(coder(values, k + 1)))
        assert coded - 16 < sizes.coded_bits(bits) <= coded, bits  # exact bits; the blobs round each to bytes
    with pytest.raises(ValueError):
        sizes.coded_bits(14)
    with pytest.raises(ValueError):
        StreamSizes(t, 17)


@pytest.mark.parametrize("version", [1, 8, 7.5, "7", True])
def test_a_shared_tensor_is_written_only_for_a_format_version_that_exists(version) -> None:
    t = SharedTensor((2, 2), np.array([0, 3]), np.array([0, 1]), np.array([-1.0, 1.0], np.float32))
    with pytest.raises(ConfigError, match="format version"):
        encode_shared("w", t, version=version)
