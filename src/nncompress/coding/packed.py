"""Fixed-width codebook indices packed into bits, most significant first (the ``packed`` index layout)."""

from __future__ import annotations

import numpy as np

from nncompress.errors import FormatError


def index_width(k: int) -> int:
    """Bits of one fixed-width codebook index (0 for a codebook of at most one entry)."""
    return max(0, int(k) - 1).bit_length()


#: indices packed or unpacked at a time (a multiple of 8, so every chunk ends on a byte)
_CHUNK = 1 << 20


def _pack_indices(indices: np.ndarray, width: int) -> bytes:
    """Fixed-width indices, most significant bit first, the last byte zero padded."""
    if width == 0 or len(indices) == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint16)
    idx = np.asarray(indices).astype(np.uint16)  # codebooks have at most 2**15 entries
    parts = [
        ((idx[i : i + _CHUNK, None] >> shifts) & 1).astype(np.uint8).reshape(-1) for i in range(0, len(idx), _CHUNK)
    ]
    return np.packbits(np.concatenate(parts)).tobytes()


def _unpack_indices(data: bytes, n: int, width: int) -> np.ndarray:
    if len(data) != (n * width + 7) // 8:
        raise FormatError(
            f"{len(data)} bytes of packed indices, expected {(n * width + 7) // 8} for {n} indices of {width} bits"
        )
    if width == 0:
        return np.zeros(n, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[n * width :].any():
        raise FormatError("packed indices have nonzero padding bits")
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    for i in range(0, n, _CHUNK):
        m = min(_CHUNK, n - i)
        out[i : i + m] = bits[i * width : (i + m) * width].reshape(m, width) @ weights
    return out
