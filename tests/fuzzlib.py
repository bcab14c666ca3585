"""Lying and damaged .nnc files, and the oracle that judges what a reader does with them.

A *lie* is a file whose checksums are all valid (header CRC, section CRCs, Huffman blob
CRCs): anyone can edit a header and recompute them, so only the reader's own checks
stand between such a file and the decoder. *Damage* is what storage and transfer do
(bit flips, truncation, overwritten or appended bytes), which the checksums catch.

``run_case`` reads a file the way every command does (header only as ``inspect``, then
decode, table and build) and classifies the outcome: a typed error (any
``NNCompressError``), a foreign exception (a bug), or accepted; accepted files are
decoded again by the independent reader (``nnc_ref``), and any difference between the
two is a *mismatch* (weights other than what the header's claims give). Used by
tests/test_fuzz.py (bounded, hypothesis) and bench/fuzz_bench.py (at length).
"""

from __future__ import annotations

import json
import os
import random
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import nnc_ref

GOLDEN = Path(__file__).parent / "data" / "golden"
REGRESSIONS = Path(__file__).parent / "data" / "fuzz_regressions"
MAGIC = b"\x89NNC\r\n\x1a\n"
HUGE = [-1, 0, 1, 3, 2**31, 2**32 + 1, 2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**400, 20000, 100000, -(2**63) - 1]
ODD = ["x", "", [1], [], {}, {"a": 1}, None, True, False, 1.5, -0.0, 1e308, "float32", [[[[1]]]], "\udc80"]


# ------------------------------------------------------------------ writing files that lie


def parse(data: bytes) -> tuple[int, dict, list[tuple[str, bytes]]]:
    """(version, header without the container's keys, sections in order) of a well-formed file."""
    version, hlen = struct.unpack_from("<II", data, 8)
    stored = data[16 : 16 + hlen]
    full = json.loads(zlib.decompress(stored) if version >= 5 else stored)
    base = 20 + hlen
    if version >= 7:  # [name, length] pairs from the data area's start
        sections, at = [], base
        for name, length in full["sections"]:
            sections.append((name, data[at : at + length]))
            at += length
        return version, {k: v for k, v in full.items() if k not in ("sections", "data_crc32")}, sections
    sections = [(r["name"], data[base + r["offset"] : base + r["offset"] + r["length"]]) for r in full["sections"]]
    return version, {k: v for k, v in full.items() if k not in ("sections", "data_bytes")}, sections


def header_text(full: dict, nest: int = 0) -> bytes:
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if nest:  # nesting json.dumps itself cannot write: spliced in as text
        text = text.replace('"__NEST__"', "[" * nest + "]" * nest)
    return text.encode("ascii")


def build(
    header: dict,
    sections: list[tuple[str, bytes]],
    version: int = 3,
    nest: int = 0,
    table: Optional[list[dict]] = None,
    data_bytes: Optional[int] = None,
) -> bytes:
    """A file with every checksum valid, whatever the header claims (``table``, ``data_bytes``: the container's
    own keys as given, for a version before 7)."""
    if version >= 7:
        crc = zlib.crc32(b"".join(b for _, b in sections))
        return _stamp(
            {**header, "sections": [[n, len(b)] for n, b in sections], "data_crc32": crc}, sections, version, nest
        )
    rows, offset = [], 0
    for name, blob in sections:
        rows.append({"name": name, "offset": offset, "length": len(blob), "crc32": zlib.crc32(blob)})
        offset += len(blob)
    full = {
        **header,
        "sections": rows if table is None else table,
        "data_bytes": offset if data_bytes is None else data_bytes,
    }
    return _stamp(full, sections, version, nest)


def _stamp(full: dict, sections: list[tuple[str, bytes]], version: int, nest: int) -> bytes:
    text = header_text(full, nest)
    if version >= 5:  # the header is stored deflated
        text = zlib.compress(text, 9)
    body = struct.pack("<II", version, len(text)) + text
    return MAGIC + body + struct.pack("<I", zlib.crc32(body)) + b"".join(b for _, b in sections)


