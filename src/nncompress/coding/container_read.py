"""Reading a container: every check of FORMAT.md, in order, each failure its own ``FormatError`` subclass.

The order and why is in ``nncompress.coding.container``'s docstring. Only
struct, json and zlib are used: no pickle, nothing that executes data.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any, Callable

from nncompress.coding.container_format import (
    _ENTRY_KEYS,
    _PREFIX,
    _U32,
    _U32_MAX,
    DEFLATED_HEADER_VERSION,
    FORMAT_VERSION,
    INT_MAX,
    INT_MIN,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_HEADER_DEPTH,
    MIN_READ_VERSION,
    PAIR_TABLE_VERSION,
    Container,
    SectionEntry,
    _canonical_json,
    owned_keys,
)
from nncompress.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LayoutError,
    TruncatedError,
    VersionError,
)
from nncompress.paths import open_input
from nncompress.plain import is_int


def _reject_constant(name: str) -> Any:
    raise FormatError(f"header JSON holds {name}, which the format does not allow")


def _check_values(obj: Any) -> None:
    """Every value within the format's ranges: integers signed 64-bit, numbers finite,
    strings valid Unicode, nesting at most MAX_HEADER_DEPTH (walked without recursion)."""
    stack: list[tuple[Any, str, int]] = [(obj, "header", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_HEADER_DEPTH:
            raise FormatError(f"header nests deeper than {MAX_HEADER_DEPTH} levels (at {where[:200]})")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise FormatError(f"header value at {where[:200]} is an integer outside the signed 64-bit range")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise FormatError(f"header value at {where[:200]} is not a finite number")
        elif isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_text(k, where)
                stack.append((v, f"{where}.{k[:60]}", depth + 1))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(
            f"header string at {where[:200]} holds an unpaired surrogate escape, which is not text"
        ) from None


def _parse_header(text: bytes) -> dict[str, Any]:
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(decoded, parse_constant=_reject_constant)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise FormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"header JSON is a {type(obj).__name__}, not an object")
    _check_values(obj)
    try:
        canonical = _canonical_json(obj)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"header JSON cannot be re-encoded: {exc}") from None
    if canonical != text:
        # One valid byte string per container: no duplicate keys, whitespace, escapes
        # or number spellings that the writer would not have produced.
        raise FormatError("header JSON is not in canonical form (sorted keys, no whitespace)")
    return obj


def _inflate(stored: bytes) -> bytes:
    """A version 5 header's JSON from its zlib stream: one whole stream, nothing after it, at most
    ``MAX_HEADER_BYTES`` inflated (inflating stops there, so a small stream cannot fill memory)."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(stored, MAX_HEADER_BYTES + 1)
    except zlib.error as exc:
        raise FormatError(f"header is not a valid zlib stream ({exc})") from None
    if len(text) > MAX_HEADER_BYTES:
        raise FormatError(f"header inflates to more than {MAX_HEADER_BYTES} bytes, the limit")
    if not inflater.eof:
        raise FormatError("header's zlib stream ends early: the header is cut short")
    if inflater.unused_data:
        raise FormatError(f"header has {len(inflater.unused_data)} bytes after its zlib stream")
    return text


