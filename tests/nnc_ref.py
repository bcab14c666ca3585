"""A second, deliberately independent reader of .nnc model files, written from FORMAT.md alone.

It imports nothing of nncompress and only numpy, struct, zlib and json, decodes Huffman
streams bit by bit with the canonical-code rule the spec states, and applies the checks
the spec says a reader MUST make. The conformance tests hold the main reader to it: both
must decode the same files to the same weights, so a rule only one of them follows shows.
Slow on purpose (a Python loop per bit): it is meant for small test files.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np

MAGIC = b"\x89NNC\r\n\x1a\n"


class RefError(Exception):
    """The file breaks a rule of FORMAT.md."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise RefError(what)


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    _need(type(v) is int and lo <= v <= hi, f"{what} = {v!r} is not an integer in {lo}..{hi}")
    return v


def read_container(data: bytes) -> tuple[int, dict, dict[str, bytes], list[str]]:
    """(version, header, sections by name, section names in data-area order)."""
    _need(data[:8] == MAGIC, "magic")
    _need(len(data) >= 16, "short prefix")
    version, hlen = struct.unpack_from("<II", data, 8)
    _need(version in (2, 3, 4, 5, 6, 7), f"version {version}")
    _need(2 <= hlen <= 64 * 2**20 and len(data) >= 20 + hlen, "header length")
    _need(zlib.crc32(data[8 : 16 + hlen]) == struct.unpack_from("<I", data, 16 + hlen)[0], "header crc")
    text = data[16 : 16 + hlen]
    if version >= 5:  # a zlib stream, whole, alone, inflating to at most 64 MiB
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, 64 * 2**20 + 1)
        except zlib.error as exc:
            raise RefError(f"header zlib: {exc}") from None
        _need(len(text) <= 64 * 2**20 and inflater.eof and not inflater.unused_data, "header zlib stream")
    try:
        header = json.loads(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RefError(f"header json: {exc}") from None
    _need(isinstance(header, dict), "header is an object")
    try:
        again = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (ValueError, RecursionError) as exc:
        raise RefError(f"header json: {exc}") from None
    _need(again.encode() == text, "header not canonical")
    _check_numbers(header, 0)
    if version >= 7:
        return version, *_pairs(data, 20 + hlen, header)
    table, total = header.get("sections"), header.get("data_bytes")
    _need(isinstance(table, list), "sections list")
    total = _int(total, 0, 2**63 - 1, "data_bytes")
    _need(len(data) == 20 + hlen + total, "file length")
    base, cursor, out, order = 20 + hlen, 0, {}, []
    for row in table:
        _need(isinstance(row, dict) and sorted(row) == ["crc32", "length", "name", "offset"], "section row")
        name = row["name"]
        _need(isinstance(name, str) and name != "" and name not in out, "section name")
        _need(_int(row["offset"], 0, total, "offset") == cursor, "sections tile")
        length = _int(row["length"], 0, total - cursor, "length")
        blob = data[base + cursor : base + cursor + length]
        _need(zlib.crc32(blob) == _int(row["crc32"], 0, 2**32 - 1, "crc32"), "section crc")
        out[name] = blob
        order.append(name)
        cursor += length
    _need(cursor == total, "sections cover data_bytes")
    return version, {k: v for k, v in header.items() if k not in ("sections", "data_bytes")}, out, order


def _pairs(data: bytes, base: int, header: dict) -> tuple[dict, dict[str, bytes], list[str]]:
    """Version 7: [name, length] pairs from the data area's first byte, one CRC over the whole area."""
    table, crc = header.get("sections"), header.get("data_crc32")
    _need(isinstance(table, list), "sections list")
    _int(crc, 0, 2**32 - 1, "data_crc32")
    _need("data_bytes" not in header, "no data_bytes in version 7")
    cursor, out, order = 0, {}, []
    for row in table:
        _need(isinstance(row, list) and len(row) == 2, "section pair")
        name, length = row
        _need(isinstance(name, str) and name != "" and name not in out, "section name")
        length = _int(length, 0, 2**63 - 1, "length")
        out[name] = data[base + cursor : base + cursor + length]
        order.append(name)
        cursor += length
    _need(len(data) == base + cursor, "file length")
    _need(zlib.crc32(data[base:]) == crc, "data crc")
    return {k: v for k, v in header.items() if k not in ("sections", "data_crc32")}, out, order


def _check_numbers(value: Any, depth: int) -> None:
    _need(depth <= 64, "nesting")
    if type(value) is int:
        _need(-(2**63) <= value < 2**63, "integer range")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RefError("unpaired surrogate") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(k, depth)
            _check_numbers(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_numbers(v, depth + 1)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        self.at = 0

    def take(self) -> int:
        _need(self.at < len(self.bits), "payload ends early")
        b = self.bits[self.at]
        self.at += 1
        return b


def huffman(blob: bytes, alphabet: int, n: int | None = None) -> list[int]:
    """The symbols of one Huffman stream whose alphabet the header fixes: a blob with its own fields and CRC,
    or (``n`` given, version 7) a bare stream of ``n`` symbols."""
    if n is None:
        _need(len(blob) >= 26, "short blob")
        _need(zlib.crc32(blob[:-4]) == struct.unpack_from("<I", blob, len(blob) - 4)[0], "blob crc")
        version, longest, a, n, nbits = struct.unpack_from("<BBIQQ", blob, 0)
        _need(version == 1 and a == alphabet, "blob version or alphabet")
        at = 22
    else:
        _need(len(blob) >= 1, "empty stream")
        longest, a, nbits, at = blob[0], alphabet, None, 1
    _need(longest <= 31, "code length")
    cw = 1 if a <= 255 else 2 if a <= 65535 else 4
    sw = 1 if a <= 256 else 2
    _need(len(blob) >= at + longest * cw, "short table")
    counts = [int.from_bytes(blob[at + i * cw : at + (i + 1) * cw], "little") for i in range(longest)]
    at += longest * cw
    k = sum(counts)
    _need(k <= a and len(blob) >= at + k * sw, "more codes than symbols, or a short table")
    end = len(blob) if nbits is None else at + k * sw + (nbits + 7) // 8
    _need(nbits is None or len(blob) == end + 4, "blob length")
    syms = [int.from_bytes(blob[at + i * sw : at + (i + 1) * sw], "little") for i in range(k)]
    at += k * sw
    _need(all(s < a for s in syms) and len(set(syms)) == k, "table symbols")
    if n == 0:
        _need(longest == 0 and end == at, "empty stream")
        return []
    _need(longest > 0 and counts[-1] > 0, "longest length has codes")
    kraft = sum(c * 2 ** (longest - length) for length, c in enumerate(counts, 1))
    _need(kraft == 2**longest or (k == 1 and longest == 1), "complete code")
    start = 0
    for c in counts:
        _need(syms[start : start + c] == sorted(syms[start : start + c]), "canonical order")
        start += c
    bits = _Bits(blob[at:end])
    if nbits is not None:
        _need(not any(bits.bits[nbits:]), "padding bits")
        bits.bits = bits.bits[:nbits]
    first, index, code, idx = {}, {}, 0, 0
    for length, c in enumerate(counts, 1):
        first[length], index[length] = code, idx
        code, idx = (code + c) << 1, idx + c
    out = []
    for _ in range(n):
        code, length = 0, 0
        while True:
            code, length = (code << 1) | bits.take(), length + 1
            _need(length <= longest, "no code matches")
            if code - first[length] < counts[length - 1]:
                out.append(syms[index[length] + code - first[length]])
                break
    if nbits is not None:
        _need(bits.at == nbits, "bits left over")
    else:  # the payload ends in the byte of its last code, zero padded
        _need(len(bits.bits) - bits.at < 8 and not any(bits.bits[bits.at :]), "payload ends with its last code")
    return out


def _shared(e: dict, data: bytes, size: int, version: int) -> np.ndarray:
    pos_kind, idx_kind = e.get("positions"), e.get("indices")
    layouts = {
        (None, None): {"rel_bits", "entries"},
        ("all", None): {"positions"},
        ("all", "packed"): {"positions", "indices"},
        ("bitmap", "packed"): {"positions", "indices"},
    }
    _need((pos_kind, idx_kind) in layouts and (version >= 3 or pos_kind is None), "layout")
    _need(
        set(e)
        == {"name", "codec", "shape", "codebook_size", "codebook_dtype", "nonzero", "positions_bytes"}
        | layouts[(pos_kind, idx_kind)],
        "shared keys",
    )
    k = _int(e["codebook_size"], 0, 65535, "codebook_size")
    _need(e["codebook_dtype"] in ("float32", "float16"), "codebook_dtype")
    item = 4 if e["codebook_dtype"] == "float32" else 2
    n = _int(e["nonzero"], 0, size, "nonzero")
    p = _int(e["positions_bytes"], 0, len(data), "positions_bytes")
    _need(k * item + p <= len(data), "codebook and positions fit")
    book = np.frombuffer(data[: k * item], dtype="<f4" if item == 4 else "<f2").astype(np.float32)
    _need(bool(np.all(np.isfinite(book))), "finite codebook")
    pos_data, idx_data = data[k * item : k * item + p], data[k * item + p :]
    bare = version >= 7  # Huffman streams without their own fields and CRC
    if pos_kind is None:
        b = _int(e["rel_bits"], 1, 16, "rel_bits")
        entries = _int(e["entries"], 0, 2**63 - 1, "entries")
        rel = huffman(pos_data, 2**b, entries if bare else None)
        vals = huffman(idx_data, k + 1, entries if bare else None)
        _need(len(rel) == len(vals) == e["entries"], "entries")
        where, c = [], -1
        for r, v in zip(rel, vals, strict=True):
            c += r + 1
            if v == k:
                _need(r == 2**b - 1, "filler relative index")
            else:
                where.append((c, v))
        _need(not vals or vals[-1] != k, "last entry is a filler")
        _need(all(c < size for c, _ in where), "position inside the tensor")
        positions, indices = [c for c, _ in where], [v for _, v in where]
    else:
        if pos_kind == "all":
            _need(p == 0 and n == size, "all positions")
            positions = list(range(size))
        else:
            _need(p == (size + 7) // 8, "bitmap bytes")
            flags = np.unpackbits(np.frombuffer(pos_data, dtype=np.uint8))
            _need(not flags[size:].any(), "bitmap padding")
            positions = np.flatnonzero(flags[:size]).tolist()
        if idx_kind == "packed":
            w = max(0, k - 1).bit_length()
            _need(len(idx_data) == (len(positions) * w + 7) // 8, "packed bytes")
            flat = np.unpackbits(np.frombuffer(idx_data, dtype=np.uint8)).tolist()
            _need(not any(flat[len(positions) * w :]), "packed padding")
            indices = [int("".join(map(str, flat[i * w : (i + 1) * w])) or "0", 2) for i in range(len(positions))]
        else:
            indices = huffman(idx_data, max(1, k), len(positions) if bare else None)
        _need(len(indices) == len(positions), "one index per position")
    _need(len(positions) == n, "nonzero count")
    _need(all(i < k for i in indices) and set(indices) == set(range(k)), "every codebook entry used, none beyond")
    out = np.zeros(size, dtype=np.float32)
    out[np.asarray(positions, dtype=np.int64)] = book[np.asarray(indices, dtype=np.int64)]
    return out


def _quant(e: dict, data: bytes, shape: list, size: int) -> np.ndarray:
    """value = q * scale of its row along the first axis; one scale means one row."""
    _need(set(e) == {"name", "codec", "shape", "dtype", "scales"}, "quant keys")
    width, limit = {"int8": (1, 127), "int16": (2, 32767)}.get(e["dtype"], (0, 0))
    _need(width > 0, "quant dtype")
    rows = e["scales"]
    allowed = {1} if not shape or shape[0] <= 1 else {1, shape[0]}
    _need(type(rows) is int and rows in allowed, "quant scale count")
    _need(len(data) == 4 * rows + width * size, "quant length")
    scales = np.frombuffer(data[: 4 * rows], dtype="<f4").astype(np.float64)
    _need(bool(np.all(np.isfinite(scales)) and np.all(scales >= 0)), "quant scales")
    q = np.frombuffer(data[4 * rows :], dtype="<i1" if width == 1 else "<i2").astype(np.int64).reshape(rows, -1)
    _need(bool(np.all(np.abs(q) <= limit)), "quant range")
    _need(not bool(np.any((scales == 0)[:, None] & (q != 0))), "zero scale, zero values")
    # float32 product, as the format defines it
    return (q.astype(np.float32) * scales.astype(np.float32)[:, None]).reshape(shape)


def decode(data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a model file, by name, in file order; RefError for any broken rule."""
    version, header, sections, order = read_container(data)
    _need(header.get("kind") == "nncompress-model", "kind")
    _need(set(header) == {"kind", "arch", "meta", "tensors"}, "model header keys")
    meta = header["meta"]
    _need(isinstance(meta, dict), "meta")
    _need(type(meta.get("dense_params", 0)) is int and meta.get("dense_params", 0) >= 0, "dense_params")
    dw = meta.get("dense_weights", {})
    _need(isinstance(dw, dict) and all(type(v) is int and v >= 0 for v in dw.values()), "dense_weights")
    t = meta.get("transform", {"normalize": "none"})
    _need(
        isinstance(t, dict)
        and (
            (sorted(t) == ["normalize"] and isinstance(t["normalize"], str) and t["normalize"] != "explicit")
            or (
                sorted(t) == ["mean", "normalize", "std"]
                and t["normalize"] == "explicit"
                and all(type(t[k]) in (int, float) for k in ("mean", "std"))
                and t["std"] > 0
            )
        ),
        "transform",
    )
    arch = header["arch"]
    _need(
        arch is None
        or (
            isinstance(arch, dict)
            and (
                (
                    sorted(arch) == ["config", "name"]
                    and isinstance(arch["name"], str)
                    and isinstance(arch["config"], dict)
                )
                or (
                    sorted(arch) == ["factory", "kwargs"]
                    and isinstance(arch["factory"], str)
                    and isinstance(arch["kwargs"], dict)
                )
            )
        ),
        "arch",
    )
    tensors = header["tensors"]
    _need(isinstance(tensors, list), "tensors")
    out: dict[str, np.ndarray] = {}
    aliases = []
    stored = []
    for e in tensors:
        _need(isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] != "", "entry name")
        _need(e["name"] not in out and e["name"] not in [a["name"] for a in aliases], "name unique")
        shape = e.get("shape")
        _need(isinstance(shape, list) and len(shape) <= 32 and all(type(d) is int and d >= 0 for d in shape), "shape")
        size = int(np.prod(shape, dtype=object)) if shape else 1
        codec = e.get("codec")
        if codec == "alias" and version >= 3:
            _need(set(e) == {"name", "codec", "shape", "of"}, "alias keys")
            aliases.append(e)
            continue
        if codec == "const" and version >= 6:  # every value the one value; no section
            _need(set(e) == {"name", "codec", "shape", "dtype", "value"}, "const keys")
            v = e["value"]
            if e["dtype"] == "int64":
                _need(type(v) is int and -(2**63) <= v < 2**63, "const int64 value")
                out[e["name"]] = np.full(shape, v, dtype=np.int64)
            else:
                _need(e["dtype"] == "float32", "const dtype")
                _need(type(v) in (int, float) and np.isfinite(v) and abs(v) <= 3.4028234663852886e38, "const value")
                out[e["name"]] = np.full(shape, v, dtype=np.float32)
            continue
        _need(e["name"] in sections, "section of the tensor")
        data_ = sections[e["name"]]
        stored.append(e["name"])
        if codec == "raw":
            _need(
                set(e) - {"nonzero"} == {"name", "codec", "shape", "dtype"} and ("nonzero" not in e or version >= 3),
                "raw keys",
            )
            dt = {"float32": "<f4", "float16": "<f2", "int64": "<i8"}.get(e["dtype"])
            _need(dt is not None, "raw dtype")
            if "nonzero" in e:
                _int(e["nonzero"], 0, size, "raw nonzero")
            _need(len(data_) == size * np.dtype(dt).itemsize, "raw length")
            values = np.frombuffer(data_, dtype=dt)
            if dt == "<i8":
                out[e["name"]] = values.astype(np.int64).reshape(shape)
            else:
                _need(bool(np.all(np.isfinite(values))), "finite raw values")
                out[e["name"]] = values.astype(np.float32).reshape(shape)
        elif codec == "shared":
            out[e["name"]] = _shared(e, data_, size, version).reshape(shape)
        elif codec == "quant" and version >= 4:
            out[e["name"]] = _quant(e, data_, shape, size)
        else:
            raise RefError(f"codec {codec!r}")
    _need(order == stored, "one section per stored tensor, in tensor order")
    for a in aliases:
        target = out.get(a["of"]) if isinstance(a["of"], str) else None
        _need(target is not None and list(target.shape) == a["shape"], "alias target")
    for a in aliases:
        out[a["name"]] = out[a["of"]]
    return {e["name"]: out[e["name"]] for e in tensors}
