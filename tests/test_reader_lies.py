"""Files that lie with valid checksums: every claim is checked before it is used, and
nothing is allocated that the file cannot justify."""

from __future__ import annotations

import resource
import struct
import zlib
from pathlib import Path

import pytest

import fuzzlib
from nncompress.cli import main
from nncompress.coding.container import loads
from nncompress.errors import DecodeLimitError, FormatError
from nncompress.modelfile import decode_limits, load_compressed, read_compressed_header

GOLDEN = Path(__file__).parent / "data" / "golden"


def _golden(name: str) -> tuple[int, dict, list]:
    return fuzzlib.parse((GOLDEN / f"{name}.nnc").read_bytes())


def _write(tmp_path: Path, header: dict, sections: list, version: int = 3, **kw) -> Path:
    path = tmp_path / "lie.nnc"
    path.write_bytes(fuzzlib.build(header, sections, version, **kw))
    return path


def _bomb(shape: list[int]) -> tuple[dict, list]:
    """A ~150-byte file: one all-zero shared tensor of ``shape`` (valid per the spec)."""
    empty = [struct.pack("<BBIQQ", 1, 0, a, 0, 0) for a in (16, 1)]
    blob = b"".join(p + struct.pack("<I", zlib.crc32(p)) for p in empty)
    entry = {
        "name": "w",
        "codec": "shared",
        "shape": shape,
        "codebook_size": 0,
        "codebook_dtype": "float16",
        "nonzero": 0,
        "positions_bytes": 26,
        "rel_bits": 4,
        "entries": 0,
    }
    return {"kind": "nncompress-model", "arch": None, "meta": {}, "tensors": [entry]}, [("w", blob)]


def test_a_float32_codebook_redeclared_float16_with_twice_the_entries_is_refused(tmp_path) -> None:
    version, header, sections = _golden("v3_layouts")
    entry = next(e for e in header["tensors"] if e["name"] == "rel32.weight")
    assert entry["codebook_dtype"] == "float32"
    entry["codebook_dtype"], entry["codebook_size"] = "float16", 2 * entry["codebook_size"]
    path = _write(tmp_path, header, sections, version)
    with pytest.raises(FormatError, match=r"rel32\.weight"):
        load_compressed(path)
    assert main(["evaluate", str(path), "--data", "digits"]) == 1


def test_a_decompression_bomb_is_refused_before_it_is_allocated(tmp_path, capsys) -> None:
    path = _write(tmp_path, *_bomb([20000, 20000]))
    assert path.stat().st_size < 500
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        DecodeLimitError,
        match=r"'w'.*1525\.9 MB, above the limit of 1024\.0 MB per tensor.*"
        r"--max-decoded-mb",
    ):
        load_compressed(path)
    head = read_compressed_header(path)  # inspect: the header only, never the weights
    assert head.header["tensors"][0]["shape"] == [20000, 20000]
    assert main(["inspect", str(path)]) == 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: under 100 MB more
    assert main(["decompress", str(path), "--out", str(tmp_path / "w.pt")]) == 1
    assert "--max-decoded-mb" in capsys.readouterr().err and not (tmp_path / "w.pt").exists()


def test_the_decoded_size_limits_can_be_raised(tmp_path, capsys) -> None:
    path = _write(tmp_path, *_bomb([600, 600]))  # 1.4 MB of float32
    with pytest.raises(DecodeLimitError, match="per tensor"):
        load_compressed(path, max_tensor_bytes=10**6)
    with pytest.raises(DecodeLimitError, match="in all"):
        load_compressed(path, max_decoded_bytes=10**6, max_tensor_bytes=10**7)
    assert not load_compressed(path, max_tensor_bytes=2 * 10**6).state["w"].any()
    with decode_limits(10**6):
        with pytest.raises(DecodeLimitError):
            load_compressed(path)
    assert main(["--max-decoded-mb", "1", "decompress", str(path), "--out", str(tmp_path / "a.pt")]) == 1
    assert main(["decompress", str(path), "--out", str(tmp_path / "b.pt"), "--max-decoded-mb", "2"]) == 0
    assert main(["decompress", str(path), "--out", str(tmp_path / "c.pt"), "--max-decoded-mb", "-1"]) == 1
    assert "positive number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "shape,match",
    [
        ([2**40], "per tensor"),
        ([2**31, 2**31], "per tensor"),
        ([-3, 2], "shape"),
        (["4"], "shape"),
        ([1] * 40, "shape"),
        ([10**400], "signed 64-bit"),
        ([3.0], "shape"),
        ("w", "shape"),
    ],
)
def test_impossible_shapes_are_refused_before_decoding(tmp_path, shape, match) -> None:
    path = _write(tmp_path, *_bomb(shape))
    with pytest.raises(FormatError, match=match):
        load_compressed(path)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("name", ["w"], "field 'name'"),
        ("codec", ["shared"], "field 'codec'"),
        ("codebook_size", 10**400, "signed 64-bit"),
        ("codebook_size", 2**40, "field 'codebook_size'"),
        ("codebook_size", -1, "field 'codebook_size'"),
        ("nonzero", True, "field 'nonzero'"),
        ("rel_bits", 17, "field 'rel_bits'"),
        ("rel_bits", 1.0, "field 'rel_bits'"),
        ("positions_bytes", 2**63, "signed 64-bit"),
        ("entries", "7", "field 'entries'"),
        ("codebook_dtype", "float64", "field 'codebook_dtype'"),
        ("extra", 1, "unknown key"),
        ("positions", "relative", "not a layout"),
        ("indices", "huffman", "not a layout"),
    ],
)
def test_each_shared_field_is_checked_for_type_and_range(tmp_path, field, value, match) -> None:
    version, header, sections = _golden("v2_relative")
    header["tensors"][0][field] = value
    with pytest.raises(FormatError, match=match):
        load_compressed(_write(tmp_path, header, sections, 3))
    with pytest.raises(FormatError, match=match):
        read_compressed_header(tmp_path / "lie.nnc")  # inspect checks the same claims