def _parse_table(obj: dict[str, Any], version: int) -> tuple[tuple[SectionEntry, ...], int]:
    """Check that the section table tiles the data area exactly, in order."""
    if version >= PAIR_TABLE_VERSION:
        return _parse_pairs(obj)
    table, total = _table_and(obj, "data_bytes", "total", lambda v: is_int(v) and v >= 0, "a non-negative integer")
    entries: list[SectionEntry] = []
    seen: set[str] = set()
    cursor = 0
    for i, row in enumerate(table):
        if not isinstance(row, dict) or set(row) != _ENTRY_KEYS:
            raise LayoutError(f"section #{i} must be an object with exactly {sorted(_ENTRY_KEYS)}")
        name, offset, length, crc = row["name"], row["offset"], row["length"], row["crc32"]
        _check_name(name, i, seen)
        for key, v in (("offset", offset), ("length", length)):
            if not is_int(v) or v < 0:
                raise LayoutError(f"section {name!r} {key} is {v!r}, not a non-negative integer")
        if not is_int(crc) or not 0 <= crc <= _U32_MAX:
            raise LayoutError(f"section {name!r} crc32 is {crc!r}, not an unsigned 32-bit integer")
        if offset < cursor:
            raise LayoutError(f"section {name!r} at offset {offset} overlaps the previous one (ends at {cursor})")
        if offset > cursor:
            raise LayoutError(f"section {name!r} at offset {offset} leaves a gap after byte {cursor}")
        cursor = offset + length
        if cursor > total:
            raise LayoutError(f"section {name!r} ends at {cursor}, beyond the data area of {total} bytes")
        entries.append(SectionEntry(name, offset, length, crc))
    if cursor != total:
        raise LayoutError(f"sections cover {cursor} bytes but the header declares data_bytes={total}")
    return tuple(entries), total


def _table_and(obj: dict[str, Any], key: str, noun: str, valid: Callable[[Any], bool], kind: str) -> tuple[list, Any]:
    """The header's section list and the container key beside it (``data_bytes`` or ``data_crc32``), checked."""
    if "sections" not in obj or key not in obj:
        raise LayoutError(f"header lacks the 'sections' list or the {key!r} {noun}")
    table, value = obj["sections"], obj[key]
    if not valid(value):
        raise LayoutError(f"header {key!r} is {value!r}, not {kind}")
    if not isinstance(table, list):
        raise LayoutError(f"header 'sections' is a {type(table).__name__}, not a list")
    return table, value


def _check_name(name: Any, i: int, seen: set[str]) -> None:
    if not isinstance(name, str) or not name:
        raise LayoutError(f"section #{i} name {name!r} is not a non-empty string")
    if name in seen:
        raise LayoutError(f"section name {name!r} appears twice")
    seen.add(name)


def _parse_pairs(obj: dict[str, Any]) -> tuple[tuple[SectionEntry, ...], int]:
    """Version 7's table: [name, length] pairs back to back from byte 0, and the data area's CRC."""
    table, _ = _table_and(
        obj, "data_crc32", "checksum", lambda v: is_int(v) and 0 <= v <= _U32_MAX, "an unsigned 32-bit integer"
    )
    if "data_bytes" in obj:
        raise LayoutError("a version 7 header holds 'data_bytes', a container key of versions 2-6 only")
    entries: list[SectionEntry] = []
    seen: set[str] = set()
    cursor = 0
    for i, row in enumerate(table):
        if not isinstance(row, list) or len(row) != 2:
            raise LayoutError(f"section #{i} must be a [name, length] pair")
        name, length = row
        _check_name(name, i, seen)
        if not is_int(length) or length < 0:
            raise LayoutError(f"section {name!r} length is {length!r}, not a non-negative integer")
        entries.append(SectionEntry(name, cursor, length, None))
        cursor += length
        if cursor > INT_MAX:
            raise LayoutError(f"sections up to {name!r} add up to more than {INT_MAX} bytes")
    return tuple(entries), cursor


