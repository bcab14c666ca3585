"""Writes the golden .nnc files beside this script and the weights they must decode to (.npz).

Run from the repository root: ``python tests/data/golden/make_golden.py``. The files pin
the format: tests decode them with both readers, and rebuild them to check the writer's
bytes have not changed. Every layout the format has appears at least once.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from nncompress.coding.container import dumps
from nncompress.coding.layers import SharedTensor, encode_const, encode_quant, encode_raw, encode_shared

HERE = Path(__file__).parent
KIND = "nncompress-model"


def _shared(rng: np.random.Generator, shape: tuple[int, ...], keep: int, k: int) -> SharedTensor:
    size = int(np.prod(shape))
    positions = np.sort(rng.choice(size, keep, replace=False))
    indices = np.concatenate([np.arange(k), rng.integers(0, k, keep - k)]) if keep else np.zeros(0, np.int64)
    book = (np.arange(k) - k // 2).astype(np.float32) / 8  # float16 numbers
    return SharedTensor(shape, positions, rng.permutation(indices) if keep else indices, book)


def layouts_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """One tensor of every codec and layout (no architecture record)."""
    rng = np.random.default_rng(12)
    parts = [
        encode_shared("rel.weight", _shared(rng, (20, 30), 60, 6), layout="huffman", version=3),
        encode_shared(
            "rel32.weight",
            SharedTensor((7, 9), np.array([0, 5, 62]), np.array([0, 1, 0]), np.array([1e-7, -3.5], np.float32)),
            rel_bits=2,
            layout="huffman",
            version=3,
        ),
        encode_shared("all.weight", _shared(rng, (16, 16), 256, 5), layout="huffman", version=3),
        encode_shared("bitmap.weight", _shared(rng, (3, 5), 4, 3), layout="packed", version=3),
        encode_shared("allpacked.weight", _shared(rng, (2, 3), 6, 4), layout="packed", version=3),
        encode_shared("asraw.weight", _shared(rng, (2, 2), 2, 2), layout="raw", version=3),
        encode_shared(
            "empty.weight",
            SharedTensor((4, 4), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)),
            layout="huffman",
            version=3,
        ),
        encode_raw("bias32", rng.standard_normal(10).astype(np.float32), "float32"),
        encode_raw("big16", rng.standard_normal((64, 64)).astype(np.float32)),  # auto: float16
        encode_raw("steps", np.array(123456789, dtype=np.int64)),
        encode_raw("nothing", np.zeros((0, 3), np.float32)),
    ]
    tensors = [e for e, _ in parts]
    tensors.insert(1, {"name": "tied.weight", "codec": "alias", "of": "rel.weight", "shape": [20, 30]})
    sections = [s for _, secs in parts for s in secs]
    data = dumps({"kind": KIND, "arch": None, "meta": {"dense_params": 2000}, "tensors": tensors}, sections, 3)
    return data, _expected(parts, tensors)


def _expected(parts: list, tensors: list, version: int = 3) -> dict[str, np.ndarray]:
    from nncompress.coding.layers import decode_tensor

    sections = {n: b for _, secs in parts for n, b in secs}
    out = {e["name"]: decode_tensor(e, sections, version) for e in tensors if e["codec"] != "alias"}
    for e in tensors:
        if e["codec"] == "alias":
            out[e["name"]] = out[e["of"]]
    return out


def mlp_file(version: int = 3) -> tuple[bytes, dict[str, np.ndarray]]:
    """A built-in MLP (its architecture record included): what ``compress`` writes, as ``version``."""
    rng = np.random.default_rng(5)
    sizes = [16, 12, 8, 4]
    parts = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), 1):
        parts.append(encode_shared(f"fc{i}.weight", _shared(rng, (n_out, n_in), n_out * n_in // 3, 4), version=version))
        parts.append(encode_raw(f"fc{i}.bias", rng.standard_normal(n_out).astype(np.float32)))
    tensors = [e for e, _ in parts]
    sections = [s for _, secs in parts for s in secs]
    header = {
        "kind": KIND,
        "arch": {"name": "mlp", "config": {"sizes": sizes, "dropout": [0.0, 0.0]}},
        "meta": {
            "dense_params": 360,
            "dense_weights": {"fc1": 192, "fc2": 96, "fc3": 32},
            "transform": {"normalize": "unit"},
        },
        "tensors": tensors,
    }
    return dumps(header, sections, version), _expected(parts, tensors, min(version, 4))


def v5_mlp_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """Version 5: the same MLP file with its header deflated (what ``compress`` writes today)."""
    return mlp_file(5)


def as_version_2(data: bytes) -> bytes:
    hlen = struct.unpack_from("<I", data, 12)[0]
    body = struct.pack("<II", 2, hlen) + data[16 : 16 + hlen]
    return data[:8] + body + struct.pack("<I", zlib.crc32(body)) + data[20 + hlen :]


def v2_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """Version 2's only layouts: relative Huffman shared tensors and raw tensors."""
    rng = np.random.default_rng(2)
    parts = [
        encode_shared("fc.weight", _shared(rng, (30, 20), 90, 8), layout="huffman", version=2),
        encode_raw("fc.bias", rng.standard_normal(30).astype(np.float32), "float32"),
    ]
    tensors = [e for e, _ in parts]
    sections = [s for _, secs in parts for s in secs]
    data = dumps({"kind": KIND, "arch": None, "meta": {}, "tensors": tensors}, sections, 3)
    return as_version_2(data), _expected(parts, tensors)