def _blob_at(section: bytes, entry: dict) -> list[tuple[int, int]]:
    """(start, end) of the Huffman blobs inside a shared section, per the header."""
    if entry.get("codec") != "shared" or entry.get("indices") == "packed":
        return []
    item = 4 if entry.get("codebook_dtype") == "float32" else 2
    book = entry["codebook_size"] * item
    pos = entry["positions_bytes"]
    out = [(book + pos, len(section))]
    if entry.get("positions") is None:
        out.insert(0, (book, book + pos))
    return out


def rebare(stream: bytes, rng: random.Random) -> bytes:
    """A bare Huffman stream (version 7) with its code length, a table or payload byte, or its length changed."""
    if not stream:
        return stream
    body = bytearray(stream)
    field = rng.choice(["longest", "byte", "longer", "shorter"])
    if field == "longest":
        body[0] = rng.choice([0, 1, 31, 32, 255, max(0, body[0] - 1), body[0] + 1])
    elif field == "byte":
        body[rng.randrange(len(body))] = rng.randrange(256)
    elif field == "longer":
        body += bytes([rng.choice([0, 0x80, 0xFF])])
    else:
        del body[-1]
    return bytes(body)


def reblob(blob: bytes, rng: random.Random) -> bytes:
    """A Huffman blob with one field of its fixed header changed and its CRC made valid again."""
    if len(blob) < 26:
        return blob
    body = bytearray(blob[:-4])
    field = rng.choice(["version", "longest", "alphabet", "n", "bits", "count", "symbol"])
    if field == "version":
        body[0] = rng.choice([0, 2, 255])
    elif field == "longest":
        body[1] = rng.choice([0, 1, 31, 32, 255, max(0, body[1] - 1), body[1] + 1])
    elif field == "alphabet":
        struct.pack_into("<I", body, 2, rng.choice([0, 1, 2, 255, 256, 257, 65535, 65536, 65537, 2**32 - 1]))
    elif field == "n":
        n = struct.unpack_from("<Q", body, 6)[0]
        struct.pack_into("<Q", body, 6, rng.choice([0, n + 1, max(0, n - 1), n * 2, 2**40, 2**64 - 1]))
    elif field == "bits":
        b = struct.unpack_from("<Q", body, 14)[0]
        struct.pack_into("<Q", body, 14, rng.choice([0, b + 1, max(0, b - 1), b + 8, 2**40, 2**64 - 1]))
    elif len(body) > 22:
        at = rng.randrange(22, len(body))
        body[at] = rng.randrange(256)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _set(root: Any, path: tuple, value: Any) -> None:
    for step in path[:-1]:
        root = root[step]
    root[path[-1]] = value


def _get(root: Any, path: tuple) -> Any:
    for step in path:
        root = root[step]
    return root


def _shared_entries(header: dict) -> list[dict]:
    return [e for e in header.get("tensors", []) if isinstance(e, dict) and e.get("codec") == "shared"]


