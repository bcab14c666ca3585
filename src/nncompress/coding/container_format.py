"""What the compressed file's container is made of: its constants, the section table row, the decoded
container, and the one canonical encoding of a header. ``container`` writes it, ``container_read`` reads it."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from nncompress.errors import FormatError

#: PNG-style: the high byte catches 7-bit transports, CR LF / ^Z / LF catch text-mode
#: and line-ending conversions, which would otherwise corrupt the file silently.
MAGIC: bytes = b"\x89NNC\r\n\x1a\n"
#: 2: one section per tensor (model files). 3: the same container; model files gain
#: layouts (no positions for an unpruned tensor, packed and raw fallbacks, tied-weight
#: aliases). 4: model files gain the ``quant`` codec (uniform int8/int16 with per-channel
#: scales). 5: the header is stored deflated (zlib): it was up to a third of a small model's
#: file. 6: model files gain the ``const`` codec (a tensor of one repeated value, no section).
#: 7: the section table is [name, length] pairs and one CRC of the whole data area (offsets,
#: per-section CRCs and the total were a fifth of a small model's deflated header); model files'
#: Huffman streams drop the fields the header holds and their own CRC.
#: Versions 2-6 are still read (and written on request); version 1 was a pre-release and is
#: refused.
FORMAT_VERSION: int = 7
#: what a file is written as unless the caller asks for an older version
DEFAULT_WRITE_VERSION: int = 7
#: from this version on the header is stored as a zlib stream of its canonical JSON
DEFLATED_HEADER_VERSION: int = 5
#: from this version on the section table is [name, length] pairs and ``data_crc32`` covers the data area
PAIR_TABLE_VERSION: int = 7
#: from this version on a model file's Huffman streams are bare (``huffman_stream``): no fields the header
#: holds, no CRC of their own
BARE_HUFFMAN_VERSION: int = 7
#: the oldest version this reader accepts
MIN_READ_VERSION: int = 2
#: Above this the length field is corrupt rather than the file truncated; it also keeps
#: a damaged length from making us allocate or parse gigabytes. A deflated header is held
#: to it both as stored and as inflated (so a small stream cannot inflate without bound).
MAX_HEADER_BYTES: int = 64 * 1024 * 1024
#: Header keys the container owns in some version; a caller's header must not use any of them.
RESERVED_KEYS: frozenset[str] = frozenset({"sections", "data_bytes", "data_crc32"})
#: Header integers are signed 64-bit: any reader can hold them, and a 400-digit number is a lie.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Nesting deeper than this is refused, so no later reader of the header recurses itself to death.
MAX_HEADER_DEPTH = 64

_U32 = struct.Struct("<I")
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_ENTRY_KEYS = frozenset({"name", "offset", "length", "crc32"})
_U32_MAX = 0xFFFFFFFF


def owned_keys(version: int) -> frozenset[str]:
    """The header keys the container itself writes in a file of ``version``: the rest are the caller's."""
    return frozenset({"sections", "data_crc32"} if version >= PAIR_TABLE_VERSION else {"sections", "data_bytes"})


@dataclass(frozen=True)
class SectionEntry:
    """One section of the data area; offset is from its start. ``crc32`` is None from version 7 on,
    where one CRC covers the whole data area."""

    name: str
    offset: int
    length: int
    crc32: int | None


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
    data_crc32: int | None = None

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
        if self.version >= PAIR_TABLE_VERSION:
            out["sections"] = [[e.name, e.length] for e in self.entries]
            out["data_crc32"] = self.data_crc32
            return out
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


def _stored_header(text: bytes, version: int) -> bytes:
    """The header's bytes as the file stores them: its canonical JSON, deflated from version 5 on (level 9;
    the same text gives the same stream under one zlib build)."""
    return zlib.compress(text, 9) if version >= DEFLATED_HEADER_VERSION else text
