"""The compressed-file container: exact bytes, and a FormatError subclass for every bad input."""

from __future__ import annotations

import json
import os
import random
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from nncompress.coding import container as C
from nncompress.coding.container import (
    FORMAT_VERSION,
    MAGIC,
    Container,
    dumps,
    loads,
    read_container,
    write_container,
)
from nncompress.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LayoutError,
    TruncatedError,
    VersionError,
)

HEADER = {"model": "mlp", "shape": [3, 4], "scale": 0.5, "nested": {"z": None, "b": True}}
SECTIONS = [("fc1.weight", b"\x00\x01\x02\x03"), ("empty", b""), ("fc2.bias", b"xyz")]


def _canon(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


#: the last version whose section table is objects with offsets and CRCs; forged headers below use it
OBJECT_TABLE = 6


def _forge(header_text: bytes, data: bytes, version: int = OBJECT_TABLE) -> bytes:
    """A file with any header bytes (deflated for version 5 on) but a correct header CRC: tests checks past the
    CRC."""
    if version >= 5:
        header_text = zlib.compress(header_text, 9)
    crc_input = struct.pack("<II", version, len(header_text)) + header_text
    return MAGIC + crc_input + struct.pack("<I", zlib.crc32(crc_input)) + data


def _table(*rows: tuple[str, int, int, bytes]) -> list[dict]:
    return [{"name": n, "offset": o, "length": ln, "crc32": zlib.crc32(b)} for n, o, ln, b in rows]


def _assert_same(c: Container, header: dict, sections: list[tuple[str, bytes]]) -> None:
    assert c.header == header
    assert list(c.sections.items()) == sections
    for name, blob in sections:
        assert c.section(name) == blob


# ------------------------------------------------------------------------ happy path


def test_round_trip_bytes_and_file(tmp_path: Path) -> None:
    blob = dumps(HEADER, SECTIONS)
    _assert_same(loads(blob), HEADER, SECTIONS)
    path = tmp_path / "sub" / "m.nnc"
    size = write_container(path, HEADER, SECTIONS)
    assert size == os.path.getsize(path) == len(blob)
    assert path.read_bytes() == blob
    c = read_container(path)
    _assert_same(c, HEADER, SECTIONS)
    full = c.full_header
    assert c.data_bytes == 7 and c.version == FORMAT_VERSION == 7
    assert full["sections"] == [["fc1.weight", 4], ["empty", 0], ["fc2.bias", 3]]
    assert full["data_crc32"] == zlib.crc32(b"\x00\x01\x02\x03xyz")
    assert [e.offset for e in c.entries] == [0, 4, 4]
    old = loads(dumps(HEADER, SECTIONS, OBJECT_TABLE))
    _assert_same(old, HEADER, SECTIONS)
    assert old.full_header["data_bytes"] == 7
    assert [s["name"] for s in old.full_header["sections"]] == ["fc1.weight", "empty", "fc2.bias"]


def test_round_trip_empty_and_normalised_values() -> None:
    c = loads(dumps({}, []))
    assert c.header == {} and c.sections == {} and c.data_bytes == 0
    c = loads(dumps({"t": (1, 2), "n": np.int64(7), "f": np.float32(0.25), "u": "é"}, [("a", bytearray(b"q"))]))
    assert c.header == {"t": [1, 2], "n": 7, "f": 0.25, "u": "é"}
    assert c.section("a") == b"q"


def test_deterministic_regardless_of_key_order() -> None:
    a = {"x": 1, "y": {"p": 2, "q": [1, 2]}, "b": "s"}
    b = {"b": "s", "y": {"q": [1, 2], "p": 2}, "x": 1}
    assert dumps(a, SECTIONS) == dumps(b, SECTIONS) == dumps(dict(a), list(SECTIONS))


def test_golden_bytes() -> None:
    # Checked by hand against FORMAT.md: magic | version 3 | H = 88 (0x58) | header |
    # CRC32 of bytes [8, 104) = 0xDF3EDA99 | "abc". crc32(b"abc") = 0x352441C2 = 891568578.
    header_json = '{"a":1,"data_bytes":3,"sections":[{"crc32":891568578,"length":3,"name":"x","offset":0}]}'
    expected = (
        "894e4e430d0a1a0a"  # magic \x89 N N C \r \n \x1a \n
        "03000000"  # version u32 LE
        "58000000" + header_json.encode().hex() + "99da3edf"  # header length 88 u32 LE  # header CRC32 0xDF3EDA99 LE
        "616263"  # data area: section "x"
    )
    assert len(header_json) == 88
    assert dumps({"a": 1}, [("x", b"abc")], version=3).hex() == expected
    assert len(bytes.fromhex(expected)) == 111


@pytest.mark.parametrize("version", [5, 6])
def test_golden_bytes_of_a_deflated_header(version: int) -> None:
    """FORMAT.md's example as version 5 and 6: the same header JSON, stored as its zlib stream (level 9)."""
    header_json = b'{"a":1,"data_bytes":3,"sections":[{"crc32":891568578,"length":3,"name":"x","offset":0}]}'
    stream = zlib.compress(header_json, 9)
    data = dumps({"a": 1}, [("x", b"abc")], version=version)
    assert data[8:16] == struct.pack("<II", version, len(stream)) and data[16 : 16 + len(stream)] == stream
    assert data[16 + len(stream) : 20 + len(stream)] == struct.pack("<I", zlib.crc32(data[8 : 16 + len(stream)]))
    assert data[20 + len(stream) :] == b"abc" and loads(data).header == {"a": 1}


def test_golden_bytes_of_a_pair_table() -> None:
    """FORMAT.md's example as version 7: [name, length] pairs and one CRC of the data area."""
    header_json = b'{"a":1,"data_crc32":891568578,"sections":[["x",3]]}'
    stream = zlib.compress(header_json, 9)
    data = dumps({"a": 1}, [("x", b"abc")])
    assert data[8:16] == struct.pack("<II", 7, len(stream)) and data[16 : 16 + len(stream)] == stream
    assert data[16 + len(stream) : 20 + len(stream)] == struct.pack("<I", zlib.crc32(data[8 : 16 + len(stream)]))
    assert data[20 + len(stream) :] == b"abc" and len(data) == 82 == 23 + len(stream)
    assert len(header_json) == 51  # 88 as version 6


def test_a_pair_table_takes_a_third_less_header_than_objects() -> None:
    """What version 7 is for: per-section offsets and CRCs were most of a small model's deflated header."""
    rng = np.random.default_rng(0)
    sections = [(f"layers.{i}.{part}", rng.bytes(int(rng.integers(40, 4000)))) for i in range(10) for part in "wb"]
    old, new = (len(dumps({"kind": "m"}, sections, v)) - sum(len(b) for _, b in sections) for v in (6, 7))
    assert new < 0.67 * old


@pytest.mark.parametrize("key", ["data_crc32", "data_bytes", "sections"])
def test_the_container_keys_of_every_version_are_refused_in_a_callers_header(key: str) -> None:
    for version in (4, 6, 7):
        with pytest.raises(FormatError, match="reserved"):
            dumps({key: 1}, [], version)


@pytest.mark.parametrize(
    "sections,crc,match",
    [
        ([["x", 3], ["y", 2]], None, "data_crc32"),
        ([["x", 3], ["y", 2]], -1, "data_crc32"),
        ([["x", 3], ["y", 2]], 2**32, "data_crc32"),
        ([["x", 3], ["y", 2]], "1", "data_crc32"),
        ([["x", 3], ["x", 2]], 0, "twice"),
        ([["", 3], ["y", 2]], 0, "name"),
        ([[5, 3], ["y", 2]], 0, "name"),
        ([["x", 3], ["y", -2]], 0, "non-negative"),
        ([["x", 3.0], ["y", 2]], 0, "non-negative"),
        ([["x", True], ["y", 2]], 0, "non-negative"),
        ([["x", 3, 0], ["y", 2]], 0, "pair"),
        ([{"name": "x", "length": 5}], 0, "pair"),
        ([["x", 2**63 - 1], ["y", 2]], 0, "more than"),
        ({"x": 5}, 0, "not a list"),
    ],
)
def test_bad_pair_table_is_layout_error(sections: object, crc: object, match: str) -> None:
    header = {"sections": sections} if crc is None else {"data_crc32": crc, "sections": sections}
    with pytest.raises(LayoutError, match=match):
        loads(_forge(_canon(header), _ABC + _DE, FORMAT_VERSION))


def test_a_version_7_header_must_not_hold_the_old_total() -> None:
    crc = zlib.crc32(_ABC)
    with pytest.raises(LayoutError, match="data_bytes"):
        loads(_forge(_canon({"data_bytes": 3, "data_crc32": crc, "sections": [["x", 3]]}), _ABC, FORMAT_VERSION))


def test_a_pair_table_must_cover_the_file_exactly() -> None:
    crc = zlib.crc32(_ABC + _DE)
    text = _canon({"data_crc32": crc, "sections": [["x", 3], ["y", 2]]})
    assert loads(_forge(text, _ABC + _DE, FORMAT_VERSION)).sections == {"x": _ABC, "y": _DE}
    with pytest.raises(TruncatedError, match="expected"):
        loads(_forge(text, _ABC + _DE[:1], FORMAT_VERSION))
    with pytest.raises(LayoutError, match="trailing"):
        loads(_forge(text, _ABC + _DE + b"!", FORMAT_VERSION))
    with pytest.raises(ChecksumError, match="data area"):
        loads(_forge(text, _ABC + b"dE", FORMAT_VERSION))


def test_a_deflated_header_must_be_one_whole_bounded_zlib_stream() -> None:
    text = _canon({"a": 1, "data_bytes": 0, "sections": []})
    stream = zlib.compress(text, 9)

    def as_v5(stored: bytes) -> bytes:
        body = struct.pack("<II", 5, len(stored)) + stored
        return MAGIC + body + struct.pack("<I", zlib.crc32(body))

    assert loads(as_v5(stream)).header == {"a": 1}
    assert loads(as_v5(zlib.compress(text, 1))).header == {"a": 1}  # any valid stream of the canonical text
    for stored, match in (
        (text, "not a valid zlib stream"),  # an uncompressed header stamped version 5
        (stream[:-3], "ends early"),
        (stream + b"\x00", "1 bytes after its zlib stream"),
        (zlib.compress(b'{"a":1, "data_bytes":0,"sections":[]}'), "canonical"),
    ):
        with pytest.raises(FormatError, match=match):
            loads(as_v5(stored))


def test_a_header_that_inflates_past_the_limit_is_refused_without_inflating_it_all(monkeypatch) -> None:
    from nncompress.coding import container_read

    monkeypatch.setattr(container_read, "MAX_HEADER_BYTES", 1000)
    bomb = zlib.compress(b" " * 500_000, 9)  # 500 kB of spaces in about 500 bytes
    body = struct.pack("<II", 5, len(bomb)) + bomb
    with pytest.raises(FormatError, match="inflates to more than 1000 bytes"):
        loads(MAGIC + body + struct.pack("<I", zlib.crc32(body)))


def test_version_2_files_are_still_read() -> None:
    """Version 2 (FORMAT.md's earlier example, header CRC 0x0038575B) reads as before."""
    header_json = '{"a":1,"data_bytes":3,"sections":[{"crc32":891568578,"length":3,"name":"x","offset":0}]}'
    v2 = bytes.fromhex("894e4e430d0a1a0a0200000058000000" + header_json.encode().hex() + "5b573800616263")
    box = loads(v2)
    assert (box.version, box.header, box.sections) == (2, {"a": 1}, {"x": b"abc"})
    assert loads(dumps({"a": 1}, [("x", b"abc")])).version == FORMAT_VERSION


# ------------------------------------------------------------------------ corruption sweeps


@pytest.mark.parametrize("version", [OBJECT_TABLE, FORMAT_VERSION])
def test_every_single_byte_flip_is_detected(version: int) -> None:
    good = dumps({"a": 1}, [("x", b"abc"), ("y", b"hello")], version)
    hlen = struct.unpack_from("<I", good, 12)[0]
    data_start = 20 + hlen
    for i in range(len(good)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(good)
            bad[i] ^= mask
            with pytest.raises(FormatError) as info:
                loads(bytes(bad))
            exc = info.value
            if i < 8:
                assert isinstance(exc, BadMagicError)
            elif 16 <= i < data_start:  # header text or its CRC
                assert isinstance(exc, ChecksumError) and "header" in str(exc)
            elif i >= data_start:  # one CRC of the data area from version 7 on, one a section before
                assert isinstance(exc, ChecksumError)
                named = "data area" if version >= 7 else "'x'" if i < data_start + 3 else "'y'"
                assert named in str(exc)


def test_every_truncation_raises_truncated() -> None:
    good = dumps({"a": 1}, [("x", b"abc"), ("y", b"hello")])
    for n in range(len(good)):
        with pytest.raises(TruncatedError) as info:
            loads(good[:n])
        if n >= 16:
            assert f"got {n}" in str(info.value) and "expected" in str(info.value)
    with pytest.raises(TruncatedError, match=f"expected {len(good)} bytes, got {len(good) - 3}"):
        loads(good[:-3])


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(0)
    good = dumps(HEADER, SECTIONS)
    for _ in range(300):
        n = rng.randrange(0, 80)
        tail = bytes(rng.randrange(256) for _ in range(n))
        for data in (tail, MAGIC + tail, good[: rng.randrange(len(good))] + tail):
            try:
                c = loads(data)
            except FormatError:
                continue
            assert data == good and c.header == HEADER  # only the untouched file may load


# ------------------------------------------------------------------------ individual failures


@pytest.mark.parametrize("data", [b"PK\x03\x04zipfile...", b"\x89NNC\n\x1a\n" + b"\0" * 20, b"{}"])
def test_bad_magic(data: bytes) -> None:
    with pytest.raises(BadMagicError, match="not an nncompress file"):
        loads(data)


def test_line_ending_mangling_is_bad_magic() -> None:
    good = dumps({"a": 1}, [("x", b"abc")])
    with pytest.raises(BadMagicError):
        loads(good.replace(b"\r\n", b"\n"))


def test_newer_version_says_upgrade_even_if_the_rest_differs() -> None:
    good = dumps({"a": 1}, [("x", b"abc")])
    newer = MAGIC + struct.pack("<I", FORMAT_VERSION + 1) + b"\xff" * 40
    with pytest.raises(VersionError, match=rf"version {FORMAT_VERSION + 1}.*upgrade"):
        loads(newer)
    with pytest.raises(VersionError):
        loads(good[:8] + struct.pack("<I", FORMAT_VERSION + 1) + good[12:])


def test_version_one_is_a_pre_release_to_recompress() -> None:
    old = _forge(_canon({"data_bytes": 0, "sections": []}), b"", version=1)
    with pytest.raises(FormatError, match=r"version 1.*earlier pre-release.*recompress") as info:
        loads(old)
    assert type(info.value) is FormatError  # not VersionError: upgrading would not help


def test_version_zero_and_absurd_header_length() -> None:
    good = dumps({"a": 1}, [("x", b"abc")])
    for bad in (
        good[:8] + b"\0\0\0\0" + good[12:],
        good[:12] + struct.pack("<I", 0xFFFFFFFF) + good[16:],
        good[:12] + struct.pack("<I", 1) + good[16:],
    ):
        with pytest.raises(FormatError) as info:
            loads(bad)
        assert type(info.value) is FormatError


def test_header_checksum_mismatch_names_header() -> None:
    good = bytearray(dumps({"a": 1}, [("x", b"abc")]))
    good[17] ^= 0x20  # '"a"' -> '"A"': still valid JSON, so only the CRC can catch it
    with pytest.raises(ChecksumError, match="header"):
        loads(bytes(good))


def test_section_checksum_mismatch_names_section() -> None:
    good = dumps({"a": 1}, [("x", b"abc"), ("weights", b"hello")], OBJECT_TABLE)
    with pytest.raises(ChecksumError, match="'weights'"):
        loads(good[:-1] + b"O")
    good = dumps({"a": 1}, [("x", b"abc"), ("weights", b"hello")])
    with pytest.raises(ChecksumError, match="data area"):
        loads(good[:-1] + b"O")


def test_trailing_bytes() -> None:
    with pytest.raises(LayoutError, match="trailing"):
        loads(dumps({"a": 1}, [("x", b"abc")]) + b"\0")


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe{}",  # not UTF-8
        b'{"a":',  # not JSON
        b"[1,2,3]",  # not an object
        b'{"a":NaN,"data_bytes":0,"sections":[]}',  # NaN
        b'{"data_bytes": 0, "sections": []}',  # whitespace: not canonical
        b'{"sections":[],"data_bytes":0}',  # unsorted: not canonical
        b'{"a":1,"a":2,"data_bytes":0,"sections":[]}',  # duplicate key
        b"[" * 100_000 + b"]" * 100_000,  # nesting deep enough to blow the recursion limit
    ],
)
def test_bad_header_json_is_format_error(text: bytes) -> None:
    with pytest.raises(FormatError) as info:
        loads(_forge(text, b""))
    assert type(info.value) is FormatError