def lie(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One lie about a well-formed file, with every checksum valid: (what, bytes)."""
    version, header, sections = parse(data)
    header = json.loads(json.dumps(header))
    sections = list(sections)
    kind = rng.choice(
        [
            "type",
            "number",
            "shape",
            "codebook",
            "layout",
            "sections",
            "nesting",
            "arch",
            "meta",
            "tensors",
            "blob",
            "keys",
            "version",
            "bomb",
        ]
    )
    tensors = header["tensors"]
    entry = rng.choice(tensors)
    shared = _shared_entries(header)
    nest = 0
    if kind == "type":
        path = rng.choice(_paths(header)[1:])
        _set(header, path, rng.choice(ODD + HUGE))
    elif kind == "number":
        paths = [p for p in _paths(header)[1:] if type(_get(header, p)) is int]
        if paths:
            _set(header, rng.choice(paths), rng.choice(HUGE))
    elif kind == "shape":
        shape = list(entry["shape"])
        how = rng.choice(["scale", "append", "drop", "negative", "bomb", "swap", "empty"])
        if how == "scale" and shape:
            i = rng.randrange(len(shape))
            shape[i] = shape[i] * rng.choice([2, 3, 1000, 20000]) + rng.choice([0, 1])
        elif how == "append":
            shape.append(rng.choice([1, 2, 2**40]))
        elif how == "drop" and shape:
            shape.pop()
        elif how == "negative" and shape:
            shape[0] = -shape[0] - 1
        elif how == "bomb":
            shape = rng.choice([[20000, 20000], [2**40], [2**31, 2**31], [65536] * 4, [1] * 40])
        elif how == "swap":
            shape.reverse()
        else:
            shape = []
        entry["shape"] = shape
    elif kind == "codebook" and shared:
        e = rng.choice(shared)
        how = rng.choice(["f16", "f32", "plus", "minus", "dtype"])
        if how == "f16" and e["codebook_dtype"] == "float32":
            # the same bytes, twice the entries
            e["codebook_dtype"], e["codebook_size"] = "float16", e["codebook_size"] * 2
        elif how == "f32" and e["codebook_dtype"] == "float16" and e["codebook_size"] % 2 == 0:
            e["codebook_dtype"], e["codebook_size"] = "float32", e["codebook_size"] // 2
        elif how == "plus":
            e["codebook_size"] += rng.choice([1, 2, 100])
        elif how == "minus":
            e["codebook_size"] = max(0, e["codebook_size"] - rng.choice([1, 2]))
        else:
            e["codebook_dtype"] = rng.choice(["float32", "float16", "float64", "int8"])
        e["positions_bytes"] += rng.choice([0, 0, 2, -2])
    elif kind == "layout" and shared:
        e = rng.choice(shared)
        key = rng.choice(["rel_bits", "entries", "nonzero", "positions_bytes", "positions", "indices"])
        if key in ("positions", "indices"):
            choice = rng.choice([None, "all", "bitmap", "relative", "huffman", "packed", "sideways"])
            if choice is None:
                e.pop(key, None)
            else:
                e[key] = choice
        elif key in e:
            e[key] += rng.choice([-1, 1, 2, -2, 8])
    elif kind == "sections" and len(sections) > 1:
        i, j = rng.sample(range(len(sections)), 2)
        how = rng.choice(["order", "contents", "rename", "drop", "extra"])
        if how == "order":
            sections[i], sections[j] = sections[j], sections[i]
        elif how == "contents":
            (a, x), (b, y) = sections[i], sections[j]
            sections[i], sections[j] = (a, y), (b, x)
        elif how == "rename":
            sections[i] = (sections[j][0] + "_", sections[i][1])
        elif how == "drop":
            del sections[i]
        else:
            sections.append(("orphan", b"\x00" * rng.choice([0, 4, 64])))
    elif kind == "nesting":
        header["meta"]["deep"] = "__NEST__"
        nest = rng.choice([63, 65, 1000, 100000])
    elif kind == "arch":
        header["arch"] = rng.choice(
            [
                {"name": "mlp", "config": {"sizes": [16, 100000, 8, 4], "dropout": [0.0, 0.0]}},
                {"name": "mlp", "config": {"sizes": [16, 10**400, 8, 4], "dropout": [0.0, 0.0]}},
                {"name": "mlp", "config": {"sizes": [16, "12", 8, 4], "dropout": [0.0, 0.0]}},
                {"name": "mlp", "config": {"sizes": [16, 12, 8, 4], "dropout": 0.0}},
                {"name": "mlp", "config": {"sizes": [16, 2**62, 8, 4], "dropout": [0.0, 0.0]}},
                {
                    "name": "lenet5",
                    "config": {"in_channels": 1, "image": 10**6, "channels": [20, 50], "hidden": 500, "classes": 10},
                },
                {"name": "nope", "config": {}},
                {"name": ["mlp"], "config": {}},
                {"name": "mlp", "config": []},
                {"factory": "os:system", "kwargs": {"command": "echo pwned"}},
                {"factory": "torch.nn:Linear", "kwargs": {"in_features": 100000, "out_features": 100000}},
                {"factory": "torch.nn:Linear", "kwargs": {"in_features": 10**30, "out_features": 2}},
                {"factory": ["x"], "kwargs": {}},
                {"factory": "torch.nn:Linear", "kwargs": []},
                "mlp",
                [1],
                5,
            ]
        )
    elif kind == "meta":
        header["meta"] = rng.choice(
            [
                {"dense_params": 10**400},
                {"dense_params": -1},
                {"dense_params": "1"},
                {"dense_weights": []},
                {"dense_weights": {"fc1": 1.5}},
                {"transform": {"normalize": "explicit", "mean": 0.1, "std": 0.0}},
                {"transform": "unit"},
                {"transform": {"normalize": "other"}},
                [],
                None,
                "meta",
            ]
        )
    elif kind == "tensors":
        how = rng.choice(["dup", "drop", "reorder", "alias", "codec", "notdict", "name"])
        if how == "dup":
            tensors.append(dict(entry))
        elif how == "drop":
            tensors.remove(entry)
        elif how == "reorder":
            rng.shuffle(tensors)
        elif how == "alias":
            lie_entry = {
                "name": rng.choice(["a", tensors[0]["name"]]),
                "codec": "alias",
                "of": rng.choice([t["name"] for t in tensors] + ["missing"]),
                "shape": rng.choice([[1], tensors[-1]["shape"]]),
            }
            entry.clear()
            entry.update(lie_entry)
        elif how == "codec":
            entry["codec"] = rng.choice(["raw", "shared", "alias", "zip", ""])
        elif how == "notdict":
            tensors[tensors.index(entry)] = rng.choice([None, [], "w", 1])
        else:
            entry["name"] = rng.choice(["", "x" * 5000, 7, None])
    elif kind == "blob":
        e = rng.choice(shared) if shared else None
        named = dict(sections)
        if e is not None and e.get("name") in named and _blob_at(named[e["name"]], e):
            blob = named[e["name"]]
            start, end = rng.choice(_blob_at(blob, e))
            recode = rebare if version >= 7 else reblob
            new = blob[:start] + recode(blob[start:end], rng) + blob[end:]
            sections = [(n, new if n == e["name"] else b) for n, b in sections]
    elif kind == "keys":
        if rng.random() < 0.5 and len(entry) > 1:
            del entry[rng.choice(sorted(entry))]
        else:
            entry[rng.choice(["extra", "note", "dtype", "of", "rel_bits"])] = rng.choice(HUGE + ODD[:6])
    elif kind == "version":
        version = {3: 2, 6: 7, 7: 6}.get(version, 3)
    else:  # a decompression bomb: a tiny file, one huge all-zero shared tensor
        bomb = {
            "name": "bomb.weight",
            "codec": "shared",
            "shape": rng.choice([[20000, 20000], [16000, 16000], [2**40], [4096, 4096]]),
            "codebook_size": 0,
            "codebook_dtype": "float16",
            "nonzero": 0,
            "positions_bytes": 1 if version >= 7 else 26,
            "rel_bits": 4,
            "entries": 0,
        }
        empty = [struct.pack("<BBIQQ", 1, 0, a, 0, 0) for a in (16, 1)]
        blob = b"".join(p + struct.pack("<I", zlib.crc32(p)) for p in empty) if version < 7 else b"\x00\x00"
        header = {"kind": "nncompress-model", "arch": None, "meta": {}, "tensors": [bomb]}
        sections = [("bomb.weight", blob)]
    return kind, build(header, sections, version, nest)


def damage(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """What storage and transfer do to a file (its checksums no longer hold)."""
    out = bytearray(data)
    kind = rng.choice(["flip", "truncate", "overwrite", "append", "zero"])
    if kind == "flip":
        for _ in range(rng.choice([1, 1, 2, 8])):
            at = rng.randrange(len(out) * 8)
            out[at // 8] ^= 1 << (at % 8)
    elif kind == "truncate":
        del out[rng.randrange(len(out)) :]
    elif kind == "overwrite":
        at = rng.randrange(len(out))
        span = rng.randrange(1, 64)
        out[at : at + span] = bytes(rng.randrange(256) for _ in range(min(span, len(out) - at)))
    elif kind == "append":
        out += bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 100])))
    else:
        at = rng.randrange(len(out))
        out[at : at + rng.randrange(1, 32)] = b"\x00" * len(out[at : at + 31])
    return kind, bytes(out)


def seeds() -> dict[str, bytes]:
    """The well-formed files lies and damage start from: every codec and layout, v2 and v3."""
    return {p.stem: p.read_bytes() for p in sorted(GOLDEN.glob("*.nnc"))}


def make_case(seed_files: dict[str, bytes], n: int) -> tuple[str, str, bytes]:
    """Case ``n`` of a campaign, reproducible from ``n`` alone: (family, what, bytes); even n lie."""
    rng = random.Random(n)
    name = rng.choice(sorted(seed_files))
    if n % 2 == 0:
        what, data = lie(seed_files[name], rng)
        return "lie", f"{name}:{what}", data
    what, data = damage(seed_files[name], rng)
    return "damage", f"{name}:{what}", data


# ------------------------------------------------------------------ the oracle


@dataclass
class Outcome:
    verdict: str  # "typed", "accepted", "foreign", "mismatch"
    detail: str = ""
    seconds: float = 0.0


def _same(main: dict, ref: dict) -> bool:
    """Bit-identical tensors, compared a slice at a time (no copy of a big all-zero tensor)."""
    if list(main) != list(ref):
        return False
    for k in main:
        a, b = main[k].numpy(), ref[k]
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        a, b = a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)
        step = 1 << 22
        if any(not np.array_equal(a[i : i + step], b[i : i + step]) for i in range(0, len(a), step)):
            return False
    return True


def run_case(data: bytes, folder: Optional[str] = None) -> Outcome:
    """Read ``data`` as every command does; classify what happened (see the module docstring)."""
    from nncompress.errors import NNCompressError
    from nncompress.modelfile import layer_table, load_compressed, read_compressed_header

    start = time.perf_counter()
    handle, path = tempfile.mkstemp(suffix=".nnc", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        stage = "inspect"
        try:
            head = read_compressed_header(path)
            layer_table(head.header, head.section_bytes, head.file_bytes)
            stage = "load"
            box = load_compressed(path)
            layer_table(box.header, box.section_bytes, box.file_bytes)
            stage = "build"
            if box.header.get("arch"):
                box.build_model()
        except NNCompressError as exc:
            return Outcome("typed", f"{stage}: {type(exc).__name__}: {str(exc)[:200]}", time.perf_counter() - start)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return Outcome("foreign", f"{stage}: {type(exc).__name__}: {str(exc)[:200]}", time.perf_counter() - start)
        try:
            ref = nnc_ref.decode(data)
        except nnc_ref.RefError as exc:
            return Outcome(
                "mismatch", f"accepted, but the spec's reader refuses it: {exc}", time.perf_counter() - start
            )
        if not _same(box.state, ref):
            return Outcome("mismatch", "the two readers decode different weights", time.perf_counter() - start)
        return Outcome("accepted", "", time.perf_counter() - start)
    finally:
        os.unlink(path)


def save_regression(data: bytes, what: str) -> Path:
    """Keep a file that once broke the reader, named by its content."""
    REGRESSIONS.mkdir(parents=True, exist_ok=True)
    path = REGRESSIONS / f"{what.replace(':', '_').replace('/', '_')}_{zlib.crc32(data):08x}.nnc"
    path.write_bytes(data)
    return path


Mutator = Callable[[bytes, random.Random], tuple[str, bytes]]
__all__ = ["Outcome", "build", "damage", "lie", "make_case", "parse", "run_case", "save_regression", "seeds"]
