"""The ``shared`` codec, written and read.

``shared`` is Deep Compression's layout for a pruned, weight-shared tensor:
a codebook, then one stored entry per kept weight (plus filler entries where
a gap between kept weights overflows the relative index), each entry carrying
a relative index (position stream) and a codebook index (value stream); both
streams are canonical-Huffman coded. The relative-index width is chosen per
tensor to make the two coded streams smallest (``rel_bits="auto"``), which
is where we go past Deep Compression's fixed 5/8 bits. Each tensor is one
container section named after it, and its header entry costs bytes too, so a
tiny tensor is written with packed indices, or as ``raw``, where that is
smaller. From format version 7 on the streams are bare (``huffman_stream``).
numpy only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from nncompress.coding import huffman, schema
from nncompress.coding.container_format import (
    BARE_HUFFMAN_VERSION,
    DEFAULT_WRITE_VERSION,
    FORMAT_VERSION,
    MIN_READ_VERSION,
)
from nncompress.coding.dense_codecs import DTYPES, F16_MAX, F16_MIN_NORMAL, Sections
from nncompress.coding.huffman_stream import decode_bare, encode_bare
from nncompress.coding.packed import _pack_indices, _unpack_indices, index_width
from nncompress.coding.sparse import from_relative, gaps, merge_values, split_values, to_relative
from nncompress.errors import ConfigError, FormatError, VersionError
from nncompress.plain import is_int

REL_BITS_CANDIDATES = range(2, 13)


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


class StreamSizes:
    """Coded sizes of a shared tensor's two streams at any relative-index width, from two
    histograms made once: the gaps' low bits and the index counts. The streams themselves
    are built only for the width chosen, so trying eleven widths on a 100 M-weight layer
    costs one pass over its positions, not eleven encodings. ``bare``: the streams of a version 7 file."""

    def __init__(self, t: SharedTensor, max_bits: int = max(REL_BITS_CANDIDATES), bare: bool = True) -> None:
        if not 1 <= max_bits <= schema.MAX_REL_BITS:
            raise ValueError(f"bits must be in 1..{schema.MAX_REL_BITS}, got {max_bits}")
        skipped = gaps(t.positions)
        self.max_bits = max_bits
        self.bare = bare
        low = (1 << max_bits) - 1
        self.low_hist = np.bincount(skipped & low, minlength=low + 1)
        self.high_sum = int((skipped >> max_bits).sum())  # whole blocks of 2**max_bits zeros per gap
        self.k = len(t.codebook)
        self.index_hist = np.bincount(np.asarray(t.indices, dtype=np.int64), minlength=self.k + 1)

    def fillers(self, bits: int) -> int:
        """Filler entries at this width: the sum over gaps of gap >> bits."""
        low = np.arange(len(self.low_hist), dtype=np.int64) >> bits
        return (self.high_sum << (self.max_bits - bits)) + int(np.dot(self.low_hist, low))

    def coded_bits(self, bits: int) -> int:
        """Bits of both Huffman-coded streams (payload and tables) at this width."""
        if not 1 <= bits <= self.max_bits:
            raise ValueError(f"bits must be in 1..{self.max_bits}, got {bits}")
        m = 1 << bits
        fillers = self.fillers(bits)
        rel = self.low_hist.reshape(-1, m).sum(axis=0)  # gap & (m - 1), since m divides 2**max_bits
        rel[m - 1] += fillers
        values = self.index_hist.copy()
        values[self.k] += fillers
        pos_bits, pos_table = huffman.encoded_bits_from_freq(rel, self.bare)
        val_bits, val_table = huffman.encoded_bits_from_freq(values, self.bare)
        return pos_bits + val_bits + 8 * (pos_table + val_table)

    def best(self, candidates: Iterable[int] = REL_BITS_CANDIDATES) -> int:
        """The width that makes the two coded streams smallest (ties: the narrower)."""
        return min(candidates, key=lambda b: (self.coded_bits(b), b))


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


def _blob_bytes(symbols: np.ndarray, alphabet: int, bare: bool) -> int:
    payload, table = huffman.encoded_bits(symbols, alphabet, bare)
    return table + (payload + 7) // 8


def _entry_bytes(entry: Mapping[str, Any]) -> int:
    """Length of the entry in the canonical header JSON: part of what a layout costs."""
    return len(json.dumps(entry, sort_keys=True, separators=(",", ":")))


def _raw_fallback(name: str, t: SharedTensor, stored: str) -> tuple[dict[str, Any], Sections]:
    """The tensor as plain values of the stored codebook's dtype: exactly ``codebook[index]``."""
    book = np.asarray(t.codebook, dtype=DTYPES[stored])
    out = np.zeros(int(np.prod(t.shape)), dtype=DTYPES[stored])
    out[np.asarray(t.positions, dtype=np.int64)] = book[np.asarray(t.indices, dtype=np.int64)]
    entry = {"name": name, "codec": "raw", "shape": list(t.shape), "dtype": stored, "nonzero": int(len(t.positions))}
    return entry, [(name, out.tobytes())]


