"""Strict reader for IDX files, the format MNIST and Fashion-MNIST ship in.

The reader is strict on purpose: a truncated download or a file with extra
bytes must fail loudly with the file's path instead of producing a silently
misaligned data set.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from nncompress.errors import DataError

__all__ = ["read_idx", "IDX_DTYPES"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype (the format stores multi-byte values MSB first).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def _read_bytes(path: Path) -> bytes:
    """Return the file's (decompressed) contents; gzip is detected by suffix or magic bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc.strerror or exc}") from exc
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataError(
                f"{path}: corrupt or truncated gzip stream ({exc}); re-download or re-install the file"
            ) from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian numpy array of its dimensions.

    Raises DataError naming the file and the problem for any malformed input.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, an IDX file needs at least 4")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: wrong magic 0x{magic:08x}: expected 0x0803 or 0x0801 "
            "(first two bytes zero, then type and rank); not an IDX file?"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        supported = ", ".join(f"0x{c:02x} {n}" for c, n in _TYPE_NAMES.items())
        raise DataError(
            f"{path}: wrong magic 0x{magic:08x}: unsupported IDX type code 0x{type_code:02x} "
            f"(supported: {supported})"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: wrong magic 0x{magic:08x}: unsupported number of dimensions {ndim} (expected 1..4)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated header: {len(data)} bytes, expected {header_len} for {ndim} dimension sizes"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise DataError(
            f"{path}: truncated: payload is {actual} bytes but dims {dims} need {expected}; "
            "the file is incomplete, re-download it"
        )
    if actual > expected:
        raise DataError(
            f"{path}: trailing bytes: {actual - expected} bytes after the {expected}-byte payload "
            f"that dims {dims} describe"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # astype copies into a writable, native-endian array (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)
