"""The compressed model file: a checksummed JSON header followed by named byte sections.

The container knows nothing about weights; codecs (written elsewhere) turn layers into
section bytes and back. What it guarantees is that a reader either gets back exactly
the header and sections that were written, or a ``FormatError`` subclass saying what is
wrong -- never wrong bytes and never an unrelated exception. FORMAT.md is the normative
byte-level spec; this module must agree with it.

Reading order of checks (each failure gets its own error type):
magic -> version -> header length -> enough bytes for the header -> header CRC ->
header JSON (UTF-8, object, canonical) -> section table layout -> data area length ->
section CRCs. The version is checked right after the magic, before the CRC, so a file
from a newer writer says "upgrade" even if a newer writer changed everything after it.
The header CRC is checked before the JSON is parsed so corrupt bytes never reach the
parser.

Only struct, json and zlib are used to read: no pickle, nothing that executes data.
"""

from __future__ import annotations

import json
import numbers
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from nncompress.atomic import atomic_open
from nncompress.paths import open_input
from nncompress.plain import is_int
from nncompress.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LayoutError,
    TruncatedError,
    VersionError,
)

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

#: PNG-style: the high byte catches 7-bit transports, CR LF / ^Z / LF catch text-mode
#: and line-ending conversions, which would otherwise corrupt the file silently.
MAGIC: bytes = b"\x89NNC\r\n\x1a\n"
#: 2: one section per tensor (model files). 3: the same container; model files gain
#: layouts (no positions for an unpruned tensor, packed and raw fallbacks, tied-weight
#: aliases). 4: model files gain the ``quant`` codec (uniform int8/int16 with per-channel
#: scales). Writers write the lowest version that holds what a file uses. Versions 2 and 3
#: are still read; version 1 was a pre-release and is refused.
FORMAT_VERSION: int = 4
#: what a file is written as unless its content needs a newer version
DEFAULT_WRITE_VERSION: int = 3
#: the oldest version this reader accepts
MIN_READ_VERSION: int = 2
#: Above this the length field is corrupt rather than the file truncated; it also keeps
#: a damaged length from making us allocate or parse gigabytes.
MAX_HEADER_BYTES: int = 64 * 1024 * 1024
#: Header keys the container owns; a caller's header must not use them.
RESERVED_KEYS: frozenset[str] = frozenset({"sections", "data_bytes"})
#: Header integers are signed 64-bit: any reader can hold them, and a 400-digit number is a lie.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Nesting deeper than this is refused, so no later reader of the header recurses itself to death.
MAX_HEADER_DEPTH = 64

_U32 = struct.Struct("<I")
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_ENTRY_KEYS = frozenset({"name", "offset", "length", "crc32"})
_U32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class SectionEntry:
    """One row of the header's section table; offset is from the start of the data area."""

    name: str
    offset: int
    length: int
    crc32: int


@dataclass(frozen=True)
class Container:
    """A decoded, fully verified container (``version``: the format version it was written in).

    ``header`` is the caller's part of the header (what was passed to ``dumps``, after
    the JSON round trip: tuples come back as lists). The container's own keys are kept
    in ``entries`` and ``data_bytes``; ``full_header`` rebuilds the header as stored.
    """

    header: dict[str, Any]
    sections: dict[str, bytes]
    entries: tuple[SectionEntry, ...] = field(default=())
    data_bytes: int = 0
    version: int = FORMAT_VERSION

    def section(self, name: str) -> bytes:
        """Bytes of section ``name``; a missing one is a malformed file for the codec
        asking, hence FormatError rather than KeyError."""
        try:
            return self.sections[name]
        except KeyError:
            have = ", ".join(repr(n) for n in self.sections) or "none"
            raise FormatError(f"compressed file has no section {name!r} (it has: {have})") from None

    @property
    def full_header(self) -> dict[str, Any]:
        """The header exactly as stored in the file, container keys included."""
        out = dict(self.header)
        out["data_bytes"] = self.data_bytes
        out["sections"] = [
            {"name": e.name, "offset": e.offset, "length": e.length, "crc32": e.crc32} for e in self.entries
        ]
        return out


# ---------------------------------------------------------------------------- writing


def _canonical_json(obj: Any) -> bytes:
    """The one encoding of a header: sorted keys, no whitespace, ASCII (non-ASCII as
    \\u escapes, so the bytes are also valid UTF-8), no NaN/Infinity."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


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
    table = []
    offset = 0
    for name, blob in blobs:
        table.append({"name": name, "offset": offset, "length": len(blob), "crc32": zlib.crc32(blob)})
        offset += len(blob)
    full["sections"] = table
    full["data_bytes"] = offset
    text = _canonical_json(full)
    if len(text) > MAX_HEADER_BYTES:
        raise FormatError(f"header is {len(text)} bytes; the limit is {MAX_HEADER_BYTES}")
    crc_input = _U32.pack(version) + _U32.pack(len(text)) + text
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


# ---------------------------------------------------------------------------- reading


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


def _parse_table(obj: dict[str, Any]) -> tuple[tuple[SectionEntry, ...], int]:
    """Check that the section table tiles the data area exactly, in order."""
    if "sections" not in obj or "data_bytes" not in obj:
        raise LayoutError("header lacks the 'sections' list or 'data_bytes' total")
    table, total = obj["sections"], obj["data_bytes"]
    if not is_int(total) or total < 0:
        raise LayoutError(f"header 'data_bytes' is {total!r}, not a non-negative integer")
    if not isinstance(table, list):
        raise LayoutError(f"header 'sections' is a {type(table).__name__}, not a list")
    entries: list[SectionEntry] = []
    seen: set[str] = set()
    cursor = 0
    for i, row in enumerate(table):
        if not isinstance(row, dict) or set(row) != _ENTRY_KEYS:
            raise LayoutError(f"section #{i} must be an object with exactly {sorted(_ENTRY_KEYS)}")
        name, offset, length, crc = row["name"], row["offset"], row["length"], row["crc32"]
        if not isinstance(name, str) or not name:
            raise LayoutError(f"section #{i} name {name!r} is not a non-empty string")
        if name in seen:
            raise LayoutError(f"section name {name!r} appears twice")
        seen.add(name)
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
    obj = _parse_header(bytes(view[_PREFIX.size : header_end]))
    entries, total = _parse_table(obj)
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
    sections: dict[str, bytes] = {}
    for e in entries:
        start = data_start + e.offset
        chunk = view[start : start + e.length]
        if zlib.crc32(chunk) != e.crc32:
            raise ChecksumError(f"section {e.name!r} checksum mismatch: its data is corrupt")
        sections[e.name] = bytes(chunk)
    caller = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
    return Container(header=caller, sections=sections, entries=entries, data_bytes=total, version=version)


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
    caller = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
    return Container(header=caller, sections={}, entries=entries, data_bytes=total, version=version)


def read_container(path: str | os.PathLike[str]) -> Container:
    """Read and verify a container file (PathError if it is missing or not a regular file)."""
    with open_input(path) as handle:
        data = handle.read()
    return loads(data)