def _head(view: memoryview, n: int) -> tuple[int, dict[str, Any], tuple[SectionEntry, ...], int, int]:
    """Checks 1-10 of FORMAT.md on a file of ``n`` bytes whose first bytes are ``view``
    (at least up to the header CRC when the file has them): (version, header object,
    section table, data_bytes, start of the data area)."""
    head = bytes(view[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise BadMagicError("not an nncompress file (wrong magic bytes at the start)")
    if n < _PREFIX.size:
        what = "magic" if n < len(MAGIC) else "version and header length"
        raise TruncatedError(
            f"compressed file is truncated in its {what}: expected at least {_PREFIX.size} bytes, got {n}"
        )
    _, version, hlen = _PREFIX.unpack_from(view, 0)
    if version > FORMAT_VERSION:
        raise VersionError(
            f"compressed file has format version {version}, but this nncompress reads only "
            f"up to version {FORMAT_VERSION}; upgrade nncompress to read it"
        )
    if version == 0:
        raise FormatError("compressed file has format version 0, which does not exist")
    if version < MIN_READ_VERSION:
        raise FormatError(
            f"compressed file has format version {version}: it was written by an earlier pre-release "
            f"of nncompress, which this one no longer reads; recompress the model from its checkpoint "
            f"(or decompress it with the release that wrote it)"
        )
    if hlen < 2 or hlen > MAX_HEADER_BYTES:
        raise FormatError(f"header length {hlen} is impossible (must be 2..{MAX_HEADER_BYTES})")
    header_end = _PREFIX.size + hlen
    data_start = header_end + _U32.size
    if n < data_start or len(view) < data_start:
        raise TruncatedError(
            f"compressed file is truncated in its header: expected at least {data_start} bytes, got {n}"
        )
    (stored_crc,) = _U32.unpack_from(view, header_end)
    if zlib.crc32(view[len(MAGIC) : header_end]) != stored_crc:
        raise ChecksumError("header checksum mismatch: the file's header is corrupt")
    stored = bytes(view[_PREFIX.size : header_end])
    obj = _parse_header(_inflate(stored) if version >= DEFLATED_HEADER_VERSION else stored)
    entries, total = _parse_table(obj, version)
    expected = data_start + total
    if n < expected:
        raise TruncatedError(f"compressed file is truncated in its data area: expected {expected} bytes, got {n}")
    if n > expected:
        raise LayoutError(f"compressed file has {n - expected} trailing bytes after its data area")
    return version, obj, entries, total, data_start


def loads(data: bytes | bytearray | memoryview) -> Container:
    """Decode and verify a container; raises a FormatError subclass for any bad input."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise FormatError(f"expected bytes, got {type(data).__name__}") from None
    version, obj, entries, total, data_start = _head(view, len(view))
    if version >= PAIR_TABLE_VERSION and zlib.crc32(view[data_start:]) != obj["data_crc32"]:
        raise ChecksumError("data area checksum mismatch: the file's weights are corrupt")
    sections: dict[str, bytes] = {}
    for e in entries:
        start = data_start + e.offset
        chunk = view[start : start + e.length]
        if e.crc32 is not None and zlib.crc32(chunk) != e.crc32:
            raise ChecksumError(f"section {e.name!r} checksum mismatch: its data is corrupt")
        sections[e.name] = bytes(chunk)
    return _container(obj, version, sections, entries, total)


def _container(
    obj: dict[str, Any], version: int, sections: dict[str, bytes], entries: tuple[SectionEntry, ...], total: int
) -> Container:
    owned = owned_keys(version)
    caller = {k: v for k, v in obj.items() if k not in owned}
    crc = obj["data_crc32"] if version >= PAIR_TABLE_VERSION else None
    return Container(caller, sections, entries, total, version, crc)


def read_header(path: str | os.PathLike[str]) -> Container:
    """The verified header and section table of a container file, without reading the
    data area (``sections`` is empty; section CRCs are not checked): enough to describe
    a file of any size in bounded time and memory. PathError if it is missing or not a
    regular file (a FIFO would block the open, a device never end)."""
    with open_input(path) as handle:
        n = os.fstat(handle.fileno()).st_size
        prefix = handle.read(_PREFIX.size)
        hlen = _PREFIX.unpack_from(prefix, 0)[2] if len(prefix) == _PREFIX.size else 0
        rest = handle.read(hlen + _U32.size) if 2 <= hlen <= MAX_HEADER_BYTES else b""
    view = memoryview(prefix + rest)
    version, obj, entries, total, _ = _head(view, max(n, len(view)))
    return _container(obj, version, {}, entries, total)


def read_container(path: str | os.PathLike[str]) -> Container:
    """Read and verify a container file (PathError if it is missing or not a regular file)."""
    with open_input(path) as handle:
        data = handle.read()
    return loads(data)
