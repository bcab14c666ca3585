"""The command line never overwrites what it reads, nor one of its own outputs with another, and says so
in one line before any work; plus the path-related messages (wrong kind of file, temp names)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nncompress.atomic import atomic_open
from nncompress.config import SensitivityConfig
from nncompress.errors import PathError
from nncompress.data.datasets import IDX_FILES
from nncompress.pruning.sensitivity import SensitivityRow, layer_scales, to_csv
from test_cli import assert_one_line_error, run_main, write_idx


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-epoch checkpoint and a finished compress run of it (no pruning, no centroid tuning: quick)."""
    root = tmp_path_factory.mktemp("paths")
    ckpt, nnc, run = root / "base.pt", root / "base.nnc", root / "run"
    rc, _, err = run_main(
        ["--quiet", "train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", str(ckpt)]
    )
    assert rc == 0, err
    rc, _, err = run_main(
        [
            "--quiet",
            "compress",
            str(ckpt),
            "--data",
            "digits",
            "--skip-prune",
            "--share-epochs",
            "0",
            "--run-dir",
            str(run),
            "--out",
            str(nnc),
        ]
    )
    assert rc == 0, err
    return {"ckpt": ckpt, "nnc": nnc, "run": run}


def _copy(src: Path, dst: Path) -> bytes:
    shutil.copyfile(src, dst)
    return dst.read_bytes()


def _refused(argv: list[str], *fragments: str) -> str:
    return assert_one_line_error(*run_main(["--quiet", *argv]), *fragments)


# ---------------------------------------------------------------- an output that is an input


def test_decompress_onto_its_input_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    nnc = tmp_path / "c.nnc"
    before = _copy(files["nnc"], nnc)
    _refused(["decompress", str(nnc), "--out", str(nnc)], f"--out {nnc}", f"the input {nnc}", "pick another --out")
    assert nnc.read_bytes() == before