def test_header_lying_about_offsets() -> None:
    good = dumps({"a": 1}, [("x", b"abc"), ("y", b"de")], version=3)
    hlen = struct.unpack_from("<I", good, 12)[0]
    data = good[20 + hlen :]
    obj = json.loads(good[16 : 16 + hlen])
    obj["sections"][1]["offset"] = 2  # overlaps "x"
    with pytest.raises(LayoutError, match="overlaps"):
        loads(_forge(_canon(obj), data))


_ABC, _DE = b"abc", b"de"


@pytest.mark.parametrize(
    "sections,data_bytes,match",
    [
        (_table(("x", 0, 3, _ABC), ("y", 4, 2, _DE)), 5, "gap"),
        (_table(("x", 1, 3, _ABC)), 4, "gap"),
        (_table(("x", 0, 3, _ABC), ("y", 3, 9, _DE)), 5, "beyond"),
        (_table(("x", 0, 3, _ABC), ("y", -1, 2, _DE)), 5, "non-negative"),
        (_table(("x", 0, 3, _ABC), ("y", 3, -2, _DE)), 5, "non-negative"),
        (_table(("x", 0, 3, _ABC), ("x", 3, 2, _DE)), 5, "twice"),
        (_table(("", 0, 3, _ABC), ("y", 3, 2, _DE)), 5, "name"),
        (_table(("x", 0, 3, _ABC), ("y", 3, 2, _DE)), 6, "data_bytes"),
        (_table(("x", 0, 3, _ABC), ("y", 3, 2, _DE)), -5, "data_bytes"),
        (_table(("x", 0, 3, _ABC), ("y", 3, 2, _DE)), "5", "data_bytes"),
        ([{"name": "x", "offset": False, "length": 3, "crc32": 1}], 3, "offset"),
        ([{"name": "x", "offset": 0, "length": 3.0, "crc32": 1}], 3, "length"),
        ([{"name": "x", "offset": 0, "length": 3, "crc32": -1}], 3, "crc32"),
        ([{"name": "x", "offset": 0, "length": 3, "crc32": 2**32}], 3, "crc32"),
        ([{"name": 5, "offset": 0, "length": 3, "crc32": 1}], 3, "name"),
        ([{"name": "x", "offset": 0, "length": 3}], 3, "exactly"),
        ([{"name": "x", "offset": 0, "length": 3, "crc32": 1, "extra": 0}], 3, "exactly"),
        (["x"], 3, "exactly"),
        ({"x": 1}, 3, "not a list"),
    ],
)
def test_bad_section_table_is_layout_error(sections: object, data_bytes: object, match: str) -> None:
    data = _ABC + _DE
    text = _canon({"data_bytes": data_bytes, "sections": sections})
    with pytest.raises(LayoutError, match=match):
        loads(_forge(text, data))
    with pytest.raises(LayoutError, match="data_crc32"):  # version 7 keeps neither offsets nor data_bytes
        loads(_forge(text, data, FORMAT_VERSION))