def used_entries_only(t: SharedTensor) -> SharedTensor:
    """``t`` without the codebook entries no weight uses (readers refuse unreachable entries;
    k-means never leaves any, a codebook built by hand may), same weights."""
    indices = np.asarray(t.indices, dtype=np.int64)
    used = np.bincount(indices, minlength=len(t.codebook)) > 0 if len(indices) else np.zeros(len(t.codebook), bool)
    if used.all():
        return t
    remap = np.cumsum(used) - 1
    return SharedTensor(t.shape, t.positions, remap[indices], np.asarray(t.codebook)[used])


LAYOUTS = ("auto", "huffman", "packed", "raw")
#: bytes by which a layout's estimate may exceed the best one and still be built and compared:
#: more than any difference in header entries and Huffman byte rounding
ESTIMATE_SLACK = 256


def encode_shared(
    name: str,
    t: SharedTensor,
    rel_bits: Union[int, str] = "auto",
    codebook_dtype: str = "auto",
    layout: str = "auto",
    version: int = DEFAULT_WRITE_VERSION,
) -> tuple[dict[str, Any], Sections]:
    """Header entry and the one section of a shared tensor: codebook, position data,
    index data back to back (``positions_bytes`` splits the last two).

    ``layout`` ``"auto"`` writes whichever is smallest, header entry included: Huffman
    streams (``"huffman"``; a tensor with every position kept stores no positions),
    a bitmap and fixed-width indices (``"packed"``: tiny tensors, where the Huffman
    tables cost more than they save), or the values themselves (``"raw"``, in the
    codebook's stored dtype, so exactly ``codebook[index]``). ``version``: of the file it goes in (the
    Huffman streams are bare from version 7 on).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if not is_int(version) or not MIN_READ_VERSION <= version <= FORMAT_VERSION:
        raise ConfigError(f"version must be a format version {MIN_READ_VERSION}..{FORMAT_VERSION}, not {version!r}")
    t = used_entries_only(t)
    bare = version >= BARE_HUFFMAN_VERSION
    coder = encode_bare if bare else huffman.encode
    stored = codebook_storage(t.codebook, codebook_dtype)
    codebook = np.asarray(t.codebook, dtype=DTYPES[stored])
    size = int(np.prod(t.shape))
    k, n = len(codebook), len(t.positions)
    dense = n == size
    base = {
        "name": name,
        "codec": "shared",
        "shape": list(t.shape),
        "codebook_size": k,
        "codebook_dtype": stored,
        "nonzero": int(n),
    }
    candidates: list[tuple[int, int, Any]] = []  # (bytes, preference, builder)
    bits = 0
    sizes: Optional[StreamSizes] = None
    if layout in ("auto", "huffman") and not dense:
        fixed = None if rel_bits == "auto" else int(rel_bits)
        sizes = StreamSizes(t, max(fixed or 0, max(REL_BITS_CANDIDATES)), bare)
        bits = sizes.best() if fixed is None else fixed

    def huffman_layout() -> tuple[dict[str, Any], Sections]:
        if dense:
            coded = coder(np.asarray(t.indices), max(1, k))
            return {**base, "positions": "all", "positions_bytes": 0}, [(name, codebook.tobytes() + coded)]
        rel, values = _streams(t, bits)
        positions = coder(rel, 2**bits)
        entry = {**base, "rel_bits": bits, "entries": int(len(rel)), "positions_bytes": len(positions)}
        return entry, [(name, b"".join([codebook.tobytes(), positions, coder(values, k + 1)]))]

    def packed_layout() -> tuple[dict[str, Any], Sections]:
        bitmap = b""
        if not dense:
            flags = np.zeros(size, dtype=bool)
            flags[np.asarray(t.positions, dtype=np.int64)] = True
            bitmap = np.packbits(flags).tobytes()
        entry = {**base, "indices": "packed", "positions": "all" if dense else "bitmap", "positions_bytes": len(bitmap)}
        return entry, [(name, codebook.tobytes() + bitmap + _pack_indices(t.indices, index_width(k)))]

    def cost(built: tuple[dict[str, Any], Sections]) -> int:
        return _entry_bytes(built[0]) + sum(len(b) for _, b in built[1])

    if layout in ("auto", "huffman"):
        if dense:
            estimate = k * codebook.itemsize + _blob_bytes(np.asarray(t.indices), max(1, k), bare)
        else:
            assert sizes is not None
            estimate = k * codebook.itemsize + (sizes.coded_bits(bits) + 15) // 8
        candidates.append((estimate, 0, huffman_layout))
    if layout in ("auto", "packed"):
        estimate = k * codebook.itemsize + (0 if dense else (size + 7) // 8) + (n * index_width(k) + 7) // 8
        candidates.append((estimate, 1, packed_layout))
    if layout in ("auto", "raw"):
        candidates.append((size * codebook.itemsize, 2, lambda: _raw_fallback(name, t, stored)))
    if len(candidates) == 1:
        return candidates[0][2]()
    # Section estimates (to a few bytes) pick the candidates; building those within a header
    # entry's size of the best gives exact costs, header entries included.
    ranked = sorted(candidates, key=lambda c: (c[0], c[1]))
    built = [(c[1], c[2]()) for c in ranked if c[0] <= ranked[0][0] + ESTIMATE_SLACK]
    return min(built, key=lambda b: (cost(b[1]), b[0]))[1]


def _field(entry: Mapping[str, Any], key: str, kind: type) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(f"tensor {entry.get('name')!r}: header field {key!r} is missing or not a {kind.__name__}")
    return value


def split_shared(entry: Mapping[str, Any], size: int) -> tuple[int, int, int]:
    """Byte lengths (codebook, positions, indices) of a shared tensor's section of
    ``size`` bytes, checked against the header so a lying entry is a FormatError."""
    k = _field(entry, "codebook_size", int)
    pos = _field(entry, "positions_bytes", int)
    name = entry.get("codebook_dtype")
    if not isinstance(name, str) or name not in DTYPES or not 0 <= k <= schema.MAX_CODEBOOK:
        raise FormatError(f"tensor {entry.get('name')!r}: codebook of {k!r} entries of {name!r} is not a codebook")
    book = k * DTYPES[name].itemsize
    if book > size:
        raise FormatError(
            f"tensor {entry.get('name')!r}: codebook of {k} {name} entries needs {book} bytes, the section holds {size}"
        )
    if not 0 <= pos <= size - book:
        raise FormatError(
            f"tensor {entry.get('name')!r}: positions_bytes {pos} does not fit the {size - book} "
            "bytes after the codebook"
        )
    return book, pos, size - book - pos


def _stream(name: str, what: str, blob: bytes, alphabet: int, n: int, version: int) -> np.ndarray:
    """Decode one Huffman stream of ``n`` symbols whose alphabet the header fixes (bare from version 7 on);
    its error keeps its type and names the tensor. The file's version was checked already, so a blob claiming
    a newer version is a header lying about where the blob starts, not a reason to upgrade."""
    try:
        if version >= BARE_HUFFMAN_VERSION:
            return decode_bare(blob, alphabet, n)
        return huffman.decode(blob, alphabet=alphabet)
    except VersionError as exc:
        raise FormatError(
            f"tensor {name!r}, {what} stream: no valid Huffman blob where the header puts it "
            "(a wrong codebook_size, codebook_dtype or positions_bytes)"
        ) from exc
    except FormatError as exc:
        raise type(exc)(f"tensor {name!r}, {what} stream: {exc}") from exc


POSITIONS = ("relative", "all", "bitmap")
INDICES = ("huffman", "packed")


def shared_layout(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(positions, indices) of a shared entry; absent keys mean version 2's layout
    (Huffman-coded relative positions and indices)."""
    layout = (entry.get("positions"), entry.get("indices"))
    if not all(v is None or isinstance(v, str) for v in layout) or layout not in schema.LAYOUT_KEYS:
        raise FormatError(
            f"tensor {entry.get('name')!r}: unknown layout positions={layout[0]!r}, indices={layout[1]!r}"
        )
    return layout[0] or "relative", layout[1] or "huffman"


