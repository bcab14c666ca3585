"""Strict reader for IDX files, the format MNIST and Fashion-MNIST ship in.

The reader is strict on purpose: a truncated download or a file with extra
bytes must fail loudly with the file's path instead of producing a silently
misaligned data set.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from nncompress.errors import DataError
from nncompress.paths import open_input

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


MAX_GZIP_RATIO = 1100
"""Deflate expands at most about 1032:1, so a gzip stream of n bytes holds at most about 1100 n bytes:
a header claiming more is refused before anything is decompressed."""
TRAILING_WINDOW = 1 << 20
"""Bytes after the payload that are counted for the error message; more are not decompressed."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian numpy array of its dimensions.

    The header is read first and says how many bytes must follow; only that many are read (a plain
    file's size is checked before reading, a gzip stream is decompressed no further than the payload
    and a small window after it), so a gzip bomb or a huge file is refused without being read.
    Raises DataError naming the file and the problem for any malformed input.
    """
    path = Path(path)
    with open_input(path, str(path), DataError) as handle:
        size = os.fstat(handle.fileno()).st_size
        gz = path.suffix == ".gz" or handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        if not gz:
            return _read_payload(path, handle, size, None)
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                return _read_payload(path, stream, None, size)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataError(
                f"{path}: corrupt or truncated gzip stream ({exc}); re-download or re-install the file"
            ) from exc


class _Stream(Protocol):
    """What the reader needs of a file or of a gzip stream over one."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> Optional[int]: ...


def _read_exact(stream: _Stream, buf: memoryview) -> int:
    """Fill ``buf`` from ``stream``; the number of bytes read (short only at the end of the stream)."""
    done = 0
    while done < len(buf):
        n = stream.readinto(buf[done:])
        if not n:
            break
        done += n
    return done


def _read_payload(path: Path, stream: _Stream, plain_size: int | None, gzip_size: int | None) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: truncated header: {len(head)} bytes, an IDX file needs at least 4")
    magic = int.from_bytes(head, "big")
    if head[0] != 0 or head[1] != 0:
        raise DataError(
            f"{path}: wrong magic 0x{magic:08x}: expected 0x0803 or 0x0801 "
            "(first two bytes zero, then type and rank); not an IDX file?"
        )
    type_code, ndim = head[2], head[3]
    if type_code not in IDX_DTYPES:
        supported = ", ".join(f"0x{c:02x} {n}" for c, n in _TYPE_NAMES.items())
        raise DataError(
            f"{path}: wrong magic 0x{magic:08x}: unsupported IDX type code 0x{type_code:02x} (supported: {supported})"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: wrong magic 0x{magic:08x}: unsupported number of dimensions {ndim} (expected 1..4)")
    header_len = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(
            f"{path}: truncated header: {4 + len(sizes)} bytes, expected {header_len} for {ndim} dimension sizes"
        )
    dims = tuple(int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    if plain_size is not None and plain_size - header_len != expected:
        _wrong_length(path, plain_size - header_len, expected, dims)
    if gzip_size is not None and expected > MAX_GZIP_RATIO * gzip_size + (1 << 16):
        raise DataError(
            f"{path}: the header's dims {dims} need {expected:,} bytes, more than a {gzip_size:,}-byte gzip stream "
            "can hold: the file is damaged or not an IDX file"
        )
    payload = np.empty(count, dtype=dtype)
    got = _read_exact(stream, payload.view(np.uint8).data)
    if got < expected:
        _wrong_length(path, got, expected, dims)
    trailing = len(stream.read(TRAILING_WINDOW + 1))
    if trailing:
        more = f"more than {TRAILING_WINDOW:,}" if trailing > TRAILING_WINDOW else str(trailing)
        raise DataError(
            f"{path}: trailing bytes: {more} bytes after the {expected}-byte payload that dims {dims} describe"
        )
    # astype copies into a native-endian array
    return payload.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def _wrong_length(path: Path, actual: int, expected: int, dims: tuple[int, ...]) -> None:
    if actual < expected:
        raise DataError(
            f"{path}: truncated: payload is {actual} bytes but dims {dims} need {expected}; "
            "the file is incomplete, re-download it"
        )
    raise DataError(
        f"{path}: trailing bytes: {actual - expected} bytes after the {expected}-byte payload that dims {dims} describe"
    )