@pytest.mark.parametrize("command", ["prune", "compress"])
def test_out_onto_the_checkpoint_is_refused(
    files: dict[str, Path], tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = _copy(files["ckpt"], tmp_path / "m.pt")
    os.symlink("m.pt", tmp_path / "link.pt")
    for out in ("m.pt", "./m.pt", "link.pt"):  # the same file however it is spelled
        _refused(
            [command, "m.pt", "--data", "digits", "--out", out],
            f"--out {out}",
            "the checkpoint m.pt",
            "pick another --out",
        )
    assert (tmp_path / "m.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.pt", "m.pt"]  # no runs/, no m_prune/


def test_train_out_onto_a_data_file_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in ((IDX_FILES[0], 20), (IDX_FILES[2], 10)):
        write_idx(tmp_path / name, rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
    for name, n in ((IDX_FILES[1], 20), (IDX_FILES[3], 10)):
        write_idx(tmp_path / name, (np.arange(n) % 10).astype(np.uint8))
    target = tmp_path / IDX_FILES[0]
    before = target.read_bytes()
    _refused(["train", "--model", "mlp", "--data", str(tmp_path), "--out", str(target)], "the data file")
    assert target.read_bytes() == before


def test_sensitivity_out_onto_the_checkpoint_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tmp_path / "sensitivity.csv"  # an odd name, but the scan would write its table over it
    before = _copy(files["ckpt"], ckpt)
    _refused(
        ["sensitivity", str(ckpt), "--data", "digits", "--out", str(tmp_path)],
        "its sensitivity.csv",
        f"the checkpoint {ckpt}",
    )
    assert ckpt.read_bytes() == before


# ---------------------------------------------------------------- a report over another output


def test_compress_report_onto_out_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    run, out = tmp_path / "r5", tmp_path / "r5.html"  # an odd name for the .nnc, but the only one a report takes
    _refused(
        [
            "compress",
            str(files["ckpt"]),
            "--data",
            "digits",
            "--run-dir",
            str(run),
            "--out",
            str(out),
            "--report",
            str(out),
        ],
        f"--report {out} would overwrite --out {out}",
        "pick another --report",
    )
    md = tmp_path / "r5.md"  # the Markdown twin counts too
    _refused(
        [
            "compress",
            str(files["ckpt"]),
            "--data",
            "digits",
            "--run-dir",
            str(run),
            "--out",
            str(md),
            "--report",
            str(tmp_path / "r5.html"),
        ],
        "Markdown twin",
        "pick another --report",
    )
    _refused(
        [
            "compress",
            str(files["ckpt"]),
            "--data",
            "digits",
            "--run-dir",
            str(run),
            "--report",
            str(run / "summary.json"),
        ],
        "ending in .html",
    )  # no run file is named .html
    assert not run.exists() and not out.exists() and not md.exists()


@pytest.mark.parametrize("name", ["summary.json", "run.json", "histograms.json", "steps.jsonl", "notes.txt"])
def test_report_onto_a_run_file_is_refused(files: dict[str, Path], tmp_path: Path, name: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    (run / "notes.txt").write_text("not ours, but in the run folder: kept too\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    _refused(["report", str(run), "--out", str(run / name)], "ending in .html")  # a report's name never is a run's
    (run / "summary.md").write_text("the user's notes\n")  # the page's Markdown twin would land on a file of theirs
    before[run / "summary.md"] = (run / "summary.md").read_bytes()
    _refused(["report", str(run), "--out", str(run / "summary.html")], "Markdown twin", "pick another --out")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_report_onto_the_runs_compressed_file_is_refused(files: dict[str, Path]) -> None:
    before = files["nnc"].read_bytes()
    _refused(["report", str(files["run"]), "--out", str(files["nnc"])], "ending in .html")
    assert files["nnc"].read_bytes() == before


def test_report_may_replace_an_earlier_report(files: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    for _ in range(2):
        rc, _, err = run_main(["report", str(run), "--out", str(run / "report.html")])
        assert rc == 0, err
    assert (run / "report.md").is_file()


def test_a_report_needs_an_html_name_so_a_rerun_can_recognise_it(files: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    _refused(["report", str(run), "--out", str(run / "report")], "ending in .html")
    assert not (run / "report").exists()


def test_a_report_never_replaces_figures_it_did_not_write(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "page_files").mkdir()
    (tmp_path / "page_files" / "steps.png").write_bytes(b"someone else's plot")
    _refused(
        ["report", str(files["run"]), "--out", str(tmp_path / "page.html")],
        "page_files",
        "steps.png",
        "pick another report name",
    )
    assert (tmp_path / "page_files" / "steps.png").read_bytes() == b"someone else's plot"


# ---------------------------------------------------------------- the wrong kind of file


@pytest.mark.parametrize("command", ["inspect", "decompress"])
def test_pytorch_checkpoint_given_for_an_nnc_says_so(files: dict[str, Path], tmp_path: Path, command: str) -> None:
    argv = [command, str(files["ckpt"])] + (["--out", str(tmp_path / "x.pt")] if command == "decompress" else [])
    _refused(argv, "is a PyTorch checkpoint", "nncompress compress")
    assert not (tmp_path / "x.pt").exists()


def test_report_of_a_file_says_it_is_no_run_folder(files: dict[str, Path], tmp_path: Path) -> None:
    line = _refused(["report", str(files["ckpt"]), "--out", str(tmp_path / "r.html")], "is a file, not a run folder")
    assert "does not exist" not in line


# ---------------------------------------------------------------- temp names, flags that do nothing, leftovers


def test_atomic_errors_name_the_target_not_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "taken"

    def refuse(src: str, dst: str) -> None:  # e.g. a rename across a mount that changed under the write
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError) as exc:
        with atomic_open(target) as handle:
            handle.write(b"x")
    assert exc.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # and the temp file is gone


def test_atomic_open_never_replaces_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(PathError, match="taken is a folder"):
        with atomic_open(target) as handle:
            handle.write(b"x")
    assert list(tmp_path.iterdir()) == [target]  # nothing was written


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_out_names_the_out(files: dict[str, Path]) -> None:
    line = _refused(["decompress", str(files["nnc"]), "--out", "/proc/x.pt"], "/proc/x.pt")
    assert ".tmp" not in line


def test_train_zero_epochs_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    _refused(["train", "--model", "mlp", "--data", "digits", "--epochs", "0", "--out", str(out)], "--epochs")
    assert not out.exists()


def test_prune_max_drop_needs_sensitivity(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    _refused(
        ["prune", str(files["ckpt"]), "--data", "digits", "--out", str(out), "--max-drop", "5"],
        "--max-drop",
        "--sensitivity",
    )
    assert not out.exists()


def test_prune_sensitivity_without_max_drop_uses_the_default(files: dict[str, Path], tmp_path: Path) -> None:
    from nncompress.cli import build_parser
    from nncompress.cli.training import _prune_config

    # fc1 loses 0.5 points per unit of q, fc2 1 point: the default 2-point budget tells them apart
    rows = [
        SensitivityRow(layer, q, 1.0 - q / 2, 0.9 - q * k)
        for k, layer in ((0.01, "fc1"), (0.02, "fc2"))
        for q in (0.5, 1.0, 1.5)
    ]
    to_csv(0.9, rows, tmp_path / "sensitivity.csv")
    args = build_parser().parse_args(
        ["prune", str(files["ckpt"]), "--data", "digits", "--out", "p.pt", "--sensitivity", str(tmp_path)]
    )
    default = layer_scales(rows, 0.9, SensitivityConfig().max_drop)
    assert default["fc1"] > 1.0 > default["fc2"] and default != layer_scales(rows, 0.9, 0.5)
    assert _prune_config(args).layer_scale == default


def test_failed_compress_leaves_no_folders_it_made(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(["compress", str(files["ckpt"]), "--data", "digits", "--groups", "nosuch"], "nosuch")
    _refused(
        ["compress", str(files["ckpt"]), "--data", "digits", "--groups", "nosuch", "--run-dir", "a/b/run"], "nosuch"
    )
    _refused(["compress", str(tmp_path / "missing.pt"), "--data", "digits", "--run-dir", "new"], "missing.pt")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()  # a folder that was there before stays
    _refused(["compress", str(files["ckpt"]), "--data", "digits", "--groups", "nosuch", "--run-dir", "mine"], "nosuch")
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and list((tmp_path / "mine").iterdir()) == []


def test_failed_resume_report_check_touches_nothing(files: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    (run / "state").mkdir()  # an unfinished run: summary.json without the journal's folder reads as finished
    saved: dict[str, Any] = json.loads((run / "run.json").read_text())
    _refused(["compress", "--resume", "--run-dir", str(run), "--report", str(run / "run.json")], "ending in .html")
    assert json.loads((run / "run.json").read_text()) == saved


def test_compress_training_zero_epochs_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: mlp\ndata: digits\ntrain: {epochs: 0}\n")
    _refused(["compress", "--recipe", str(recipe), "--run-dir", str(tmp_path / "run")], "train.epochs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, head",
    [
        (["compress", "{ckpt}", "--data", "digits", "--groups", "nosuch", "--run-dir", "{tmp}/r"], "--groups: unknown"),
        (["compress", "{ckpt}", "--data", "digits", "--max-drop", "-1"], "--max-drop: expected"),
        (["prune", "{ckpt}", "--data", "digits", "--groups", "nosuch", "--out", "{tmp}/p.pt"], "--groups: unknown"),
        (["sensitivity", "{ckpt}", "--data", "digits", "--q-step", "0", "--out", "{tmp}/s"], "--q-step must"),
    ],
)
def test_errors_name_the_flag_typed(files: dict[str, Path], tmp_path: Path, argv: list[str], head: str) -> None:
    line = _refused([a.format(ckpt=files["ckpt"], tmp=tmp_path) for a in argv], head)
    assert line.startswith(f"nncompress: error: {head}")


def test_a_recipe_key_is_named_as_the_key(files: dict[str, Path], tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: mlp\ndata: digits\nprune: {groups: fc9}\n")
    _refused(
        ["compress", str(files["ckpt"]), "--recipe", str(recipe), "--run-dir", str(tmp_path / "r")],
        "prune.groups: unknown",
    )
