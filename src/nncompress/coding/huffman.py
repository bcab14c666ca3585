"""Canonical Huffman coding of integer symbol streams (Deep Compression stage 3).

Canonical Huffman is used because the decoder needs only the number of codes of
each length and the symbols in canonical order, never the tree, so the table
stored beside each stream is a few dozen bytes. Encoding and decoding use
bitarray's C coder (numpy only counts and validates), so both run at millions
of symbols per second.

Blob layout (all integers little-endian)::

    offset  size        field
    0       1           version, currently 1
    1       1           L, the longest code length (0..31; 0 iff no symbols)
    2       4   u32     alphabet_size A (1..65536)
    6       8   u64     n, the number of symbols
    14      8   u64     payload_bits, the exact bit length of the payload
    22      L*cw        counts[1..L]: how many codes have length 1, 2, ..., L;
                        cw = 1 if A <= 255, 2 if A <= 65535, else 4 bytes
    ..      K*sw        the K = sum(counts) used symbols in canonical order
                        (by code length, then ascending symbol value);
                        sw = 1 if A <= 256, else 2 bytes
    ..      ceil(payload_bits/8)
                        payload: the codes back to back, most significant bit
                        first within each byte, last byte zero padded
    end-4   4   u32     CRC-32 (zlib polynomial) of every preceding byte

Codes are assigned canonically: the first code of length l is
(first code of length l-1 + counts[l-1]) << 1, starting from 0 at length 1, and
codes of one length are consecutive in the listed symbol order. A stream with a
single distinct symbol gets the 1-bit code ``0``. The CRC lets the decoder
refuse a corrupted payload instead of returning wrong symbols silently.
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional

import numpy as np
from bitarray import bitarray, decodetree
from bitarray.util import canonical_huffman

from nncompress.errors import ChecksumError, FormatError, TruncatedError, VersionError

__all__ = [
    "MAX_ALPHABET",
    "MAX_CODE_LEN",
    "VERSION",
    "code_lengths",
    "code_stream",
    "decode",
    "decode_symbols",
    "encode",
    "encoded_bits",
    "encoded_bits_from_freq",
    "table_bytes",
]

VERSION = 1
MAX_ALPHABET = 65536
#: Codes are capped at 31 bits (bitarray.util.canonical_decode's limit, kept so
#: any reader can use it). Longer codes need Fibonacci-like frequencies over
#: millions of symbols; they are avoided by flattening the frequencies, which
#: gives a slightly suboptimal but valid code.
MAX_CODE_LEN = 31

_FIXED = struct.Struct("<BBIQQ")
_CRC = struct.Struct("<I")


def _width(value: int) -> int:
    """Bytes of the narrowest of u8/u16/u32 holding ``value``."""
    return 1 if value <= 0xFF else 2 if value <= 0xFFFF else 4


def _count_width(alphabet_size: int) -> int:
    return _width(alphabet_size)


def _symbol_width(alphabet_size: int) -> int:
    return _width(alphabet_size - 1)


def _out_dtype(alphabet_size: int) -> np.dtype:
    return np.dtype(np.uint8 if alphabet_size <= 256 else np.uint16)


def _check_alphabet(alphabet_size: int) -> int:
    if isinstance(alphabet_size, bool) or not isinstance(alphabet_size, (int, np.integer)):
        raise ValueError(f"alphabet_size must be an int, got {type(alphabet_size).__name__}")
    a = int(alphabet_size)
    if not 1 <= a <= MAX_ALPHABET:
        raise ValueError(f"alphabet_size must be in 1..{MAX_ALPHABET}, got {a}")
    return a


def _check_symbols(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    """Validate and return a 1-D integer view; bad input raises ValueError."""
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        raise ValueError(f"symbols must be a 1-D array, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        raise ValueError(f"symbols must have an integer dtype, got {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= alphabet_size):
        raise ValueError(f"symbols must lie in [0, {alphabet_size}), got range [{int(arr.min())}, {int(arr.max())}]")
    return arr


def code_lengths(freq: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for unused symbols), at most MAX_CODE_LEN.

    ``freq[s]`` is how often symbol ``s`` occurs. A lone used symbol gets length 1.
    """
    freq = np.asarray(freq, dtype=np.int64)
    lengths = np.zeros(len(freq), dtype=np.int64)
    used = np.flatnonzero(freq)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    f = freq[used]
    while True:
        code = canonical_huffman({int(s): int(c) for s, c in zip(used, f, strict=True)})[0]
        ls = np.fromiter((len(code[int(s)]) for s in used), dtype=np.int64, count=len(used))
        if ls.max() <= MAX_CODE_LEN:
            lengths[used] = ls
            return lengths
        f = (f >> 1) | 1  # flatten the distribution; stays nonzero so all symbols keep a code


