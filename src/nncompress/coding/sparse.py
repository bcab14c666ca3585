"""Relative-index coding of sparse weight positions, with Deep Compression fillers.

A pruned layer stores, for each nonzero weight, the number of zeros skipped
since the previous stored entry (its relative index) in ``bits`` bits. A gap
that does not fit is bridged by filler entries: each filler has the largest
relative index ``2**bits - 1`` and takes one position itself, decoding as a
zero weight. So a gap ``g`` becomes ``g // 2**bits`` fillers followed by one
real entry with relative index ``g % 2**bits``. Every stored entry, filler or
real, also has one codebook index in the value stream; fillers carry a
reserved ``filler_symbol`` there, which is how a decoder tells them apart.

Everything is vectorised numpy: there is no Python loop per entry.
"""

from __future__ import annotations

import numpy as np

from nncompress.coding.schema import MAX_REL_BITS
from nncompress.errors import FormatError

__all__ = [
    "from_relative",
    "gaps",
    "merge_values",
    "split_values",
    "to_relative",
]


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an int, got {type(bits).__name__}")
    b = int(bits)
    if not 1 <= b <= MAX_REL_BITS:
        raise ValueError(f"bits must be in 1..{MAX_REL_BITS}, got {b}")
    return b


def _rel_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each position; ValueError unless sorted, unique, >= 0."""
    pos = np.asarray(positions)
    if pos.ndim != 1:
        raise ValueError(f"positions must be a 1-D array, got shape {pos.shape}")
    if pos.size == 0:
        return np.zeros(0, dtype=np.int64)
    if pos.dtype == np.bool_ or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"positions must have an integer dtype, got {pos.dtype}")
    pos = pos.astype(np.int64, copy=False)
    if pos[0] < 0:
        raise ValueError(f"positions must be non-negative, got {int(pos[0])}")
    skipped = np.diff(pos, prepend=-1) - 1
    if np.any(skipped < 0):
        raise ValueError("positions must be strictly increasing (sorted, no duplicates)")
    return skipped


def to_relative(positions: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative indices of sorted flat positions, with filler entries inserted.

    Returns ``(rel, is_filler)``, one element per stored entry. ``rel`` has the
    narrowest unsigned dtype holding ``2**bits - 1`` (uint8 or uint16);
    ``is_filler`` is bool. Raises ValueError for unsorted, duplicate or
    negative positions, or ``bits`` outside 1..16.
    """
    b = _check_bits(bits)
    skipped = gaps(positions)
    m = 1 << b
    fillers = skipped >> b
    real_at = np.cumsum(fillers + 1) - 1  # index of each real entry in the output
    total = int(real_at[-1]) + 1 if len(real_at) else 0
    rel = np.full(total, m - 1, dtype=_rel_dtype(b))
    rel[real_at] = skipped & (m - 1)
    is_filler = np.ones(total, dtype=bool)
    is_filler[real_at] = False
    return rel, is_filler


def _check_entries(rel: np.ndarray, is_filler: np.ndarray, bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """FormatError unless (rel, is_filler) is what :func:`to_relative` could emit."""
    rel = np.asarray(rel)
    flags = np.asarray(is_filler)
    if rel.ndim != 1 or flags.shape != rel.shape:
        raise FormatError(
            f"relative indices {rel.shape} and filler flags {flags.shape} must be 1-D arrays of one length"
        )
    if rel.size and (rel.dtype == np.bool_ or not np.issubdtype(rel.dtype, np.integer)):
        raise FormatError(f"relative indices must be integers, got {rel.dtype}")
    if flags.dtype != np.bool_:
        raise FormatError(f"filler flags must be bool, got {flags.dtype}")
    rel = rel.astype(np.int64, copy=False)
    if rel.size == 0:
        return rel, flags
    if rel.min() < 0:
        raise FormatError("relative indices must be non-negative")
    if flags[-1]:
        raise FormatError("the last stored entry is a filler; a filler must precede a real entry")
    if bits is not None:
        m = 1 << _check_bits(bits)
        if rel.max() >= m:
            raise FormatError(f"relative index {int(rel.max())} does not fit in {bits} bits")
        if np.any(rel[flags] != m - 1):
            raise FormatError(f"a filler entry has a relative index other than {m - 1}")
    return rel, flags


def from_relative(
    rel: np.ndarray, is_filler: np.ndarray, *, bits: int | None = None, size: int | None = None
) -> np.ndarray:
    """Positions (int64) of the real entries: the inverse of :func:`to_relative`.

    Each entry sits ``rel + 1`` positions after the previous one. With ``bits``,
    also checks relative indices fit and fillers carry ``2**bits - 1``; with
    ``size``, checks every position is below it. Raises FormatError for any
    inconsistency (these arrays come from a file).
    """
    rel, flags = _check_entries(rel, is_filler, bits)
    at = np.cumsum(rel + 1) - 1
    pos = at[~flags]
    if size is not None and pos.size and pos[-1] >= size:
        raise FormatError(f"position {int(pos[-1])} lies beyond the layer's {size} weights")
    return pos


def merge_values(symbols: np.ndarray, is_filler: np.ndarray, filler_symbol: int) -> np.ndarray:
    """The value stream: ``symbols`` at real entries, ``filler_symbol`` at fillers.

    The dtype widens if needed to hold ``filler_symbol`` (e.g. uint8 codebook
    indices with filler 256 give uint16). Raises ValueError when the lengths do
    not match or a real symbol equals ``filler_symbol`` (it would decode as a
    filler).
    """
    sym = np.asarray(symbols)
    flags = np.asarray(is_filler, dtype=bool)
    if sym.ndim != 1 or flags.ndim != 1:
        raise ValueError("symbols and is_filler must be 1-D arrays")
    if isinstance(filler_symbol, bool) or not isinstance(filler_symbol, (int, np.integer)) or filler_symbol < 0:
        raise ValueError(f"filler_symbol must be a non-negative int, got {filler_symbol!r}")
    n_real = int(np.count_nonzero(~flags))
    if len(sym) != n_real:
        raise ValueError(f"{len(sym)} symbols for {n_real} real entries")
    if np.any(sym == filler_symbol):
        raise ValueError(f"a real symbol equals filler_symbol {filler_symbol}")
    dtype = np.result_type(sym.dtype if sym.size else np.uint8, np.min_scalar_type(filler_symbol))
    out = np.full(len(flags), filler_symbol, dtype=dtype)
    out[~flags] = sym
    return out


def split_values(
    values: np.ndarray, filler_symbol: int, *, rel: np.ndarray | None = None, bits: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Undo :func:`merge_values`: ``(symbols of real entries, is_filler)``.

    Filler flags are derived from the value stream. Given the decoded relative
    indices ``rel`` (and ``bits``), they are checked against it: same number of
    entries, no trailing filler, fillers carry ``2**bits - 1``. Raises
    FormatError if not.
    """
    vals = np.asarray(values)
    if vals.ndim != 1:
        raise FormatError(f"value stream must be 1-D, got shape {vals.shape}")
    flags = vals == filler_symbol
    if rel is not None:
        _check_entries(rel, flags, bits)
    elif bits is not None:
        raise ValueError("bits needs rel to check against")
    return vals[~flags], flags
