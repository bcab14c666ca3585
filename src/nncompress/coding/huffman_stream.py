"""Bare Huffman streams (format version 7 on): a code table and a payload, nothing the file says elsewhere.

A ``huffman`` blob repeats what a model file's header holds or implies (the alphabet size, the symbol count,
the payload's bit count) and carries a CRC that the container's data CRC covers: 25 bytes of every stream, on
a small ResNet's file 14 streams and 2 % of it. A bare stream keeps the longest code length, the code-length
counts, the used symbols and the payload; the reader is told the alphabet and the symbol count, and the payload
must end in the byte where its last code ends, padded with zero bits. The table and the payload follow the
canonical rules of ``huffman``.
"""

from __future__ import annotations

import numpy as np
from bitarray import bitarray

from nncompress.coding.huffman import (
    MAX_CODE_LEN,
    _check_alphabet,
    _check_table,
    _count_width,
    _out_dtype,
    _symbol_width,
    code_stream,
    decode_symbols,
    table_bytes,
)
from nncompress.errors import FormatError, TruncatedError

__all__ = ["decode_bare", "encode_bare"]


def encode_bare(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """A bare stream of a 1-D integer array with symbols in [0, alphabet_size); ValueError as ``huffman.encode``."""
    a, _, counts, syms, payload, _ = code_stream(symbols, alphabet_size)
    return bytes([len(counts)]) + table_bytes(counts, syms, a) + payload


def decode_bare(blob: bytes, alphabet_size: int, n: int) -> np.ndarray:
    """The ``n`` symbols of a bare stream over ``alphabet_size`` symbols (dtype as ``huffman.decode``).

    TruncatedError when the stream ends inside its table or its payload is too short for ``n`` codes; FormatError
    for a table the encoder could not have written, a payload that does not decode to ``n`` symbols or runs on
    past them, or nonzero padding bits."""
    a = _check_alphabet(alphabet_size)
    blob = bytes(blob)
    if not blob:
        raise TruncatedError("Huffman stream is empty: it lacks even its code-length byte")
    n_len = blob[0]
    if n_len > MAX_CODE_LEN:
        raise FormatError(f"Huffman stream declares code length {n_len} > {MAX_CODE_LEN}")
    cw, sw = _count_width(a), _symbol_width(a)
    pos = 1 + n_len * cw
    if len(blob) < pos:
        raise TruncatedError(f"Huffman stream ends inside its code-length table ({len(blob)} < {pos} bytes)")
    counts = np.frombuffer(blob, dtype=f"<u{cw}", count=n_len, offset=1).astype(np.int64)
    k = int(counts.sum())
    if k > a:
        raise FormatError(f"Huffman table lists {k} codes for an alphabet of {a} symbols")
    if len(blob) < pos + k * sw:
        raise TruncatedError(f"Huffman stream ends inside its symbol list ({len(blob)} < {pos + k * sw} bytes)")
    syms = np.frombuffer(blob, dtype=f"<u{sw}", count=k, offset=pos).astype(np.int64)
    pos += k * sw
    _check_table(counts, syms, a, n, None)
    payload = blob[pos:]
    if n == 0:
        if payload:
            raise FormatError(f"Huffman stream of no symbols has {len(payload)} payload bytes")
        return np.zeros(0, dtype=_out_dtype(a))
    shortest = int(np.flatnonzero(counts)[0]) + 1
    if 8 * len(payload) < n * shortest:
        raise TruncatedError(f"Huffman payload of {len(payload)} bytes cannot hold {n} codes of this table")
    if len(payload) > (n * n_len + 7) // 8:
        raise FormatError(f"Huffman payload of {len(payload)} bytes is longer than {n} codes of this table")
    ba = bitarray(endian="big")
    ba.frombytes(payload)
    out, used = decode_symbols(ba, [int(c) for c in counts], syms, a, n)
    if (used + 7) // 8 != len(payload):
        raise FormatError(f"Huffman payload has {len(payload) - (used + 7) // 8} bytes after its {n} codes")
    if ba[used:].any():
        raise FormatError("Huffman payload has non-zero padding bits")
    return out
