"""Runs on two processes (torchrun, gloo on the CPU): the same decisions on every rank, files
written by rank 0 alone, a lost rank that ends the run with a clear message and a folder
that resumes to the same bytes as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nncompress import distributed
from nncompress.errors import DistributedError

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is needed",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}", *args]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)


# -- one process: every helper is a no-op ------------------------------------------


def test_helpers_are_no_ops_on_one_process() -> None:
    assert not distributed.active() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.span(10) == (0, 10)
    assert distributed.all_sum([1.5, 2.0]) == [1.5, 2.0]
    assert distributed.on_main(lambda: {"a": (1, 2)}) == {"a": (1, 2)}  # the object itself, no JSON copy
    distributed.check_identical([("w", torch.ones(3))], "weights")


def test_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "12.5")
    assert distributed.timeout_seconds() == 12.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(DistributedError, match="NNCOMPRESS_DIST_TIMEOUT"):
        distributed.timeout_seconds()


# -- library level, two ranks -------------------------------------------------------


def _on_two_ranks_and_one(tmp_path: Path, job: str) -> None:
    """The worker's ``job`` under torchrun in ``tmp_path``, then in one process in ``tmp_path/one``."""
    two = _run(_torchrun(str(WORKER), job, str(tmp_path)))
    assert two.returncode == 0, two.stderr[-3000:]
    (tmp_path / "one").mkdir()
    one = subprocess.run(
        [sys.executable, str(WORKER), job, str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        cwd=ROOT,
    )
    assert one.returncode == 0, one.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fit", "fit_rows"])
def test_split_batches_follow_the_single_process_trajectory(tmp_path: Path, mode: str) -> None:
    """Without dropout or BatchNorm, averaging the two halves' gradients (weighted by their
    sizes) is the whole batch's gradient: the weights match one process up to rounding, whether
    each layer steps inside backward or (a rank without examples) all step after it."""
    _on_two_ranks_and_one(tmp_path, mode)
    r0, r1 = torch.load(tmp_path / "fit0.pt"), torch.load(tmp_path / "fit1.pt")
    single = torch.load(tmp_path / "one" / "fit0.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # bit for bit the same on both ranks
    for key, value in single.items():
        assert torch.allclose(r0[key], value, rtol=0, atol=1e-5), key


@pytest.mark.slow
def test_pruning_is_identical_on_both_ranks_and_rank_0_alone_writes(tmp_path: Path) -> None:
    """Train, prune, share and code the digits MLP on two ranks. Both end with the same bytes in
    every weight, mask and codebook; only rank 0's output file and run folder exist (each rank was
    given its own names); the result is within noise of one process: dropout draws other masks on
    two ranks, so validation and test accuracy may differ by a few examples (3 points here is
    about one standard error on the 143 validation / 359 test examples), the kept share by 20 %."""
    _on_two_ranks_and_one(tmp_path, "prune")
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys() and any(k.startswith("mask.") for k in r0)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert (tmp_path / "model0.nnc").is_file() and (tmp_path / "run0" / "summary.json").is_file()
    assert not (tmp_path / "model1.nnc").exists() and not (tmp_path / "run1").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    for key in ("val_trained", "val_pruned", "test_score"):
        assert abs(float(r0[key]) - float(single[key])) <= 0.03, key

    def kept(saved: dict) -> float:
        masks = [v for k, v in saved.items() if k.startswith("mask.")]
        return sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    assert abs(kept(r0) - kept(single)) <= 0.2 * kept(single)


@pytest.mark.slow
def test_ranks_holding_different_weights_stop_with_a_typed_error(tmp_path: Path) -> None:
    proc = _run(_torchrun(str(WORKER), "mismatch", str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        text = (tmp_path / f"error{rank}.txt").read_text()
        assert "the test weights differ between the ranks in 1 tensor(s) (fc1.weight)" in text


# -- the command line under torchrun ------------------------------------------------

FLAGS = ["--epochs-per-step", "2", "--final-epochs", "2", "--share-epochs", "2", "--q-max", "1.5", "--seed", "3"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, digits, _trained_mlp_state: dict) -> Path:
    from nncompress.models import build_model
    from nncompress.pipeline import save_trained

    model = build_model("mlp", digits.input_shape, digits.num_classes)
    model.load_state_dict(_trained_mlp_state)
    path = tmp_path_factory.mktemp("base") / "base.pt"
    save_trained(model, digits, path, {})
    return path


def _compress(*args: str) -> list[str]:
    return _torchrun("-m", "nncompress", "--quiet", "compress", *args)


@pytest.fixture(scope="module")
def plain(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run = tmp_path_factory.mktemp("plain") / "run"
    return run, _run(_compress(str(base), "--data", "digits", "--run-dir", str(run), "--json", *FLAGS))


@pytest.mark.slow
def test_compress_under_torchrun_writes_its_files_once(plain: tuple[Path, subprocess.CompletedProcess]) -> None:
    run, proc = plain
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object: rank 0 speaks for the run
    summary = json.loads(lines[0])
    assert summary["file"] == str(run.resolve() / "model.nnc") and (run / "model.nnc").is_file()
    assert summary["training_calls"] >= 5 and summary["test_score"] > 0.8
    assert sorted(p.name for p in run.iterdir()) == [
        "environment.json",
        "histograms.json",
        "model.nnc",
        "recipe.yaml",
        "run.json",
        "steps.jsonl",
        "summary.json",
    ]
    assert json.loads((run / "summary.json").read_text())["file_bytes"] == (run / "model.nnc").stat().st_size


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rank_of(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK="))


@pytest.fixture(scope="module")
def killed(base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, float]:
    """A run whose rank 1 is killed (SIGKILL) once the journal holds three training calls."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to find the rank's process")
    run = tmp_path_factory.mktemp("killed") / "run"
    proc = subprocess.Popen(
        _compress(str(base), "--data", "digits", "--run-dir", str(run), *FLAGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list((run / "state").glob("fit-*.pt"))) < 3:
        time.sleep(0.05)
    victims = [pid for pid in _children(proc.pid) if _rank_of(pid) == 1]
    assert victims and proc.poll() is None, "the run ended before a rank could be killed"
    os.kill(victims[0], signal.SIGKILL)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=120)
    return run, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - t0


@pytest.mark.slow
def test_a_lost_rank_ends_the_run_with_a_clear_message(killed: tuple[Path, subprocess.CompletedProcess, float]) -> None:
    run, proc, seconds = killed
    assert proc.returncode != 0 and seconds < 60
    message = [line for line in proc.stderr.splitlines() if line.startswith("nncompress:")]
    assert message, proc.stderr[-3000:]
    assert f"compress --resume --run-dir {run}" in message[0]
    assert "another rank stopped" in message[0] or "stopped (torchrun ends every rank" in message[0]
    assert (run / "run.json").is_file() and list((run / "state").glob("fit-*.pt"))
    assert not (run / "model.nnc").exists()


@pytest.mark.slow
def test_resume_under_torchrun_gives_the_uninterrupted_bytes(
    killed: tuple[Path, subprocess.CompletedProcess, float], plain: tuple[Path, subprocess.CompletedProcess]
) -> None:
    run, _, _ = killed
    proc = _run(_compress("--resume", "--run-dir", str(run), "--json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["resumed_training_calls"] >= 2
    assert (run / "model.nnc").read_bytes() == (plain[0] / "model.nnc").read_bytes()
    assert not (run / "state").exists() and not list(run.rglob("*.tmp"))
