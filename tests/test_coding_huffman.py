"""Canonical Huffman blobs: round trips, the documented layout, and refusal of bad blobs."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from nncompress.coding import huffman
from nncompress.coding.huffman_stream import decode_bare, encode_bare
from nncompress.errors import ChecksumError, FormatError, TruncatedError, VersionError

KNOWN_FREQ = {0: 45, 1: 13, 2: 12, 3: 16, 4: 9, 5: 5}


def known_symbols() -> np.ndarray:
    syms = np.concatenate([np.full(c, s) for s, c in KNOWN_FREQ.items()])
    return np.random.default_rng(0).permutation(syms)


def make_blob(
    version: int,
    n_len: int,
    alphabet: int,
    n: int,
    bits: int,
    counts: list[int],
    syms: list[int],
    payload: bytes,
    cw: int = 1,
    sw: int = 1,
) -> bytes:
    """Assemble a blob from the documented layout, with a valid CRC."""
    body = (
        struct.pack("<BBIQQ", version, n_len, alphabet, n, bits)
        + b"".join(c.to_bytes(cw, "little") for c in counts)
        + b"".join(s.to_bytes(sw, "little") for s in syms)
        + payload
    )
    return body + struct.pack("<I", zlib.crc32(body))


def roundtrip(symbols: np.ndarray, alphabet: int) -> bytes:
    blob = huffman.encode(symbols, alphabet)
    out = huffman.decode(blob)
    assert out.dtype == (np.uint8 if alphabet <= 256 else np.uint16)
    np.testing.assert_array_equal(out, symbols)
    payload_bits, table_bytes = huffman.encoded_bits(symbols, alphabet)
    assert len(blob) == table_bytes + (payload_bits + 7) // 8
    assert payload_bits <= max(1, math.ceil(math.log2(alphabet))) * len(symbols)
    return blob


@pytest.mark.parametrize("alphabet", [1, 2, 3, 32, 255, 256, 257, 4096, 65536])
def test_roundtrip_uniform(alphabet: int) -> None:
    rng = np.random.default_rng(alphabet)
    roundtrip(rng.integers(0, alphabet, 5000), alphabet)


@pytest.mark.parametrize("p", [0.02, 0.3, 0.9])
def test_roundtrip_skewed(p: float) -> None:
    rng = np.random.default_rng(1)
    symbols = np.minimum(rng.geometric(p, 50_000) - 1, 31)
    blob = roundtrip(symbols, 32)
    if p == 0.9:  # highly skewed: well under the 5 bits of fixed width
        assert len(blob) * 8 < 2 * len(symbols)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.uint64, np.int64])
def test_input_dtypes(dtype: type) -> None:
    roundtrip(np.arange(20).astype(dtype) % 7, 7)


def test_edge_cases() -> None:
    empty = roundtrip(np.zeros(0, dtype=np.int64), 32)
    assert huffman.encoded_bits(np.zeros(0, dtype=np.int64), 32) == (0, len(empty))
    assert huffman.decode(huffman.encode(np.array([]), 1)).size == 0  # empty float input is fine
    roundtrip(np.array([3]), 4)
    roundtrip(np.array([0]), 1)
    same = roundtrip(np.full(1000, 9), 16)
    assert huffman.encoded_bits(np.full(1000, 9), 16)[0] == 1000  # lone symbol: 1 bit each
    assert len(same) < 200
    roundtrip(np.array([65535, 0, 65535]), 65536)
    roundtrip(np.array([1, 0, 1, 1]), 2)


def test_max_alphabet_all_symbols_used() -> None:
    rng = np.random.default_rng(2)
    symbols = rng.permutation(np.concatenate([np.arange(65536), rng.integers(0, 65536, 30_000)]))
    roundtrip(symbols, 65536)


def test_known_code_lengths() -> None:
    freq = np.array([KNOWN_FREQ[s] for s in range(6)])
    np.testing.assert_array_equal(huffman.code_lengths(freq), [1, 3, 3, 3, 4, 4])
    assert huffman.encoded_bits_from_freq(freq)[0] == 45 + 3 * (13 + 12 + 16) + 4 * (9 + 5)


def test_known_blob_layout() -> None:
    symbols = known_symbols()
    blob = huffman.encode(symbols, 6)
    bits = 45 + 3 * 41 + 4 * 14
    assert blob[:22] == struct.pack("<BBIQQ", 1, 4, 6, 100, bits)
    assert blob[22:26] == bytes([1, 0, 3, 2])  # codes of length 1, 2, 3, 4
    assert blob[26:32] == bytes([0, 1, 2, 3, 4, 5])  # canonical order
    # canonical codes: 0 -> 0, 1 -> 100, 2 -> 101, 3 -> 110, 4 -> 1110, 5 -> 1111
    code = {0: "0", 1: "100", 2: "101", 3: "110", 4: "1110", 5: "1111"}
    bitstr = "".join(code[int(s)] for s in symbols)
    bitstr += "0" * (-len(bitstr) % 8)
    assert blob[32:-4] == int(bitstr, 2).to_bytes(len(bitstr) // 8, "big")
    assert blob[-4:] == struct.pack("<I", zlib.crc32(blob[:-4]))


def test_tiny_blob_bytes() -> None:
    # {0: 2, 1: 1}: codes 0 -> "0", 1 -> "1"; payload "001" padded -> 0x20
    assert huffman.encode(np.array([0, 0, 1]), 2) == make_blob(1, 1, 2, 3, 3, [2], [0, 1], b"\x20")
    # a lone symbol gets the 1-bit code "0"
    assert huffman.encode(np.array([5, 5]), 6) == make_blob(1, 1, 6, 2, 2, [1], [5], b"\x00")
    assert huffman.encode(np.array([], dtype=np.int64), 3) == make_blob(1, 0, 3, 0, 0, [], [], b"")


def test_wide_table_fields() -> None:
    # alphabet 256: counts need 2 bytes (a count can be 256), symbols 1 byte
    blob = huffman.encode(np.arange(256), 256)
    assert blob[1] == 8 and len(blob) == 22 + 8 * 2 + 256 + 256 + 4
    assert blob[22 + 7 * 2 : 22 + 8 * 2] == (256).to_bytes(2, "little")
    # alphabet 65536: counts 4 bytes, symbols 2 bytes
    blob = huffman.encode(np.array([70, 65535, 65535]), 65536)
    assert blob[1] == 1 and blob[22:26] == bytes([2, 0, 0, 0])
    assert blob[26:30] == bytes([70, 0, 0xFF, 0xFF])


def test_length_limit_on_fibonacci_frequencies() -> None:
    fib = [1, 1]
    while len(fib) < 45:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman.code_lengths(np.array(fib))
    assert lengths.max() <= huffman.MAX_CODE_LEN
    assert np.sum(2.0**-lengths) == pytest.approx(1.0)  # still a complete prefix code


@pytest.mark.parametrize(
    "bad", [np.array([0, 4]), np.array([-1, 0]), np.array([0.0, 1.0]), np.array([[0, 1]]), np.array([True, False])]
)
def test_encode_rejects_bad_symbols(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        huffman.encode(bad, 4)
    with pytest.raises(ValueError):
        huffman.encoded_bits(bad, 4)


@pytest.mark.parametrize("alphabet", [0, -1, 65537, True, 2.0])
def test_encode_rejects_bad_alphabet(alphabet: object) -> None:
    with pytest.raises(ValueError):
        huffman.encode(np.array([0]), alphabet)  # type: ignore[arg-type]


def test_every_truncation_raises_truncated() -> None:
    blob = huffman.encode(known_symbols(), 6)
    for cut in range(len(blob)):
        with pytest.raises(TruncatedError):
            huffman.decode(blob[:cut])
    big = huffman.encode(np.random.default_rng(3).integers(0, 300, 2000), 300)
    for cut in (0, 10, 22, 23, len(big) // 2, len(big) - 5, len(big) - 1):
        with pytest.raises(TruncatedError):
            huffman.decode(big[:cut])


def test_trailing_bytes_rejected() -> None:
    blob = huffman.encode(known_symbols(), 6)
    with pytest.raises(FormatError):
        huffman.decode(blob + b"\x00")


def test_every_bit_flip_is_refused() -> None:
    blob = huffman.encode(np.array([0, 0, 1, 2, 0, 3, 3, 1, 0]), 4)
    for i in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                huffman.decode(bytes(bad))


def test_payload_corruption_hits_checksum() -> None:
    blob = bytearray(huffman.encode(known_symbols(), 6))
    blob[40] ^= 0x10
    with pytest.raises(ChecksumError):
        huffman.decode(bytes(blob))


@pytest.mark.parametrize(
    "blob",
    [
        make_blob(1, 1, 2, 3, 3, [2], [0, 1], b"\x21"),  # non-zero padding
        make_blob(1, 1, 2, 4, 3, [2], [0, 1], b"\x20"),  # more symbols than bits
        make_blob(1, 1, 2, 2, 3, [2], [0, 1], b"\x20"),  # bits left after n symbols
        make_blob(1, 2, 3, 3, 3, [1, 1], [0, 1], b"\x20"),  # incomplete code (Kraft < 1)
        make_blob(1, 1, 3, 3, 3, [3], [0, 1, 2], b"\x20"),  # over-full code (Kraft > 1)
        make_blob(1, 1, 2, 3, 3, [2], [1, 0], b"\x20"),  # not canonical order
        make_blob(1, 1, 2, 3, 3, [2], [0, 2], b"\x20"),  # symbol outside alphabet
        make_blob(1, 2, 3, 3, 5, [1, 2], [0, 0, 1], b"\x20"),  # symbol listed twice
        make_blob(1, 2, 3, 3, 3, [2, 0], [0, 1], b"\x20"),  # longest length has no code
        make_blob(1, 1, 2, 0, 0, [2], [0, 1], b""),  # no symbols but a table
        make_blob(1, 0, 2, 0, 8, [], [], b"\x00"),  # no symbols but a payload
        make_blob(1, 0, 2, 3, 3, [], [], b"\x20"),  # symbols but no table
        make_blob(1, 1, 2, 3, 9, [2], [0, 1], b"\x20\x00"),  # payload longer than n codes
        make_blob(1, 2, 3, 3, 3, [1, 2], [0, 1, 2], b"\xa0"),  # payload ends inside a code
        make_blob(1, 1, 1, 2, 2, [1], [0], b"\x40"),  # lone symbol, non-zero code
        make_blob(1, 1, 0, 1, 1, [1], [0], b"\x00"),  # alphabet size 0
        make_blob(1, 1, 65537, 1, 1, [1], [0], b"\x00", cw=4, sw=4),  # alphabet too large
        make_blob(1, 32, 2, 1, 1, [0] * 31 + [1], [0], b"\x00"),  # code longer than 31 bits
        make_blob(0, 1, 2, 3, 3, [2], [0, 1], b"\x20"),  # unknown old version
    ],
)
def test_inconsistent_blobs_raise_format_error(blob: bytes) -> None:
    with pytest.raises(FormatError):
        huffman.decode(blob)


def test_make_blob_matches_encoder() -> None:
    # the hand-built valid blob decodes; so the cases above fail for the reason named
    np.testing.assert_array_equal(huffman.decode(make_blob(1, 1, 2, 3, 3, [2], [0, 1], b"\x20")), [0, 0, 1])
    np.testing.assert_array_equal(huffman.decode(make_blob(1, 2, 3, 2, 3, [1, 2], [0, 1, 2], b"\x40")), [0, 1])


def test_newer_version_raises_version_error() -> None:
    with pytest.raises(VersionError):
        huffman.decode(make_blob(2, 1, 2, 3, 3, [2], [0, 1], b"\x20"))


def test_decode_accepts_bytes_like() -> None:
    blob = huffman.encode(np.array([1, 2, 3]), 4)
    np.testing.assert_array_equal(huffman.decode(bytearray(blob)), [1, 2, 3])
    np.testing.assert_array_equal(huffman.decode(memoryview(blob)), [1, 2, 3])


# ------------------------------------------------------------------ bare streams (format version 7)


@pytest.mark.parametrize(
    "symbols,alphabet",
    [
        (np.array([], dtype=np.int64), 5),
        (np.array([3] * 17), 5),  # one symbol: 17 one-bit codes, 3 payload bytes
        (np.array([0, 1, 1, 2, 2, 2, 2]), 3),
        (np.random.default_rng(1).integers(0, 300, 5000), 300),  # two-byte symbols
        (np.random.default_rng(2).geometric(0.3, 20000) - 1, 64),
    ],
)
def test_a_bare_stream_round_trips_and_is_the_blob_without_its_fields(symbols, alphabet) -> None:
    symbols = symbols[symbols < alphabet]
    bare = encode_bare(symbols, alphabet)
    assert np.array_equal(decode_bare(bare, alphabet, len(symbols)), symbols)
    blob = huffman.encode(symbols, alphabet)
    assert len(blob) - len(bare) == 25  # version, alphabet, n, bits and CRC gone; the code length stays
    assert bare == blob[1:2] + blob[22:-4]
    bits, table = huffman.encoded_bits(symbols, alphabet, bare=True)
    assert len(bare) == table + (bits + 7) // 8


def test_a_bare_stream_that_lies_is_refused() -> None:
    symbols = np.array([0, 1, 1, 2, 2, 2, 2, 0, 1])
    bare = encode_bare(symbols, 3)
    assert decode_bare(bare, 3, 9).tolist() == symbols.tolist()
    cases = [
        (b"", 9, TruncatedError, "empty"),
        (bytes([32]) + bare[1:], 9, FormatError, "code length 32"),
        (bare[:2], 9, TruncatedError, "code-length table"),
        (bare[:4], 9, TruncatedError, "symbol list"),
        (bare + b"\x00", 9, FormatError, "longer than|after its"),
        (bare[:-1], 9, FormatError, "cannot hold|does not decode"),
        (bare, 12, FormatError, "does not decode"),  # 14 bits of codes, 2 of padding: 11 would read
        (bare, 4, FormatError, "longer than 4 codes"),
        (bare[:-1] + bytes([bare[-1] | 1]), 9, FormatError, "padding"),
        (bare, 0, FormatError, "no symbols"),
        (b"\x00\x00", 0, FormatError, "payload bytes"),
    ]
    for stream, n, error, match in cases:
        with pytest.raises(error, match=match):
            decode_bare(stream, 3, n)
    assert decode_bare(b"\x00", 3, 0).tolist() == []