def test_missing_container_keys_is_layout_error() -> None:
    with pytest.raises(LayoutError):
        loads(_forge(_canon({"a": 1}), b""))


def test_missing_section_lookup_is_format_error() -> None:
    c = loads(dumps({}, [("x", b"1")]))
    with pytest.raises(FormatError, match="no section 'nope'"):
        c.section("nope")


def test_non_bytes_input() -> None:
    with pytest.raises(FormatError):
        loads("not bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ writer


@pytest.mark.parametrize(
    "header,sections,err",
    [
        ({"sections": 1}, [], FormatError),
        ({"data_bytes": 1}, [], FormatError),
        ({"a": float("nan")}, [], FormatError),
        ({1: "int key"}, [], FormatError),
        ({"a": object()}, [], FormatError),
        ([("a", 1)], [], FormatError),
        ({}, [("x", b"1"), ("x", b"2")], LayoutError),
        ({}, [("", b"1")], LayoutError),
        ({}, [("x", "text")], LayoutError),
        ({}, [("x",)], LayoutError),
    ],
)
def test_writer_rejects_bad_input(header: object, sections: list, err: type) -> None:
    with pytest.raises(err):
        dumps(header, sections)  # type: ignore[arg-type]


def test_atomic_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = C.atomic_open

    class Boom(OSError):
        pass

    @contextmanager
    def failing_open(path, mode="wb"):  # type: ignore[no-untyped-def]
        with real_open(path, mode) as handle:
            calls = []

            class Proxy:
                def write(self, b: bytes) -> int:
                    calls.append(b)
                    if len(calls) == 2:  # after the header, during the sections
                        raise Boom("disk full")
                    return handle.write(b)

            yield Proxy()

    monkeypatch.setattr(C, "atomic_open", failing_open)
    path = tmp_path / "m.nnc"
    with pytest.raises(Boom):
        write_container(path, HEADER, SECTIONS)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(C, "atomic_open", real_open)
    write_container(path, {"old": 1}, [("x", b"old")])
    before = path.read_bytes()
    monkeypatch.setattr(C, "atomic_open", failing_open)
    with pytest.raises(Boom):
        write_container(path, HEADER, SECTIONS)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.nnc"]
    assert read_container(path).header == {"old": 1}


def test_an_interrupt_during_an_atomic_write_waits_for_the_write(tmp_path) -> None:
    """The command line's SIGINT/SIGTERM handler: during a write the interrupt is held, the file is written
    whole, and KeyboardInterrupt comes right after (inside torch.save it had come out as torch's RuntimeError)."""
    import signal

    from nncompress.atomic import atomic_open
    from nncompress.cli import _sigterm_as_interrupt

    target = tmp_path / "out.bin"
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with atomic_open(target) as handle:
                handle.write(b"first half, ")
                os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this thread: held
                handle.write(b"second half")
        assert target.read_bytes() == b"first half, second half"
        assert not list(tmp_path.glob(".*.tmp"))
        with pytest.raises(KeyboardInterrupt):  # outside a write it interrupts at once, as before
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
