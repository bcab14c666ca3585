"""The compressed model file: a checksummed JSON header followed by named byte sections.

The container knows nothing about weights; codecs (written elsewhere) turn layers into
section bytes and back. What it guarantees is that a reader either gets back exactly
the header and sections that were written, or a ``FormatError`` subclass saying what is
wrong -- never wrong bytes and never an unrelated exception. FORMAT.md is the normative
byte-level spec; this module must agree with it.

Reading order of checks (each failure gets its own error type):
magic -> version -> header length -> enough bytes for the header -> header CRC ->
inflating the header (version 5 on) -> header JSON (UTF-8, object, canonical) ->
section table layout -> data area length -> section CRCs (from version 7 on, one CRC of the
data area). The version is checked right
after the magic, before the CRC, so a file from a newer writer says "upgrade" even if
a newer writer changed everything after it. The header CRC is checked before the header
is inflated or parsed, so corrupt bytes never reach zlib or the parser.

Only struct, json and zlib are used to read: no pickle, nothing that executes data.

Writing is here; reading is ``container_read``, and what both share (constants,
``Container``, ``SectionEntry``, the canonical header encoding) ``container_format``;
every public name is importable from here.
"""

from __future__ import annotations

import numbers
import os
import zlib
from typing import Any, Iterable, Mapping, Sequence

from nncompress.atomic import atomic_open
from nncompress.coding.container_format import (
    _U32,
    DEFAULT_WRITE_VERSION,
    FORMAT_VERSION,
    INT_MAX,
    INT_MIN,
    MAGIC,
    MAX_HEADER_BYTES,
    MIN_READ_VERSION,
    PAIR_TABLE_VERSION,
    RESERVED_KEYS,
    Container,
    SectionEntry,
    _canonical_json,
    _stored_header,
)
from nncompress.coding.container_read import loads, read_container, read_header
from nncompress.errors import FormatError, LayoutError
from nncompress.plain import is_int

# Defined beside its kin, importable from here as before.
from nncompress.coding.container_format import MAX_HEADER_DEPTH as MAX_HEADER_DEPTH

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MIN_READ_VERSION",
    "DEFAULT_WRITE_VERSION",
    "MAX_HEADER_BYTES",
    "RESERVED_KEYS",
    "Container",
    "SectionEntry",
    "dumps",
    "loads",
    "write_container",
    "read_container",
    "read_header",
]


def _normalize(value: Any, where: str) -> Any:
    """A JSON-safe copy of a header value, so that what is read back equals what was
    meant; numpy scalars become Python numbers, tuples become lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        if not INT_MIN <= int(value) <= INT_MAX:
            raise FormatError(f"header value at {where} is {int(value)}, outside the signed 64-bit range")
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if f != f or f in (float("inf"), float("-inf")):
            raise FormatError(f"header value at {where} is {f}; JSON has no NaN/Infinity")
        return f
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FormatError(f"header key {k!r} at {where} is not a string")
            out[k] = _normalize(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise FormatError(f"header value at {where} has type {type(value).__name__}, which JSON cannot hold")


def _check_sections(sections: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for i, item in enumerate(sections):
        try:
            name, blob = item
        except (TypeError, ValueError):
            raise LayoutError(f"section #{i} is not a (name, bytes) pair") from None
        if not isinstance(name, str) or not name:
            raise LayoutError(f"section #{i} name {name!r} is not a non-empty string")
        if name in seen:
            raise LayoutError(f"section name {name!r} is used twice")
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise LayoutError(f"section {name!r} holds {type(blob).__name__}, not bytes")
        seen.add(name)
        out.append((name, bytes(blob)))
    return out


def _table(blobs: list[tuple[str, bytes]], version: int) -> dict[str, Any]:
    """The container's own header keys for these sections in a file of ``version``."""
    if version >= PAIR_TABLE_VERSION:
        crc = 0
        for _, blob in blobs:
            crc = zlib.crc32(blob, crc)
        return {"sections": [[name, len(blob)] for name, blob in blobs], "data_crc32": crc}
    table = []
    offset = 0
    for name, blob in blobs:
        table.append({"name": name, "offset": offset, "length": len(blob), "crc32": zlib.crc32(blob)})
        offset += len(blob)
    return {"sections": table, "data_bytes": offset}


def _encode(
    header: Mapping[str, Any], sections: Iterable[tuple[str, bytes]], version: int = DEFAULT_WRITE_VERSION
) -> tuple[bytes, list[bytes]]:
    """Everything before the data area, and the section blobs that follow it."""
    if not is_int(version) or not MIN_READ_VERSION <= version <= FORMAT_VERSION:
        raise FormatError(
            f"cannot write format version {version!r}; this writer knows {MIN_READ_VERSION}..{FORMAT_VERSION}"
        )
    if not isinstance(header, Mapping):
        raise FormatError(f"header must be a dict, not {type(header).__name__}")
    clash = RESERVED_KEYS.intersection(header)
    if clash:
        raise FormatError(f"header keys {sorted(clash)} are reserved for the container")
    full = _normalize(header, "header")
    blobs = _check_sections(sections)
    full.update(_table(blobs, version))
    text = _canonical_json(full)
    if len(text) > MAX_HEADER_BYTES:
        raise FormatError(f"header is {len(text)} bytes; the limit is {MAX_HEADER_BYTES}")
    stored = _stored_header(text, version)
    crc_input = _U32.pack(version) + _U32.pack(len(stored)) + stored
    prefix = MAGIC + crc_input + _U32.pack(zlib.crc32(crc_input))
    return prefix, [blob for _, blob in blobs]


def dumps(
    header: Mapping[str, Any], sections: Sequence[tuple[str, bytes]], version: int = DEFAULT_WRITE_VERSION
) -> bytes:
    """Encode a container to bytes; the same header and sections always give the same bytes."""
    prefix, blobs = _encode(header, sections, version)
    return b"".join([prefix, *blobs])


def write_container(
    path: str | os.PathLike[str],
    header: Mapping[str, Any],
    sections: Sequence[tuple[str, bytes]],
    version: int = DEFAULT_WRITE_VERSION,
) -> int:
    """Write a container atomically (a crash leaves the old file or none, never half a
    file); returns the file size in bytes."""
    prefix, blobs = _encode(header, sections, version)
    size = len(prefix)
    with atomic_open(path, "wb") as handle:
        handle.write(prefix)
        for blob in blobs:  # no joined copy: sections can be most of a model's size
            handle.write(blob)
            size += len(blob)
    return size