def test_sections_out_of_the_tensors_order_are_refused(tmp_path) -> None:
    version, header, sections = _golden("v3_mlp")
    sections[0], sections[1] = sections[1], sections[0]
    with pytest.raises(FormatError, match="order of the tensors"):
        load_compressed(_write(tmp_path, header, sections, version))


def test_deep_nesting_and_unpaired_surrogates_are_refused(tmp_path) -> None:
    version, header, sections = _golden("v3_mlp")
    header["meta"]["deep"] = "__NEST__"
    for depth in (65, 100000):
        with pytest.raises(FormatError, match="nests deeper|not valid JSON"):
            load_compressed(_write(tmp_path, header, sections, version, nest=depth))
    header["meta"]["deep"] = "\udc80"
    with pytest.raises(FormatError, match="surrogate"):
        load_compressed(_write(tmp_path, header, sections, version))


def test_a_codebook_entry_no_weight_uses_is_refused(tmp_path) -> None:
    version, header, sections = _golden("v3_layouts")
    e = next(e for e in header["tensors"] if e["name"] == "rel32.weight")  # float32 codebook [1e-7, -3.5]
    named = dict(sections)
    blob = named["rel32.weight"]
    # the index stream codes 0, 1, 0 (and fillers, symbol K = 2): make every real weight use entry 0
    from nncompress.coding import huffman

    values = huffman.decode(blob[8 + e["positions_bytes"] :])
    values[values == 1] = 0
    named["rel32.weight"] = blob[: 8 + e["positions_bytes"]] + huffman.encode(values, 3)
    with pytest.raises(FormatError, match="codebook entry 1 of 2 is used by no weight"):
        load_compressed(_write(tmp_path, header, list(named.items()), version))


@pytest.mark.parametrize(
    "arch,match",
    [
        ({"name": "mlp", "config": {"sizes": [16, 100000, 8, 4], "dropout": [0.0, 0.0]}}, "does not match"),
        ({"name": "mlp", "config": {"sizes": [16, 2**62, 8, 4], "dropout": [0.0, 0.0]}}, "arch"),
        ({"name": "mlp", "config": {"sizes": [16, "12", 8, 4], "dropout": [0.0, 0.0]}}, "not the model's own record"),
        ({"name": "nope", "config": {}}, "unknown model"),
        ({"name": "mlp", "config": []}, "field 'arch'"),
        ({"factory": "torch.nn:Linear", "kwargs": {"in_features": 100000, "out_features": 100000}}, "does not match"),
    ],
)
def test_the_architecture_record_is_checked_before_a_model_is_built(tmp_path, arch, match) -> None:
    version, header, sections = _golden("v3_mlp")
    header["arch"] = arch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match=match):
        load_compressed(_write(tmp_path, header, sections, version)).build_model()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # no 40 GB model, not even 1


@pytest.mark.parametrize(
    "meta,match",
    [
        ({"dense_params": "1"}, "dense_params"),
        ({"dense_weights": {"fc1": 1.5}}, "dense_weights"),
        ({"transform": {"normalize": "explicit", "mean": 0.0, "std": 0.0}}, "transform"),
        ([], "'meta'"),
    ],
)
def test_meta_fields_are_checked(tmp_path, meta, match) -> None:
    version, header, sections = _golden("v3_mlp")
    header["meta"] = meta
    with pytest.raises(FormatError, match=match):
        read_compressed_header(_write(tmp_path, header, sections, version))


def test_the_header_number_range_is_signed_64_bit() -> None:
    ok = fuzzlib.build({"a": 2**63 - 1, "b": -(2**63)}, [])
    assert loads(ok).header == {"a": 2**63 - 1, "b": -(2**63)}
    for bad in (2**63, -(2**63) - 1, 10**400):
        with pytest.raises(FormatError, match="signed 64-bit"):
            loads(fuzzlib.build({"a": bad}, []))
    for number in (b"1e400", b"-1e400", b"1" * 5000):  # beyond a double; beyond any integer parser's digits
        text = b'{"a":' + number + b',"data_bytes":0,"sections":[]}'
        body = struct.pack("<II", 3, len(text)) + text
        with pytest.raises(FormatError, match="finite|64-bit|not valid JSON"):
            loads(fuzzlib.MAGIC + body + struct.pack("<I", zlib.crc32(body)))


REGRESSIONS = sorted((Path(__file__).parent / "data" / "fuzz_regressions").glob("*.nnc"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_every_file_that_once_broke_the_reader_is_now_refused_or_read_right(path) -> None:
    outcome = fuzzlib.run_case(path.read_bytes())
    assert outcome.verdict in ("typed", "accepted"), outcome.detail