def _table(lengths: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Canonical description from lengths: counts[1..L] and symbols by (length, value)."""
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        return [], used
    ls = lengths[used]
    order = np.lexsort((used, ls))
    counts = np.bincount(ls, minlength=int(ls.max()) + 1)[1:]
    return [int(c) for c in counts], used[order]


def _table_bytes(n_lengths: int, n_used: int, alphabet_size: int, bare: bool = False) -> int:
    """Bytes besides the payload: a blob's fixed fields and CRC, or a bare stream's code-length byte, plus the
    code table."""
    fixed = 1 if bare else _FIXED.size + _CRC.size
    return fixed + n_lengths * _count_width(alphabet_size) + n_used * _symbol_width(alphabet_size)


def encoded_bits_from_freq(freq: np.ndarray, bare: bool = False) -> tuple[int, int]:
    """(payload bits, table bytes) for a histogram; alphabet size is ``len(freq)``; ``bare``: of a
    ``huffman_stream`` stream rather than a blob.

    Lets callers size a stream from a histogram alone (e.g. when choosing a
    relative-index width) without materialising the symbols.
    """
    freq = np.asarray(freq, dtype=np.int64)
    a = _check_alphabet(len(freq))
    if freq.ndim != 1 or (freq.size and freq.min() < 0):
        raise ValueError("freq must be a 1-D array of non-negative counts")
    lengths = code_lengths(freq)
    counts, syms = _table(lengths)
    return int(np.dot(freq, lengths)), _table_bytes(len(counts), len(syms), a, bare)


def encoded_bits(symbols: np.ndarray, alphabet_size: int, bare: bool = False) -> tuple[int, int]:
    """(payload bits, table bytes) of ``encode(symbols, alphabet_size)``, cheaply.

    ``table bytes`` is everything but the payload (header, code table, CRC), so
    ``len(encode(...)) == table_bytes + ceil(payload_bits / 8)``.
    """
    a = _check_alphabet(alphabet_size)
    arr = _check_symbols(symbols, a)
    return encoded_bits_from_freq(np.bincount(arr, minlength=a), bare)


def _code_dict(counts: list[int], syms: np.ndarray) -> dict[int, bitarray]:
    """The canonical code as bitarray wants it: symbol -> code bits."""
    code: dict[int, bitarray] = {}
    value = 0
    pos = 0
    for length, c in enumerate(counts, start=1):
        for s in syms[pos : pos + c].tolist():
            code[s] = bitarray(format(value, f"0{length}b"), endian="big")
            value += 1
        pos += c
        value <<= 1
    return code


def _pack(arr: np.ndarray, counts: list[int], syms: np.ndarray) -> tuple[bytes, int]:
    """Concatenate the canonical codes of ``arr`` MSB-first; returns (bytes, bit count).

    bitarray's C encoder over a Python list measured ~4x faster here than a
    vectorised numpy packer (shift/OR of 64-bit words), which needs about ten
    full passes over 8-byte arrays.
    """
    ba = bitarray(endian="big")
    ba.encode(_code_dict(counts, syms), arr.tolist())
    return ba.tobytes(), len(ba)


def code_stream(symbols: np.ndarray, alphabet_size: int) -> tuple[int, int, list[int], np.ndarray, bytes, int]:
    """A stream's canonical code: (alphabet size, symbol count, codes per length, used symbols in canonical
    order, payload, payload bits). ValueError as ``encode``."""
    a = _check_alphabet(alphabet_size)
    arr = _check_symbols(symbols, a)
    counts, syms = _table(code_lengths(np.bincount(arr, minlength=a)))
    payload, bits = _pack(arr, counts, syms) if len(arr) else (b"", 0)
    return a, len(arr), counts, syms, payload, bits


def table_bytes(counts: list[int], syms: np.ndarray, alphabet_size: int) -> bytes:
    """The code table as stored: the counts per length, then the used symbols, each at its width."""
    cw, sw = _count_width(alphabet_size), _symbol_width(alphabet_size)
    return np.asarray(counts, dtype=f"<u{cw}").tobytes() + syms.astype(f"<u{sw}").tobytes()


def encode(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """Huffman-code a 1-D integer array with symbols in [0, alphabet_size).

    Returns a self-contained blob (layout in the module docstring). Raises
    ValueError for symbols outside the alphabet, non-integer or non-1-D input,
    or an alphabet size outside 1..65536.
    """
    a, n, counts, syms, payload, bits = code_stream(symbols, alphabet_size)
    body = _FIXED.pack(VERSION, len(counts), a, n, bits) + table_bytes(counts, syms, a) + payload
    return body + _CRC.pack(zlib.crc32(body))


def _parse_header(blob: bytes, alphabet: Optional[int] = None) -> tuple[int, int, int, list[int], np.ndarray, int]:
    """Check lengths and CRC; return (alphabet, n, bits, counts, symbols, payload offset)."""
    if len(blob) < _FIXED.size:
        raise TruncatedError(f"Huffman blob has {len(blob)} bytes, shorter than its {_FIXED.size}-byte header")
    version, n_len, a, n, bits = _FIXED.unpack_from(blob, 0)
    if version > VERSION:
        raise VersionError(
            f"Huffman blob version {version} is newer than this reader (version {VERSION}); upgrade nncompress"
        )
    if version != VERSION:
        raise FormatError(f"Huffman blob has invalid version {version}")
    if not 1 <= a <= MAX_ALPHABET:
        raise FormatError(f"Huffman blob declares alphabet size {a}, outside 1..{MAX_ALPHABET}")
    if alphabet is not None and a != alphabet:
        raise FormatError(f"Huffman blob declares an alphabet of {a} symbols where the header implies {alphabet}")
    if n_len > MAX_CODE_LEN:
        raise FormatError(f"Huffman blob declares code length {n_len} > {MAX_CODE_LEN}")
    cw, sw = _count_width(a), _symbol_width(a)
    pos = _FIXED.size
    need = pos + n_len * cw
    if len(blob) < need:
        raise TruncatedError(f"Huffman blob ends inside its code-length table ({len(blob)} < {need} bytes)")
    counts = np.frombuffer(blob, dtype=f"<u{cw}", count=n_len, offset=pos).astype(np.int64)
    pos = need
    k = int(counts.sum())
    if k > a:
        raise FormatError(f"Huffman table lists {k} codes for an alphabet of {a} symbols")
    need = pos + k * sw + (bits + 7) // 8 + _CRC.size
    if len(blob) < need:
        raise TruncatedError(f"Huffman blob has {len(blob)} bytes but its header says {need}")
    if len(blob) > need:
        raise FormatError(f"Huffman blob has {len(blob) - need} trailing bytes after its checksum")
    (crc,) = _CRC.unpack_from(blob, need - _CRC.size)
    if zlib.crc32(memoryview(blob)[: need - _CRC.size]) != crc:
        raise ChecksumError("Huffman blob fails its CRC-32: the data is corrupted")
    syms = np.frombuffer(blob, dtype=f"<u{sw}", count=k, offset=pos).astype(np.int64)
    pos += k * sw
    _check_table(counts, syms, a, n, bits)
    return a, n, bits, [int(c) for c in counts], syms, pos


def _check_table(counts: np.ndarray, syms: np.ndarray, a: int, n: int, bits: Optional[int]) -> None:
    """Reject any code description the encoder could not have written (``bits`` None: a bare stream, whose
    payload is checked as it is decoded)."""
    n_len = len(counts)
    if n == 0:
        if n_len or bits:
            raise FormatError("Huffman blob with no symbols must have an empty table and payload")
        return
    if n_len == 0 or counts[-1] == 0:
        raise FormatError("Huffman table's longest code length has no codes")
    if np.any(syms >= a):
        raise FormatError(f"Huffman table lists a symbol outside the alphabet of {a}")
    # Kraft: a Huffman code is complete; only a lone symbol (1-bit code) is not.
    kraft = int(np.dot(counts, 1 << (n_len - np.arange(1, n_len + 1))))
    if kraft != 1 << n_len and not (len(syms) == 1 and n_len == 1):
        raise FormatError("Huffman table does not describe a complete prefix code")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if np.any(np.diff(syms[lo:hi]) <= 0):
            raise FormatError("Huffman table symbols are not in canonical order")
    lens = np.repeat(np.arange(1, n_len + 1), counts)
    if len(np.unique(syms)) != len(syms):
        raise FormatError("Huffman table lists a symbol twice")
    if bits is not None and not int(lens.min()) * n <= bits <= n_len * n:
        raise FormatError(f"Huffman payload of {bits} bits cannot hold {n} symbols with this table")


def decode(blob: bytes, alphabet: Optional[int] = None) -> np.ndarray:
    """Decode a blob from :func:`encode` into a 1-D array.

    The dtype is ``uint8`` when the alphabet has at most 256 symbols, else
    ``uint16`` (the narrowest that holds every symbol). Raises TruncatedError
    when the blob is shorter than its header says, ChecksumError (a
    FormatError) when its CRC fails, VersionError for a newer format, and
    FormatError for any other inconsistency, including an alphabet size other
    than ``alphabet`` when that is given (the caller knows it from elsewhere).
    """
    blob = bytes(blob)
    a, n, bits, counts, syms, pos = _parse_header(blob, alphabet)
    if n == 0:
        return np.zeros(0, dtype=_out_dtype(a))
    ba = bitarray(endian="big")
    ba.frombytes(blob[pos : pos + (bits + 7) // 8])
    if ba[bits:].any():
        raise FormatError("Huffman payload has non-zero padding bits")
    del ba[bits:]
    out, used = decode_symbols(ba, counts, syms, a, n)
    if used != bits:
        raise FormatError(f"Huffman payload has {bits - used} bits left after {n} symbols")
    return out


def decode_symbols(ba: bitarray, counts: list[int], syms: np.ndarray, a: int, n: int) -> tuple[np.ndarray, int]:
    """The first ``n`` symbols coded at the start of ``ba`` (a checked canonical table) and the bits they
    take; FormatError when ``ba`` ends first or holds a code the table lacks."""
    dtype = _out_dtype(a)
    if len(syms) == 1:  # one symbol: the 1-bit code 0, n times
        if len(ba) < n or ba[:n].any():
            raise FormatError("Huffman payload does not decode to the declared symbols")
        return np.full(n, syms[0], dtype=dtype), n
    try:
        tree = decodetree(_code_dict(counts, syms))
        out = np.fromiter(ba.decode(tree), dtype=dtype, count=n)
    except ValueError as exc:
        raise FormatError(f"Huffman payload does not decode to {n} symbols: {exc}") from None
    len_lut = np.zeros(a, dtype=np.int64)
    len_lut[syms] = np.repeat(np.arange(1, len(counts) + 1), counts)
    return out, int(np.dot(np.bincount(out, minlength=a), len_lut))
