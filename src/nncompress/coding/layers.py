"""Per-tensor codecs of the compressed file: ``raw`` and ``shared``.

``shared`` is Deep Compression's layout for a pruned, weight-shared tensor:
a codebook, then one stored entry per kept weight (plus filler entries where
a gap between kept weights overflows the relative index), each entry carrying
a relative index (position stream) and a codebook index (value stream); both
streams are canonical-Huffman coded. The relative-index width is chosen per
tensor to make the two coded streams smallest (``rel_bits="auto"``), which
is where we go past Deep Compression's fixed 5/8 bits. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

import numpy as np

from nncompress.coding import huffman
from nncompress.coding.sparse import from_relative, merge_values, split_values, to_relative
from nncompress.errors import FormatError

DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
REL_BITS_CANDIDATES = range(2, 13)
Sections = list[tuple[str, bytes]]


@dataclass(frozen=True)
class SharedTensor:
    """A pruned, weight-shared tensor: kept positions (flat, ascending), the
    codebook index of each, and the codebook."""

    shape: tuple[int, ...]
    positions: np.ndarray
    indices: np.ndarray
    codebook: np.ndarray

    def dense(self) -> np.ndarray:
        out = np.zeros(int(np.prod(self.shape)), dtype=np.float32)
        out[self.positions] = self.codebook[self.indices]
        return out.reshape(self.shape)


def _streams(t: SharedTensor, bits: int) -> tuple[np.ndarray, np.ndarray]:
    rel, filler = to_relative(t.positions, bits)
    values = merge_values(np.asarray(t.indices), filler, len(t.codebook))
    return rel, values


def coded_bits(t: SharedTensor, bits: int) -> int:
    """Bits of both Huffman-coded streams (payload and tables) at this relative-index width."""
    rel, values = _streams(t, bits)
    pos_bits, pos_table = huffman.encoded_bits(rel, 2 ** bits)
    val_bits, val_table = huffman.encoded_bits(values, len(t.codebook) + 1)
    return pos_bits + val_bits + 8 * (pos_table + val_table)


def choose_rel_bits(t: SharedTensor, candidates: Iterable[int] = REL_BITS_CANDIDATES) -> int:
    """The width that makes the coded position and value streams smallest (ties: narrower)."""
    return min(candidates, key=lambda b: (coded_bits(t, b), b))


def encode_shared(name: str, t: SharedTensor, rel_bits: Union[int, str] = "auto",
                  codebook_dtype: str = "float32") -> tuple[dict[str, Any], Sections]:
    """Header entry and sections for a shared tensor."""
    bits = choose_rel_bits(t) if rel_bits == "auto" else int(rel_bits)
    rel, values = _streams(t, bits)
    codebook = np.asarray(t.codebook, dtype=DTYPES[codebook_dtype])
    entry = {"name": name, "codec": "shared", "shape": list(t.shape), "codebook_size": len(codebook),
             "codebook_dtype": codebook_dtype, "rel_bits": bits, "entries": int(len(rel)),
             "nonzero": int(len(t.positions))}
    return entry, [(f"{name}:codebook", codebook.tobytes()),
                   (f"{name}:positions", huffman.encode(rel, 2 ** bits)),
                   (f"{name}:indices", huffman.encode(values, len(codebook) + 1))]


def encode_raw(name: str, array: np.ndarray, dtype: str = "float32") -> tuple[dict[str, Any], Sections]:
    data = np.ascontiguousarray(array, dtype=DTYPES[dtype])
    return {"name": name, "codec": "raw", "shape": list(array.shape), "dtype": dtype}, [(f"{name}:data", data.tobytes())]


def _field(entry: Mapping[str, Any], key: str, kind: type) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(f"tensor {entry.get('name')!r}: header field {key!r} is missing or not a "
                          f"{kind.__name__}")
    return value


def _shape(entry: Mapping[str, Any]) -> tuple[int, ...]:
    shape = _field(entry, "shape", list)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f"tensor {entry.get('name')!r}: bad shape {shape}")
    return tuple(shape)


def _dtype(entry: Mapping[str, Any], key: str) -> np.dtype:
    name = entry.get(key)
    if name not in DTYPES:
        raise FormatError(f"tensor {entry.get('name')!r}: unknown {key} {name!r}")
    return DTYPES[name]


def decode_tensor(entry: Mapping[str, Any], sections: Mapping[str, bytes]) -> np.ndarray:
    """Rebuild one tensor as float32, checking every count the header states."""
    name = _field(entry, "name", str)
    shape = _shape(entry)
    size = int(np.prod(shape))
    try:
        if entry.get("codec") == "raw":
            dt = _dtype(entry, "dtype")
            data = sections[f"{name}:data"]
            if len(data) != size * dt.itemsize:
                raise FormatError(f"tensor {name!r}: {len(data)} data bytes for shape {list(shape)}")
            return np.frombuffer(data, dtype=dt).astype(np.float32).reshape(shape)
        if entry.get("codec") == "shared":
            dt = _dtype(entry, "codebook_dtype")
            k = _field(entry, "codebook_size", int)
            bits = _field(entry, "rel_bits", int)
            raw_codebook = sections[f"{name}:codebook"]
            if len(raw_codebook) != k * dt.itemsize:
                raise FormatError(f"tensor {name!r}: codebook holds {len(raw_codebook)} bytes, header says {k} "
                                  f"{entry['codebook_dtype']} entries")
            codebook = np.frombuffer(raw_codebook, dtype=dt).astype(np.float32)
            rel = huffman.decode(sections[f"{name}:positions"])
            values = huffman.decode(sections[f"{name}:indices"])
            if len(rel) != _field(entry, "entries", int) or len(values) != len(rel):
                raise FormatError(f"tensor {name!r}: stream lengths disagree with the header")
            indices, filler = split_values(values, k, rel=rel, bits=bits)
            positions = from_relative(rel, filler, bits=bits, size=size)
            if len(positions) != _field(entry, "nonzero", int):
                raise FormatError(f"tensor {name!r}: decoded {len(positions)} weights, header says "
                                  f"{entry['nonzero']}")
            return SharedTensor(shape, positions, indices.astype(np.int64), codebook).dense()
    except KeyError as exc:
        raise FormatError(f"tensor {name!r}: section {exc.args[0]!r} is missing") from exc
    except ValueError as exc:
        raise FormatError(f"tensor {name!r}: {exc}") from exc
    raise FormatError(f"tensor {name!r}: unknown codec {entry.get('codec')!r}")
