"""matplotlib (`plots`) and tqdm (`progress`) are optional extras: without them the library
and the CLI do their work, figures are skipped saying so, and progress is plain lines."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncompress.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.pyplot", "matplotlib.lines"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now raises ImportError


@pytest.fixture
def checkpoint(tmp_path: Path, trained_mlp, digits) -> Path:  # type: ignore[no-untyped-def]
    from nncompress.pipeline import save_trained

    path = tmp_path / "base.pt"
    save_trained(trained_mlp(), digits, path, {})
    return path


def test_importing_needs_neither() -> None:
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "sys.modules['tqdm'] = None\n"
        "import nncompress, nncompress.cli, nncompress.pipeline, nncompress.api, nncompress.report.page\n"
        "from nncompress.report.plots import figures_available\n"
        "assert not figures_available()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


def test_histograms_are_skipped_with_a_logged_note(
    no_matplotlib: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nncompress.report.plots import sensitivity_plot, weight_histograms

    with caplog.at_level(logging.WARNING, logger="nncompress.report.plots"):
        assert weight_histograms({"fc1": np.ones((3, 4))}, tmp_path / "h.png", "t") is False
        assert sensitivity_plot(0.9, {"fc1": [(0.5, 0.8)]}, tmp_path / "s.png") is False
    assert list(tmp_path.iterdir()) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / name} not drawn: matplotlib is not installed (pip install 'nncompress[plots]' draws it)"
        for name in ("h.png", "s.png")
    ]


def test_sensitivity_cli_writes_the_csv_and_skips_the_plot(
    no_matplotlib: None,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "sens"
    assert main(["sensitivity", str(checkpoint), "--data", "digits", "--out", str(out), "--q-max", "0.5"]) == 0
    captured = capsys.readouterr()
    assert (out / "sensitivity.csv").is_file() and not (out / "sensitivity.png").exists()
    assert f"wrote {out / 'sensitivity.csv'}\n" in captured.out and "png" not in captured.out
    assert "sensitivity.png not drawn: matplotlib is not installed" in caplog.text
    assert (
        main(
            [
                "sensitivity",
                str(checkpoint),
                "--data",
                "digits",
                "--out",
                str(tmp_path / "j"),
                "--q-max",
                "0.5",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["files"] == {"csv": str(tmp_path / "j" / "sensitivity.csv")}


def test_prune_cli_without_matplotlib_or_tqdm(
    no_matplotlib: None,
    monkeypatch: pytest.MonkeyPatch,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    out = tmp_path / "pruned.pt"
    assert (
        main(
            [
                "prune",
                str(checkpoint),
                "--data",
                "digits",
                "--out",
                str(out),
                "--q-max",
                "0.5",
                "--epochs-per-step",
                "1",
                "--final-epochs",
                "0",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    folder = tmp_path / "pruned_prune"
    assert f"step log, summary in {folder}" in captured.out
    assert "prune: " in captured.err and "fine-tune: 1/1 epoch" in captured.err  # progress as lines
    assert out.is_file() and sorted(p.name for p in folder.iterdir()) == ["steps.jsonl", "summary.json"]
    assert "hist_before.png not drawn" in caplog.text and "hist_after.png not drawn" in caplog.text