def v4_quant_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """Version 4's ``quant`` codec: int8 per channel (a zero row among them), int16 per
    tensor, beside a shared and a raw tensor."""
    rng = np.random.default_rng(4)
    conv = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    conv[np.abs(conv) < 0.3] = 0
    conv[2] = 0
    parts = [
        encode_quant("conv.weight", conv, "int8"),
        encode_quant("vec.weight", rng.standard_normal((1, 7)).astype(np.float32), "int16"),
        encode_shared("fc.weight", _shared(rng, (6, 5), 12, 3), version=4),
        encode_raw("fc.bias", rng.standard_normal(6).astype(np.float32), "float32"),
    ]
    tensors = [e for e, _ in parts]
    sections = [s for _, secs in parts for s in secs]
    blob = dumps({"kind": KIND, "arch": None, "meta": {}, "tensors": tensors}, sections, 4)
    return blob, _expected(parts, tensors, 4)


def v6_const_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """Version 6's ``const`` codec (no section): float32 and int64 constants between stored tensors, one of
    them the target of an alias."""
    rng = np.random.default_rng(6)
    parts = [
        encode_shared("fc.weight", _shared(rng, (6, 5), 12, 3), version=6),
        encode_const("fc.bias", np.zeros(6, np.float32), 0.0),
        encode_raw("norm.weight", rng.standard_normal(6).astype(np.float32), "float32"),
        encode_const("norm.running_var", np.zeros(6, np.float32), 0.9999899864196777),
        encode_const("norm.scale", np.zeros((2, 3), np.float32), -1.5e-30),
        encode_const("steps", np.zeros(3, np.int64), -(2**62)),
    ]
    tensors = [e for e, _ in parts]
    tensors.append({"name": "norm.bias", "codec": "alias", "of": "fc.bias", "shape": [6]})
    sections = [s for _, secs in parts for s in secs]
    blob = dumps({"kind": KIND, "arch": None, "meta": {}, "tensors": tensors}, sections, 6)
    return blob, _expected(parts, tensors, 6)


def v7_pairs_file() -> tuple[bytes, dict[str, np.ndarray]]:
    """Version 7: the section table as [name, length] pairs with one CRC of the data area, and bare Huffman
    streams (relative positions and indices, every position kept, one codebook entry, no weight kept) beside
    a packed tensor, raw tensors (one of them empty), a constant and an alias."""
    rng = np.random.default_rng(7)
    parts = [
        encode_shared("conv.weight", _shared(rng, (8, 4, 3, 3), 70, 6), layout="huffman"),
        encode_raw("conv.bias", rng.standard_normal(8).astype(np.float32), "float32"),
        encode_raw("nothing", np.zeros((0, 2), np.float32)),
        encode_const("norm.running_mean", np.zeros(4, np.float32), 0.0),
        encode_shared("all.weight", _shared(rng, (12, 12), 144, 5), layout="huffman"),
        encode_shared("one.weight", _shared(rng, (9, 9), 10, 1), layout="huffman"),
        encode_shared(
            "empty.weight",
            SharedTensor((4, 4), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)),
            layout="huffman",
        ),
        encode_shared("small.weight", _shared(rng, (3, 5), 4, 3), layout="packed"),
        encode_shared("fc.weight", _shared(rng, (3, 16), 30, 4)),
        encode_raw("fc.bias", rng.standard_normal(3).astype(np.float16).astype(np.float32), "float16"),
    ]
    tensors = [e for e, _ in parts]
    tensors.append({"name": "head.weight", "codec": "alias", "of": "fc.weight", "shape": [3, 16]})
    sections = [s for _, secs in parts for s in secs]
    blob = dumps({"kind": KIND, "arch": None, "meta": {"dense_params": 776}, "tensors": tensors}, sections, 7)
    return blob, _expected(parts, tensors, 7)


GOLDEN = {
    "v3_layouts": layouts_file,
    "v3_mlp": mlp_file,
    "v2_relative": v2_file,
    "v4_quant": v4_quant_file,
    "v5_mlp": v5_mlp_file,
    "v6_const": v6_const_file,
    "v7_pairs": v7_pairs_file,
}


def main() -> None:
    for name, make in GOLDEN.items():
        data, weights = make()
        (HERE / f"{name}.nnc").write_bytes(data)
        np.savez(HERE / f"{name}.npz", **weights)


if __name__ == "__main__":
    main()