def _decode_shared(
    name: str, shape: tuple[int, ...], entry: Mapping[str, Any], data: bytes, version: int
) -> np.ndarray:
    """Checked by ``schema.check_entry`` already: field types and ranges, section length."""
    size = math.prod(shape)
    k, nonzero = entry["codebook_size"], entry["nonzero"]
    positions_kind, indices_kind = shared_layout(entry)
    book, pos, _ = split_shared(entry, len(data))
    codebook = np.frombuffer(data, dtype=DTYPES[entry["codebook_dtype"]], count=k).astype(np.float32)
    if not np.all(np.isfinite(codebook)):
        raise FormatError(f"tensor {name!r}: its codebook holds NaN or Inf")
    stream = data[book + pos :]
    positions: Optional[np.ndarray] = None  # None: every position, in order
    if positions_kind == "relative":
        bits = entry["rel_bits"]
        n = entry["entries"]
        rel = _stream(name, "positions", data[book : book + pos], 2**bits, n, version)
        values = _stream(name, "indices", stream, k + 1, n, version)
        if len(rel) != entry["entries"] or len(values) != len(rel):
            raise FormatError(
                f"tensor {name!r}: {len(rel)} relative indices and {len(values)} codebook indices "
                f"decoded, the header's 'entries' is {entry['entries']}"
            )
        indices, filler = split_values(values, k, rel=rel, bits=bits)
        positions = from_relative(rel, filler, bits=bits, size=size)
    else:
        if positions_kind == "bitmap":
            flags = np.unpackbits(np.frombuffer(data[book : book + pos], dtype=np.uint8))
            if flags[size:].any():
                raise FormatError(f"tensor {name!r}: the position bitmap has nonzero padding bits")
            positions = np.flatnonzero(flags[:size])
            del flags
        count = size if positions is None else len(positions)
        if count != nonzero:
            raise FormatError(f"tensor {name!r}: {count} kept positions, the header's 'nonzero' is {nonzero}")
        if indices_kind == "packed":
            try:
                indices = _unpack_indices(stream, count, index_width(k))
            except FormatError as exc:
                raise FormatError(f"tensor {name!r}, indices: {exc}") from None
        else:
            indices = _stream(name, "indices", stream, max(1, k), count, version)
        if len(indices) != count:
            raise FormatError(f"tensor {name!r}: {len(indices)} indices for {count} kept positions")
    if positions is not None and len(positions) != nonzero:
        raise FormatError(f"tensor {name!r}: decoded {len(positions)} weights, the header's 'nonzero' is {nonzero}")
    used = np.bincount(indices, minlength=k) if len(indices) else np.zeros(k, dtype=np.int64)
    if len(used) > k:
        raise FormatError(f"tensor {name!r}: index {len(used) - 1} is outside the codebook of {k}")
    if k and not used.all():
        raise FormatError(
            f"tensor {name!r}: codebook entry {int(np.argmin(used))} of {k} is used by no weight; "
            "a writer stores only the entries it uses"
        )
    if positions is None:
        return codebook[indices].reshape(shape)
    out = np.zeros(size, dtype=np.float32)  # calloc: pages no weight touches cost no memory
    out[positions] = codebook[indices]
    return out.reshape(shape)
