"""A real `nncompress compress` process, killed mid-way (SIGKILL, SIGTERM) and resumed,
writes the same file, byte for byte, as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = """\
model: mlp
data: digits
seed: 5
train: {epochs: 6, batch_size: 64}
sensitivity: {q_max: 1.0}
prune: {epochs_per_step: 2, recover_epochs: 1, final_epochs: 2, q_max: 1.5, batch_size: 64, tolerance: 1.0}
share: {epochs: 2, batch_size: 64}
"""


def _cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("nncompress")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "nncompress.cli"]
    return [*command, "--quiet", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count in every run: same numerics


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def uninterrupted(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    run = tmp_path_factory.mktemp("plain") / "run"
    proc = subprocess.run(
        _cmd("compress", "--recipe", str(recipe), "--run-dir", str(run), "--json"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert not (run / "state").exists()  # a finished run drops its saved state
    return run, json.loads(proc.stdout)["training_calls"]


def _kill_after(cmd: list[str], run: Path, saved: int, sig: int) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait until the journal holds ``saved`` training calls, then send ``sig``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((run / "state").glob("fit-*.pt"))) >= saved:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_bytes(
    recipe: Path, uninterrupted: tuple[Path, int], tmp_path: Path, sig: int
) -> None:
    plain_run, fits = uninterrupted
    assert fits >= 5  # training, control, pruning steps, centroid tuning
    run = tmp_path / "run"
    killed = _kill_after(_cmd("compress", "--recipe", str(recipe), "--run-dir", str(run)), run, fits // 2, sig)
    assert killed.returncode != 0
    assert not (run / "model.nnc").exists() and not (run / "summary.json").exists()
    if sig == signal.SIGTERM:
        assert killed.returncode == 130
        assert f"--resume --run-dir {run}" in killed.stderr.strip().splitlines()[-1]
    if sig == signal.SIGTERM:
        assert not list(run.rglob(".*.tmp"))  # nothing half-written left behind
    resumed = subprocess.run(
        _cmd("compress", "--resume", "--run-dir", str(run), "--json"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_training_calls"] >= fits // 2 - 1
    assert (run / "model.nnc").read_bytes() == (plain_run / "model.nnc").read_bytes()
    assert not list(run.rglob(".*.tmp")) and not (run / "state").exists()
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    plain_steps = [json.loads(line) for line in (plain_run / "steps.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(steps) == strip(plain_steps)


@pytest.mark.slow
def test_resume_refuses_other_settings_and_a_missing_run(tmp_path: Path, uninterrupted: tuple[Path, int]) -> None:
    run, _ = uninterrupted
    mixed = subprocess.run(
        _cmd("compress", "--resume", "--run-dir", str(run), "--tolerance", "0.5"),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert mixed.returncode == 1 and "give only --run-dir" in mixed.stderr
    missing = subprocess.run(
        _cmd("compress", "--resume", "--run-dir", str(tmp_path / "nothing")),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert missing.returncode == 1 and "no run to resume" in missing.stderr
    again = subprocess.run(
        _cmd("compress", "--recipe", "x.yaml", "--run-dir", str(run)),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1


def test_a_finished_run_folder_is_not_overwritten(uninterrupted: tuple[Path, int], recipe: Path) -> None:
    run, _ = uninterrupted
    again = subprocess.run(
        _cmd("compress", "--recipe", str(recipe), "--run-dir", str(run)),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert again.returncode == 1 and "already holds a run" in again.stderr


def test_resume_of_a_finished_run_is_refused(uninterrupted: tuple[Path, int]) -> None:
    run, _ = uninterrupted
    done = subprocess.run(
        _cmd("compress", "--resume", "--run-dir", str(run)), capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 1 and "has finished" in done.stderr


@pytest.mark.slow
def test_a_bad_input_leaves_no_half_made_run(tmp_path: Path, recipe: Path) -> None:
    run = tmp_path / "run"
    bad = subprocess.run(
        _cmd("compress", str(tmp_path / "missing.pt"), "--data", "digits", "--run-dir", str(run)),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert bad.returncode == 1 and "missing.pt" in bad.stderr
    assert not (run / "run.json").exists()  # the corrected command can use the same folder
    typo = tmp_path / "typo.yaml"
    typo.write_text(recipe.read_text() + "\n")
    typo.write_text(typo.read_text().replace("prune: {", "prune: {groups: fc1+fc9, "))
    named = subprocess.run(
        _cmd("compress", "--recipe", str(typo), "--run-dir", str(run)),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert named.returncode == 1 and "prune.groups" in named.stderr and "fc9" in named.stderr
    assert not (run / "run.json").exists() and not (run / "state").exists()  # refused before any training


def test_flags_are_named_in_errors_and_foreign_folders_are_left_alone(tmp_path: Path, capsys) -> None:
    from nncompress.cli import main

    (tmp_path / "mine.txt").write_text("not a run")
    assert main(["--quiet", "compress", "x.pt", "--data", "digits", "--run-dir", str(tmp_path)]) == 1
    assert (tmp_path / "mine.txt").read_text() == "not a run" and sorted(p.name for p in tmp_path.iterdir()) == [
        "mine.txt"
    ]
    assert "is not empty and holds no run" in capsys.readouterr().err
    assert main(["--quiet", "compress", "x.pt", "--data", "digits", "--budget", "lavish"]) == 1
    assert capsys.readouterr().err.strip() == "nncompress: error: --budget: expected one of even, greedy, got 'lavish'"
    assert main(["--quiet", "compress", "x.pt", "--data", "digits", "--min-members", "0"]) == 1
    assert capsys.readouterr().err.strip() == "nncompress: error: --min-members: expected an integer >= 1, got 0"
