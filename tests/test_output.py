"""Terminal output: progress as bars on a terminal and as plain lines in a file or pipe,
with and without tqdm; the inspect table's columns with long tensor names."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.cli import main
from nncompress.progress import Progress, ProgressBars, ProgressLines
from nncompress.report.text import file_table_lines

SRC = str(Path(__file__).resolve().parents[1] / "src")
CURSOR = re.compile(r"\r|\x1b\[")


class _Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(callback, task: str, total: int, clock: _Clock | None = None, step_s: float = 0.0) -> None:
    for done in range(1, total + 1):
        if clock is not None:
            clock.now += step_s
        callback(Progress(task, done, total, {"loss": 0.5 / done}))


# ---------------------------------------------------------------- progress


def test_lines_mark_start_and_end_and_are_rate_limited() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = ProgressLines(stream, interval=5.0, clock=clock)
    _feed(lines, "train", 21, clock, step_s=0.5)  # 10 s from the first event to the last
    assert stream.getvalue().splitlines() == [
        "train: 1/21 epochs (5 %) loss=0.5000",
        "train: 11/21 epochs (52 %), 5.0 s, about 5 s left loss=0.0455",
        "train: 21/21 epochs (100 %), 10.0 s loss=0.0238",
    ]


def test_lines_of_a_long_task_come_at_most_once_a_tenth() -> None:
    stream, clock = io.StringIO(), _Clock()
    lines = ProgressLines(stream, interval=5.0, clock=clock)
    _feed(lines, "coding", 1000, clock, step_s=60.0)  # slow steps: the tenths limit the lines, not the clock
    assert 10 <= len(stream.getvalue().splitlines()) <= 12


def test_lines_start_again_when_a_task_restarts() -> None:
    stream = io.StringIO()
    lines = ProgressLines(stream, interval=1e9, clock=_Clock())
    _feed(lines, "fine-tune", 2)
    _feed(lines, "fine-tune", 2)
    lines(Progress("prune", 1, 5, {}))
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == [
        "fine-tune: 1/2 epochs",
        "fine-tune: 2/2 epochs",
        "fine-tune: 1/2 epochs",
        "fine-tune: 2/2 epochs",
        "prune: 1/5 steps",
    ]


def test_bars_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    stream = _Terminal()
    bars = ProgressBars(enabled=True, stream=stream)
    _feed(bars, "train", 3)
    bars.close()
    assert "%|" in stream.getvalue() and "\r" in stream.getvalue()


def test_lines_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bars = ProgressBars(enabled=True, stream=stream)
    _feed(bars, "train", 3)
    _feed(bars, "k-means", 2)
    bars.close()
    text = stream.getvalue()
    assert "train: 1/3 epochs" in text and "train: 3/3 epochs" in text and "k-means: 2/2 layers" in text
    assert not CURSOR.search(text) and "%|" not in text


def test_terminal_without_tqdm_gets_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    stream = _Terminal()
    bars = ProgressBars(enabled=True, stream=stream)
    _feed(bars, "train", 2)
    bars.close()
    assert stream.getvalue().splitlines()[-1].startswith("train: 2/2 epochs")
    assert not CURSOR.search(stream.getvalue())


def test_disabled_writes_nothing() -> None:
    stream = _Terminal()
    bars = ProgressBars(enabled=False, stream=stream)
    _feed(bars, "train", 3)
    bars.close()
    assert stream.getvalue() == ""


def test_cli_progress_into_a_pipe_is_plain_lines(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nncompress",
            "train",
            "--model",
            "mlp",
            "--data",
            "digits",
            "--epochs",
            "2",
            "--out",
            str(tmp_path / "base.pt"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        timeout=240,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "train: 1/2 epochs" in err and "train: 2/2 epochs" in err
    assert "\r" not in err and "\x1b[" not in err


def test_cli_without_tqdm_still_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert (
        main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "base.pt")]) == 0
    )
    captured = capsys.readouterr()
    assert "train: 1/1 epoch " in captured.err and "wrote" in captured.out


# ---------------------------------------------------------------- inspect's table

_BIG = {
    "tensor": "bert.embeddings.word_embeddings.weight",
    "codec": "shared",
    "weights": 11_720_448,
    "kept": 1.0,
    "weight_bits_fixed": 5,
    "weight_bits_huffman": 4.01,
    "index_bits_fixed": 0,
    "index_bits_huffman": 0.0,
    "bytes": 5_900_000,
    "ratio": 7.9,
}


def _cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def test_long_names_and_wide_numbers_keep_their_columns_apart() -> None:
    rows = [
        _BIG,
        {"tensor": "classifier.0.weight", "codec": "raw", "weights": 1536, "kept": 1.0, "bytes": 6144, "ratio": 1.0},
    ]
    lines = file_table_lines(
        {
            "layers": rows,
            "totals": {**_BIG, "weights": 11_721_984},
            "file_bytes": 5_910_000,
            "dense_bytes": 46_887_936,
            "ratio": 7.93,
        }
    )
    head, big, raw, total = lines[:4]
    assert _cells(big) == [
        "bert.embeddings.word_embeddings.weight",
        "11,720,448",
        "100.00",
        "5",
        "4.01",
        "0",
        "0.00",
        "5,900,000",
        "7.9x",
    ]
    assert _cells(raw) == ["classifier.0.weight", "1,536", "100.00", "raw", "6,144", "1.0x"]
    assert _cells(total)[:2] == ["total", "11,721,984"]
    assert "weight  11,720,448" in big
    # numbers right-aligned under their header: every row's weights cell ends where "weights" ends
    end = head.index("weights") + len("weights")
    for line in (big, raw, total):
        assert line[:end].endswith(_cells(line)[1])
        assert line[end : end + 2] == "  "
    assert lines[-1].startswith("whole file 5,910,000 bytes")


class _LongNames(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder_block_with_a_rather_long_module_name = nn.Linear(40, 30)
        self.head = nn.Linear(30, 3)


def test_inspect_of_a_file_with_long_tensor_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nncompress.modelfile import save_compressed

    torch.manual_seed(0)
    model = _LongNames()
    path = tmp_path / "long.nnc"
    save_compressed(path, model, {}, quantized={"encoder_block_with_a_rather_long_module_name.weight": "int8"})
    assert main(["inspect", str(path), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {_cells(line)[0]: _cells(line) for line in lines[1:-1]}
    for row in table["layers"]:
        cells = by_name[row["tensor"]]
        assert cells[1] == f"{row['weights']:,}" and cells[-2] == f"{row['bytes']:,}"
    assert by_name["encoder_block_with_a_rather_long_module_name.weight"][3] == "int8"
    assert len({len(line) for line in lines[:-1]}) == 1  # the last column is right-aligned on every row
