"""Bounded JSON reading: depth, numbers, size and file kind are checked before any reader uses a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nncompress.errors import ReportError
from nncompress.jsonfile import MAX_INT, load_json_file, loads
from nncompress.rundir import RunDir
from nncompress.train.journal import RunStateError


def test_plain_json_reads_as_json() -> None:
    assert loads('{"a": [1, 2.5, -3, null, true, "x"], "b": {"c": 9007199254740993}}') == {
        "a": [1, 2.5, -3, None, True, "x"],
        "b": {"c": 9007199254740993},
    }
    assert loads(str(MAX_INT)) == MAX_INT and loads(str(-MAX_INT)) == -MAX_INT


@pytest.mark.parametrize(
    "text,words",
    [
        (str(MAX_INT + 1), "out of range"),
        ("1" + "0" * 400, "out of range"),
        ("[1e400]", "out of range"),
        ("[-1e400]", "out of range"),
        ("[" * 33 + "]" * 33, "nested more than 32"),
        ('{"a":' * 40 + "1" + "}" * 40, "nested more than 32"),
        ("[" * 200_000 + "]" * 200_000, "nested more than"),
    ],
)
def test_out_of_bounds_json_is_a_value_error(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        loads(text)


def test_depth_32_is_still_read() -> None:
    assert loads("[" * 32 + "]" * 32) is not None


def test_files_are_bounded_and_regular(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_text("[" + "0," * 100 + "0]")
    with pytest.raises(ReportError, match="more than the 50 bytes"):
        load_json_file(tmp_path / "big.json", limit=50)
    (tmp_path / "bad.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ReportError, match=r"bad\.json: malformed JSON"):
        load_json_file(tmp_path / "bad.json")
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(ReportError, match="is a FIFO"):
        load_json_file(tmp_path / "pipe.json")


def test_a_deep_run_json_is_a_run_state_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"recipe": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(RunStateError, match=r"cannot read .*run\.json.*nested more than"):
        RunDir(tmp_path, resume=True).read_run()
