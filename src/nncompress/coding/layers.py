"""Per-tensor codecs of the compressed file: ``raw`` and ``shared``.

``shared`` is Deep Compression's layout for a pruned, weight-shared tensor:
a codebook, then one stored entry per kept weight (plus filler entries where
a gap between kept weights overflows the relative index), each entry carrying
a relative index (position stream) and a codebook index (value stream); both
streams are canonical-Huffman coded. The relative-index width is chosen per
tensor to make the two coded streams smallest (``rel_bits="auto"``), which
is where we go past Deep Compression's fixed 5/8 bits. Each tensor is one
container section named after it: every section costs a ~75-byte row in the
header's table, more than most codebooks. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Union

import numpy as np

from nncompress.coding import huffman
from nncompress.coding.sparse import from_relative, merge_values, split_values, to_relative
from nncompress.errors import ConfigError, FormatError, VersionError

DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
RAW_DTYPES = {**DTYPES, "int64": np.dtype("<i8")}
#: float16's normal range: a centroid of 0 or a magnitude in it rounds with relative error
#: <= 2**-11, far below the spread of the weights one centroid stands for.
F16_MIN_NORMAL = 6.103515625e-05
F16_MAX = 65504.0
REL_BITS_CANDIDATES = range(2, 13)
#: a b-bit relative index is a Huffman symbol below 2**b, and Huffman alphabets end at 2**16
MAX_REL_BITS = 16
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


def codebook_storage(codebook: np.ndarray, codebook_dtype: str = "auto") -> str:
    """The dtype a codebook is stored in: ``"auto"`` halves it to float16 when every
    centroid is 0 or a normal float16 number, and keeps float32 otherwise (tiny or huge
    centroids would lose their value, not just low bits)."""
    if codebook_dtype != "auto":
        if codebook_dtype not in DTYPES:
            raise ConfigError(f"codebook_dtype must be 'auto', 'float32' or 'float16', not {codebook_dtype!r}")
        return codebook_dtype
    mag = np.abs(np.asarray(codebook, dtype=np.float64))
    fits = (mag == 0) | ((mag >= F16_MIN_NORMAL) & (mag <= F16_MAX))
    return "float16" if bool(np.all(fits)) else "float32"


def encode_shared(name: str, t: SharedTensor, rel_bits: Union[int, str] = "auto",
                  codebook_dtype: str = "auto") -> tuple[dict[str, Any], Sections]:
    """Header entry and the one section of a shared tensor: codebook, positions blob,
    indices blob back to back (``positions_bytes`` splits the last two)."""
    bits = choose_rel_bits(t) if rel_bits == "auto" else int(rel_bits)
    rel, values = _streams(t, bits)
    stored = codebook_storage(t.codebook, codebook_dtype)
    codebook = np.asarray(t.codebook, dtype=DTYPES[stored])
    positions = huffman.encode(rel, 2 ** bits)
    entry = {"name": name, "codec": "shared", "shape": list(t.shape), "codebook_size": len(codebook),
             "codebook_dtype": stored, "rel_bits": bits, "entries": int(len(rel)),
             "nonzero": int(len(t.positions)), "positions_bytes": len(positions)}
    blob = b"".join([codebook.tobytes(), positions, huffman.encode(values, len(codebook) + 1)])
    return entry, [(name, blob)]


def encode_raw(name: str, array: np.ndarray, dtype: str = "float32") -> tuple[dict[str, Any], Sections]:
    """``dtype`` applies to floating-point tensors; integer and bool ones (a batch-norm
    step counter) are stored as int64, which float16 would round past 2048."""
    if array.dtype.kind in "iub":
        dtype = "int64"
    data = np.ascontiguousarray(array, dtype=RAW_DTYPES[dtype])
    return {"name": name, "codec": "raw", "shape": list(array.shape), "dtype": dtype}, [(name, data.tobytes())]


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


def _dtype(entry: Mapping[str, Any], key: str, allowed: Mapping[str, np.dtype] = DTYPES) -> np.dtype:
    name = entry.get(key)
    if name not in allowed:
        raise FormatError(f"tensor {entry.get('name')!r}: unknown {key} {name!r}")
    return allowed[name]


def split_shared(entry: Mapping[str, Any], size: int) -> tuple[int, int, int]:
    """Byte lengths (codebook, positions, indices) of a shared tensor's section of
    ``size`` bytes, checked against the header so a lying entry is a FormatError."""
    name = entry.get("name")
    k = _field(entry, "codebook_size", int)
    pos = _field(entry, "positions_bytes", int)
    if k < 0:
        raise FormatError(f"tensor {name!r}: codebook_size {k} is negative")
    book = k * _dtype(entry, "codebook_dtype").itemsize
    if book > size:
        raise FormatError(f"tensor {name!r}: codebook of {k} {entry['codebook_dtype']} entries needs {book} "
                          f"bytes, the section holds {size}")
    if not 0 <= pos <= size - book:
        raise FormatError(f"tensor {name!r}: positions_bytes {pos} does not fit the {size - book} bytes "
                          f"after the codebook")
    return book, pos, size - book - pos


def _stream(name: str, what: str, blob: bytes, alphabet: int) -> np.ndarray:
    """Decode one Huffman stream; its error keeps its type and names the tensor (the
    section CRC covers both streams, so the blob's own checks say which one is bad).
    The file's version was checked already, so a blob claiming a newer version is
    a header lying about where the blob starts, not a reason to upgrade."""
    try:
        symbols = huffman.decode(blob)
    except VersionError as exc:
        raise FormatError(f"tensor {name!r}, {what} stream: no valid Huffman blob where the header puts it "
                          "(a wrong codebook_size, codebook_dtype or positions_bytes)") from exc
    except FormatError as exc:
        raise type(exc)(f"tensor {name!r}, {what} stream: {exc}") from exc
    if len(symbols) and int(symbols.max()) >= alphabet:
        raise FormatError(f"tensor {name!r}, {what} stream: symbol {int(symbols.max())} is outside the header's "
                          f"alphabet of {alphabet}")
    return symbols


def decode_tensor(entry: Mapping[str, Any], sections: Mapping[str, bytes]) -> np.ndarray:
    """Rebuild one tensor (float32, or int64 for an int64 raw one) from its section,
    checking every count the header states."""
    name = _field(entry, "name", str)
    shape = _shape(entry)
    size = int(np.prod(shape))
    try:
        if entry.get("codec") == "raw":
            dt = _dtype(entry, "dtype", RAW_DTYPES)
            data = sections[name]
            if len(data) != size * dt.itemsize:
                raise FormatError(f"tensor {name!r}: {len(data)} data bytes for shape {list(shape)}")
            out = np.frombuffer(data, dtype=dt)
            return (out.astype(np.int64) if dt.kind == "i" else out.astype(np.float32)).reshape(shape)
        if entry.get("codec") == "shared":
            data = sections[name]
            k = _field(entry, "codebook_size", int)
            bits = _field(entry, "rel_bits", int)
            book, pos, _ = split_shared(entry, len(data))
            codebook = np.frombuffer(data[:book], dtype=_dtype(entry, "codebook_dtype")).astype(np.float32)
            if not 1 <= bits <= MAX_REL_BITS:
                raise FormatError(f"tensor {name!r}: rel_bits {bits} is outside 1..{MAX_REL_BITS}")
            rel = _stream(name, "positions", data[book:book + pos], 2 ** bits)
            values = _stream(name, "indices", data[book + pos:], k + 1)
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
