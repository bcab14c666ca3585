"""Tests for the ``nncompress`` command line: in-process through ``main`` and once as a real process."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nncompress.cli import main
from nncompress.data.datasets import FASHION_MNIST_ENV, IDX_FILES
from nncompress.models import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MLP_PARAMS = 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10  # 17226


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, out: str, err: str, *fragments: str) -> str:
    assert rc == 1
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nncompress: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write_idx(path: Path, arr: np.ndarray) -> None:
    """uint8 IDX file: magic 0x00000803 (images) or 0x00000801 (labels), big-endian dims, payload."""
    assert arr.dtype == np.uint8
    path.write_bytes(struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("cli") / "base.pt"
    rc, out, err = run_main(
        ["--quiet", "train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--out", str(path), "--json"]
    )
    return {"path": path, "rc": rc, "out": out, "err": err}


@pytest.fixture(scope="module")
def dense_eval(trained: dict[str, Any]) -> dict[str, Any]:
    rc, out, err = run_main(["evaluate", str(trained["path"]), "--data", "digits", "--json"])
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def pruned(trained: dict[str, Any]) -> dict[str, Any]:
    path = trained["path"].parent / "pruned.pt"
    rc, out, err = run_main(
        [
            "prune",
            str(trained["path"]),
            "--data",
            "digits",
            "--out",
            str(path),
            "--epochs-per-step",
            "1",
            "--final-epochs",
            "1",
            "--q-max",
            "1.0",
            "--tolerance",
            "100",
            "--json",
        ]
    )
    return {"path": path, "rc": rc, "out": out, "err": err}


# ---------------------------------------------------------------- happy paths


def test_train_prints_one_json_object(trained: dict[str, Any]) -> None:
    assert trained["rc"] == 0, trained["err"]
    assert trained["out"].count("\n") == 1
    res = json.loads(trained["out"])
    assert set(res) == {"out", "val_accuracy", "test_accuracy", "params", "seconds"}
    assert res["out"] == str(trained["path"])
    assert res["params"] == MLP_PARAMS
    # 3 epochs on digits is far above chance (0.1) but accuracies stay fractions.
    for key in ("val_accuracy", "test_accuracy"):
        assert 0.3 < res[key] <= 1.0
    assert res["seconds"] >= 0
    assert trained["path"].is_file()
    raw = torch.load(trained["path"], weights_only=True)
    assert raw["arch"]["name"] == "mlp"
    assert raw["meta"]["test_accuracy"] == res["test_accuracy"]
    assert raw["meta"]["data"] == "digits"


def test_evaluate_json_matches_train(trained: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate", str(trained["path"]), "--data", "digits", "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    res = json.loads(captured.out)  # the whole stdout is one JSON object
    assert isinstance(res, dict)
    assert {"accuracy", "loss", "params", "nonzero"} <= set(res)
    assert 0.0 <= res["accuracy"] <= 1.0
    assert res["loss"] > 0
    assert res["params"] == MLP_PARAMS
    assert 0 < res["nonzero"] <= res["params"]
    assert res["accuracy"] == json.loads(trained["out"])["test_accuracy"]
    assert res["file_bytes"] == trained["path"].stat().st_size
    assert res["data"] == "digits" and res["examples"] == 359
    assert "Traceback" not in captured.err


def test_evaluate_human_output(trained: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", "evaluate", str(trained["path"]), "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "on digits test split (359 examples): accuracy" in out
    assert f"parameters {MLP_PARAMS:,}" in out


def test_quiet_after_the_subcommand_hides_progress(trained: dict[str, Any]) -> None:
    rc, out, err = run_main(["evaluate", str(trained["path"]), "--data", "digits", "--quiet"])
    assert rc == 0 and "accuracy" in out and err == ""
    rc, out, err = run_main(
        [
            "prune",
            str(trained["path"]),
            "--data",
            "digits",
            "--quiet",
            "--q-max",
            "0.5",
            "--epochs-per-step",
            "1",
            "--final-epochs",
            "0",
            "--out",
            str(trained["path"].parent / "quiet.pt"),
        ]
    )
    assert rc == 0 and err == "" and "fewer nonzero weights" in out


def test_progress_bars_go_to_stderr(trained: dict[str, Any], tmp_path: Path) -> None:
    rc, out, err = run_main(
        [
            "prune",
            str(trained["path"]),
            "--data",
            "digits",
            "--q-max",
            "0.5",
            "--epochs-per-step",
            "1",
            "--final-epochs",
            "1",
            "--out",
            str(tmp_path / "p.pt"),
        ]
    )
    # stderr here is not a terminal: plain lines, no bars (tests/test_output.py has the bars)
    assert rc == 0 and "prune: " in err and "fine-tune: " in err and "\r" not in err
    assert "prune: " not in out


def test_sensitivity_writes_csv_and_plot(
    trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "sens"
    rc = main(
        ["sensitivity", str(trained["path"]), "--data", "digits", "--out", str(out_dir), "--q-max", "1.0", "--json"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert set(res["layer_scale"]) == {"fc1", "fc2", "fc3"}
    assert res["files"] == {"csv": str(out_dir / "sensitivity.csv"), "plot": str(out_dir / "sensitivity.png")}
    assert (out_dir / "sensitivity.png").read_bytes()[:8] == PNG_MAGIC

    with open(out_dir / "sensitivity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["layer"] == "(dense)"
    assert float(rows[0]["val_accuracy"]) == pytest.approx(res["dense_val_accuracy"], abs=1e-6)
    by_layer: dict[str, list[dict[str, str]]] = {}
    for r in rows[1:]:
        by_layer.setdefault(r["layer"], []).append(r)
    assert set(by_layer) == {"fc1", "fc2", "fc3"}
    for layer, lrows in by_layer.items():
        assert [float(r["q"]) for r in lrows] == [0.25, 0.5, 0.75, 1.0], layer
        dens = [float(r["density"]) for r in lrows]
        assert dens == sorted(dens, reverse=True) and 0 < dens[-1] < 1, layer


def test_prune_outputs(pruned: dict[str, Any], dense_eval: dict[str, Any]) -> None:
    assert pruned["rc"] == 0, pruned["err"]
    res = json.loads(pruned["out"])
    assert 0 < res["kept_fraction"] < 1
    assert res["compression"] > 1
    assert res["checkpoint"] == str(pruned["path"])
    assert pruned["path"].is_file()
    assert set(res["storage"].values()) <= {"dense", "csr"}

    log_dir = pruned["path"].with_name("pruned_prune")
    assert log_dir.is_dir()
    assert res["files"]["steps"] == str(log_dir / "steps.jsonl")
    lines = (log_dir / "steps.jsonl").read_text().splitlines()
    assert len(lines) >= 3
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert {"q", "density", "val_accuracy", "seconds"} <= set(rec)
    assert records[0]["stage"] == "dense" and records[-1]["stage"] == "final"
    for name in ("hist_before.png", "hist_after.png"):
        assert (log_dir / name).read_bytes()[:8] == PNG_MAGIC, name
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["kept_fraction"] == res["kept_fraction"]
    assert summary["file_bytes"] == pruned["path"].stat().st_size
    assert summary["dense"]["nonzero"] == dense_eval["nonzero"]
    probe = summary["finetune"]  # the probe ran and says what it chose
    assert probe["probe_kl"] is not None and probe["lr"] in (0.05, 0.02) and probe["note"]


def test_evaluate_pruned_has_fewer_nonzero(
    pruned: dict[str, Any], dense_eval: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert pruned["rc"] == 0, pruned["err"]
    rc = main(["evaluate", str(pruned["path"]), "--data", "digits", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res["nonzero"] < dense_eval["nonzero"]
    assert res["nonzero"] == json.loads(pruned["out"])["pruned"]["nonzero"]
    assert 0.0 <= res["accuracy"] <= 1.0


# ---------------------------------------------------------------- error paths


def test_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    line = assert_one_line_error(*run_main(["evaluate", str(missing), "--data", "digits", "--json"]), "does not exist")
    assert str(missing) in line


def test_data_folder_without_files(trained: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        *run_main(["evaluate", str(trained["path"]), "--data", str(empty)]), "missing data file", IDX_FILES[0]
    )


def test_fashion_mnist_not_installed(trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "not-there"))
    assert_one_line_error(
        *run_main(["evaluate", str(trained["path"]), "--data", "fashion-mnist"]),
        "apt-get install -y dataset-fashion-mnist",
        str(tmp_path / "not-there"),
    )


@pytest.mark.parametrize(
    "flag,value,fragment",
    [
        ("--tolerance", "-1", "--tolerance must"),
        ("--q-step", "0", "--q-step must"),
        ("--probe-kl", "0", "--probe-kl must"),
        ("--fallback-lr", "-0.5", "--fallback-lr must"),
    ],
)
def test_prune_bad_option(trained: dict[str, Any], tmp_path: Path, flag: str, value: str, fragment: str) -> None:
    out = tmp_path / "p.pt"
    line = assert_one_line_error(
        *run_main(["prune", str(trained["path"]), "--data", "digits", "--out", str(out), flag, value]), fragment
    )
    assert f"got {float(value)!r}" in line
    assert not out.exists()


def test_prune_without_probe_says_so(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "p.pt"
    rc, stdout, err = run_main(
        [
            "prune",
            str(trained["path"]),
            "--data",
            "digits",
            "--out",
            str(out),
            "--no-probe",
            "--epochs-per-step",
            "1",
            "--final-epochs",
            "0",
            "--q-max",
            "0.5",
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert "fine-tuned at lr 0.05, distillation 0 (no probe)" in stdout


def test_whole_pickled_model(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(build_model("mlp", (1, 8, 8), 10), path)
    assert_one_line_error(
        *run_main(["evaluate", str(path), "--data", "digits"]), "pickled Python objects", "state_dict"
    )


def test_model_does_not_accept_input_shape(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "idx28"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in ((IDX_FILES[0], 20), (IDX_FILES[2], 10)):
        write_idx(folder / name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    for name, n in ((IDX_FILES[1], 20), (IDX_FILES[3], 10)):
        write_idx(folder / name, (np.arange(n) % 10).astype(np.uint8))
    assert_one_line_error(
        *run_main(["evaluate", str(trained["path"]), "--data", str(folder)]), "does not accept", "(1, 28, 28)"
    )


def test_bare_state_dict_needs_model_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bare.pt"
    torch.save(build_model("mlp", (1, 8, 8), 10).state_dict(), path)
    assert_one_line_error(*run_main(["evaluate", str(path), "--data", "digits"]), "--model")
    assert main(["evaluate", str(path), "--data", "digits", "--model", "mlp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == MLP_PARAMS


def test_subprocess_exit_status(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("nncompress")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "nncompress.cli"]
    missing = tmp_path / "missing.pt"
    proc = subprocess.run(
        [*cmd, "evaluate", str(missing), "--data", "digits"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"nncompress: error: checkpoint {missing} does not exist"]


# ---------------------------------------------------------------- review findings


def test_malformed_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "x.pt", "--data", "digits", "--out", "y.pt", "--q0", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nncompress: error:") and "--q0" in err[0]


def test_unusable_out_is_refused_before_work(trained: dict[str, Any], tmp_path: Path) -> None:
    rc, out, err = run_main(["train", "--model", "mlp", "--data", "digits", "--out", str(tmp_path)])
    assert_one_line_error(rc, out, err, "is a folder")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    rc, out, err = run_main(["prune", str(trained["path"]), "--data", "digits", "--out", str(blocker / "p.pt")])
    assert_one_line_error(rc, out, err, "is a file, not a folder")


def test_missing_compressed_file_is_one_line(tmp_path: Path) -> None:
    rc, out, err = run_main(["inspect", str(tmp_path / "none.nnc")])
    assert_one_line_error(rc, out, err, "none.nnc")


def test_lenet5_on_digits_is_a_clear_error(tmp_path: Path) -> None:
    rc, out, err = run_main(["train", "--model", "lenet5", "--data", "digits", "--out", str(tmp_path / "m.pt")])
    assert_one_line_error(rc, out, err, "lenet5", "too small")


def test_negative_max_drop_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    rc, out, err = run_main(
        ["prune", str(trained["path"]), "--data", "digits", "--out", str(tmp_path / "p.pt"), "--max-drop", "-3"]
    )
    assert_one_line_error(rc, out, err, "max_drop")


def test_outputs_get_the_usual_file_mode(trained: dict[str, Any]) -> None:
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert trained["path"].stat().st_mode & 0o777 == 0o666 & ~umask


_AS_IF_ON_GPU = [False]


def _gpu_tag(obj: Any) -> Any:
    """While _AS_IF_ON_GPU[0], torch.save names every storage "cuda:0", as a checkpoint written on a GPU does."""
    return "cuda:0" if _AS_IF_ON_GPU[0] else None


torch.serialization.register_package(0, _gpu_tag, lambda obj, location: None)


def _save_as_if_on_gpu(obj: Any, path: Path) -> None:
    _AS_IF_ON_GPU[0] = True
    try:
        torch.save(obj, path)
    finally:
        _AS_IF_ON_GPU[0] = False


def test_gpu_saved_checkpoints_load_on_the_cpu(
    trained: dict[str, Any], dense_eval: dict[str, Any], tmp_path: Path
) -> None:
    gpu = tmp_path / "gpu.pt"
    _save_as_if_on_gpu(torch.load(trained["path"], weights_only=True), gpu)
    if not torch.cuda.is_available():  # the file really names CUDA storages: unmapped, it would not load here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu, weights_only=True)
    rc, out, err = run_main(["evaluate", str(gpu), "--data", "digits", "--json"])
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == dense_eval["accuracy"]
    whole = tmp_path / "whole.pt"  # a whole pickled model is still refused unread, wherever it was saved
    _save_as_if_on_gpu(build_model("mlp", (1, 8, 8), 10), whole)
    assert_one_line_error(
        *run_main(["evaluate", str(whole), "--data", "digits"]), "pickled Python objects", "state_dict"
    )


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path: Path) -> None:
    rc, out, err = run_main(["--quiet", "demo", "--out", str(tmp_path)])
    assert rc == 0, err
    assert "fewer nonzero weights" in out and "decoded file" in out
    (run,) = tmp_path.iterdir()
    for name in (
        "base.pt",
        "model.nnc",
        "sensitivity.csv",
        "steps.jsonl",
        "summary.json",
        "recipe.yaml",
        "environment.json",
        "histograms.json",
        "report.html",
        "report.md",
    ):
        assert (run / name).stat().st_size > 0
    assert str(run / "report.html") in out.splitlines()[-1]
    from nncompress.recipe import load_recipe

    assert load_recipe(run / "recipe.yaml") == load_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "mlp-digits.yaml"
    )  # the recipe the README shows
    rc, out, err = run_main(["--quiet", "demo", "--out", str(tmp_path)])  # a second demo gets its own folder
    assert rc == 0, err
    assert len(list(tmp_path.iterdir())) == 2
