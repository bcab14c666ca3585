"""Relative-index position coding with filler entries (Deep Compression, fig. 2)."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.coding import huffman, sparse
from nncompress.errors import FormatError


def random_positions(size: int, density: float, seed: int) -> np.ndarray:
    return np.flatnonzero(np.random.default_rng(seed).random(size) < density)


def assert_rel(positions: list[int], bits: int, rel: list[int], filler: list[bool]) -> None:
    got_rel, got_filler = sparse.to_relative(np.array(positions, dtype=np.int64), bits)
    np.testing.assert_array_equal(got_rel, rel)
    np.testing.assert_array_equal(got_filler, filler)
    assert got_filler.dtype == np.bool_
    back = sparse.from_relative(got_rel, got_filler, bits=bits)
    np.testing.assert_array_equal(back, positions)
    assert back.dtype == np.int64


def test_worked_example_bits3() -> None:
    # gaps 0, 2, 16; 16 zeros = 2 fillers of 8 positions each (7 zeros + the filler
    # itself, at 11 and 19) then the real entry at 20 with rel 0
    assert_rel([0, 3, 20], 3, [0, 2, 7, 7, 0], [False, False, True, True, False])


def test_worked_gap_boundaries_bits3() -> None:
    assert_rel([7], 3, [7], [False])  # gap 7 fits
    assert_rel([8], 3, [7, 0], [True, False])  # gap 8: filler at 7
    assert_rel([15], 3, [7, 7], [True, False])  # gap 15: filler at 7, entry rel 7
    assert_rel([16], 3, [7, 7, 0], [True, True, False])  # gap 16: fillers at 7 and 15
    assert_rel([1, 4, 13], 3, [1, 2, 7, 0], [False, False, True, False])
    assert_rel([0, 1, 2], 1, [0, 0, 0], [False, False, False])
    assert_rel([5], 1, [1, 1, 1], [True, True, False])  # fillers at 1 and 3, entry at 5


def test_gap_over_bound_needs_one_filler() -> None:
    # as in Han et al. 2016 fig. 2: with 3-bit indices a gap over 7 needs a filler zero
    positions = [1, 4, 15]  # gaps 1, 2, 10 -> 10 = 8 + 2: filler at 12, entry at 15
    assert_rel(positions, 3, [1, 2, 7, 2], [False, False, True, False])


def test_dtypes_and_empty() -> None:
    rel, filler = sparse.to_relative(np.zeros(0, dtype=np.int64), 4)
    assert rel.shape == filler.shape == (0,)
    assert sparse.from_relative(rel, filler, bits=4).shape == (0,)
    assert sparse.to_relative(np.array([3]), 8)[0].dtype == np.uint8
    assert sparse.to_relative(np.array([3]), 9)[0].dtype == np.uint16
    rel, filler = sparse.to_relative(np.array([70_000]), 16)
    np.testing.assert_array_equal(rel, [65535, 70_000 - 65536])


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 12, 16])
@pytest.mark.parametrize("density", [0.002, 0.04, 0.5, 1.0])
def test_roundtrip_random(bits: int, density: float) -> None:
    pos = random_positions(50_000, density, seed=bits)
    rel, filler = sparse.to_relative(pos, bits)
    assert rel.max(initial=0) < 2**bits
    assert np.all(rel[filler] == 2**bits - 1)
    np.testing.assert_array_equal(sparse.from_relative(rel, filler, bits=bits, size=50_000), pos)
    # every stored entry occupies one position: the last real entry is at sum(rel + 1) - 1
    if pos.size:
        assert int(np.sum(rel.astype(np.int64) + 1)) - 1 == pos[-1]


def test_huge_gap() -> None:
    rel, filler = sparse.to_relative(np.array([0, 1_000_000]), 2)
    assert filler.sum() == 999_999 // 4 and rel[-1] == 999_999 % 4
    np.testing.assert_array_equal(sparse.from_relative(rel, filler, bits=2), [0, 1_000_000])


@pytest.mark.parametrize("positions", [[3, 1], [1, 1], [-1, 2], [[0, 1]], [0.0, 1.0], [True]])
def test_to_relative_rejects_bad_positions(positions: list) -> None:
    with pytest.raises(ValueError):
        sparse.to_relative(np.array(positions), 4)


@pytest.mark.parametrize("bits", [0, 17, -3, True, 4.0])
def test_to_relative_rejects_bad_bits(bits: object) -> None:
    with pytest.raises(ValueError):
        sparse.to_relative(np.array([1, 2]), bits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rel, filler, bits, size",
    [
        ([0, 7], [False, True], 3, None),  # trailing filler
        ([0, 6, 0], [False, True, False], 3, None),  # filler without the largest index
        ([8], [False], 3, None),  # index does not fit in 3 bits
        ([-1, 2], [False, False], None, None),  # negative index
        ([0, 1], [False], None, None),  # length mismatch
        ([0, 1], [0, 0], None, None),  # flags not bool
        ([0.5], [False], None, None),  # non-integer index
        ([3, 4], [False, False], 3, 8),  # positions 3 and 8 in an 8-weight layer
    ],
)
def test_from_relative_rejects_inconsistent(rel: list, filler: list, bits: int | None, size: int | None) -> None:
    with pytest.raises(FormatError):
        sparse.from_relative(np.array(rel), np.array(filler), bits=bits, size=size)


def test_from_relative_size_bound() -> None:
    rel, filler = np.array([3, 4]), np.array([False, False])
    np.testing.assert_array_equal(sparse.from_relative(rel, filler, bits=3, size=9), [3, 8])


def test_merge_split_values() -> None:
    rel, filler = sparse.to_relative(np.array([0, 3, 20]), 3)
    symbols = np.array([4, 1, 2], dtype=np.uint8)
    values = sparse.merge_values(symbols, filler, 32)
    np.testing.assert_array_equal(values, [4, 1, 32, 32, 2])
    got, flags = sparse.split_values(values, 32, rel=rel, bits=3)
    np.testing.assert_array_equal(got, symbols)
    np.testing.assert_array_equal(flags, filler)
    # the value dtype widens to hold the filler symbol
    assert sparse.merge_values(np.array([255], dtype=np.uint8), np.array([True, False]), 256).dtype == np.uint16
    empty = sparse.merge_values(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=bool), 5)
    assert empty.shape == (0,)


def test_merge_values_rejects_bad_input() -> None:
    filler = np.array([False, True, False])
    with pytest.raises(ValueError):
        sparse.merge_values(np.array([1, 2, 3]), filler, 9)  # one symbol too many
    with pytest.raises(ValueError):
        sparse.merge_values(np.array([1, 9]), filler, 9)  # real symbol == filler symbol
    with pytest.raises(ValueError):
        sparse.merge_values(np.array([1, 2]), filler, -1)


def test_split_values_checks_consistency() -> None:
    rel = np.array([0, 2, 7, 7, 0], dtype=np.uint8)
    with pytest.raises(FormatError):  # entry 1 (rel 2) flagged as filler by the value stream
        sparse.split_values(np.array([4, 32, 32, 32, 2]), 32, rel=rel, bits=3)
    with pytest.raises(FormatError):  # value stream ends with a filler
        sparse.split_values(np.array([4, 1, 32, 32, 32]), 32, rel=rel, bits=3)
    with pytest.raises(FormatError):  # streams of different length
        sparse.split_values(np.array([4, 1, 32, 32]), 32, rel=rel, bits=3)


def test_full_stream_roundtrip() -> None:
    """Positions + codebook indices -> two Huffman blobs -> the same dense layer."""
    rng = np.random.default_rng(7)
    size, k, bits = 20_000, 16, 5
    pos = random_positions(size, 0.04, seed=7)
    idx = rng.integers(0, k, pos.size)
    rel, filler = sparse.to_relative(pos, bits)
    values = sparse.merge_values(idx, filler, k)
    rel_blob, val_blob = huffman.encode(rel, 2**bits), huffman.encode(values, k + 1)

    got_rel, got_vals = huffman.decode(rel_blob), huffman.decode(val_blob)
    got_idx, got_filler = sparse.split_values(got_vals, k, rel=got_rel, bits=bits)
    got_pos = sparse.from_relative(got_rel, got_filler, bits=bits, size=size)
    dense, back = np.full(size, -1), np.full(size, -1)
    dense[pos], back[got_pos] = idx, got_idx
    np.testing.assert_array_equal(back, dense)
