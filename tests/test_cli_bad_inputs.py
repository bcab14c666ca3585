"""A fast subset of bench/cli_bad_inputs.py: hostile inputs and special outputs end in one line, exit 1,
before any work, leaving nothing behind (in-process; a real process only for the file-size limit)."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from nncompress.models import build_model
from nncompress.modelfile import save_compressed
from nncompress.train.checkpoint import save_checkpoint
from test_cli import assert_one_line_error, run_main

pytestmark = pytest.mark.skipif(
    not hasattr(os, "mkfifo") or not Path("/proc/self").is_dir(), reason="needs FIFOs and /proc"
)
DATA = ["--data", "digits"]


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A FIFO opened for reading blocks: fail the test instead of the suite."""

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError("the command blocked")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder (the working directory) with an untrained MLP as checkpoint and .nnc, a FIFO and a file."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10)
    save_checkpoint(tmp_path / "base.pt", model)
    save_compressed(tmp_path / "base.nnc", model, {})
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "afile").write_text("x")
    return tmp_path


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (os.lstat(p).st_mode, os.lstat(p).st_ino, os.lstat(p).st_mtime_ns)
        for p in root.rglob("*")
    }


def _refused(root: Path, argv: list[str], *fragments: str) -> str:
    before = _tree(root)
    line = assert_one_line_error(*run_main(["--quiet", *argv]), *fragments)
    assert _tree(root) == before  # nothing made, changed or replaced
    assert "continue with" not in line
    return line


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "{}", *DATA],
        ["prune", "{}", *DATA, "--out", "p.pt"],
        ["sensitivity", "{}", *DATA, "--out", "s"],
        ["compress", "{}", *DATA, "--run-dir", "run"],
        ["inspect", "{}"],
        ["decompress", "{}", "--out", "d.pt"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize(
    "given,words",
    [
        ("pipe", "is a FIFO"),
        ("/dev/zero", "is a character device"),
        ("/proc/self/environ", "in /proc, a kernel file system"),
    ],
    ids=["fifo", "dev-zero", "proc"],
)
def test_special_inputs_are_refused_unread(work: Path, argv: list[str], given: str, words: str) -> None:
    _refused(work, [a.replace("{}", given) for a in argv], given, words)


@pytest.mark.parametrize("flag,given", [("--recipe", "pipe"), ("--recipe", "/dev/zero"), ("--sensitivity", "pipe")])
def test_special_recipe_and_sensitivity_inputs_are_refused(work: Path, flag: str, given: str) -> None:
    _refused(work, ["compress", "base.pt", *DATA, flag, given, "--run-dir", "run"], given, "not a regular file")


def test_a_data_folder_holding_a_fifo_is_refused(work: Path) -> None:
    (work / "data").mkdir()
    os.mkfifo(work / "data" / "train-images-idx3-ubyte")
    _refused(work, ["evaluate", "base.pt", "--data", "data"], "train-images-idx3-ubyte is a FIFO")


def _char_device(root: Path) -> str:
    """A character device to write at: our own node as root (a bug must not replace the machine's
    /dev/null), /dev/null otherwise (which a non-root process cannot replace)."""
    if os.geteuid() != 0:
        return "/dev/null"
    os.mknod(root / "nulldev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return "nulldev"


OUT_COMMANDS = [
    ["decompress", "base.nnc"],
    ["train", "--model", "mlp", *DATA, "--epochs", "1"],
    ["prune", "base.pt", *DATA],
    ["compress", "base.pt", *DATA, "--run-dir", "run"],
]


@pytest.mark.parametrize("argv", OUT_COMMANDS, ids=lambda a: a[0])
def test_outputs_never_replace_a_device_or_fifo(work: Path, argv: list[str]) -> None:
    device = _char_device(work)
    for target, words in ((device, "is a character device"), ("pipe", "is a FIFO")):
        before = os.stat(target)
        _refused(work, [*argv, "--out", target], words)
        after = os.stat(target)
        assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    os.symlink(device, work / "link.pt")
    _refused(work, [*argv, "--out", "link.pt"], "is a character device")
    assert (work / "link.pt").is_symlink()


@pytest.mark.parametrize("argv", OUT_COMMANDS, ids=lambda a: a[0])
@pytest.mark.parametrize("out", ["/proc/x.pt", "/sys/x.pt", "afile/x.pt"])
def test_outputs_that_cannot_be_written_are_refused_before_any_folder_is_made(
    work: Path, argv: list[str], out: str
) -> None:
    _refused(work, [*argv, "--out", out], out)
    assert not Path("runs").exists() and not (work / "run").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "base.pt", *DATA, "--run-dir", "/proc/run"],
        ["compress", "base.pt", *DATA, "--run-dir", "afile"],
        ["compress", "base.pt", *DATA, "--run-dir", "run", "--report", "/proc/r.html"],
        ["sensitivity", "base.pt", *DATA, "--out", "/proc/sens"],
        ["demo", "--out", "/proc/demo"],
        ["prune", "base.pt", *DATA, "--out", "p.pt", "--log-dir", "/proc/logs"],
    ],
    ids=["run-dir-proc", "run-dir-file", "report-proc", "sensitivity", "demo", "log-dir"],
)
def test_output_folders_are_checked_up_front(work: Path, argv: list[str]) -> None:
    _refused(work, argv)


def test_a_layer_the_model_lacks_leaves_no_log_folder(work: Path) -> None:
    _refused(work, ["prune", "base.pt", *DATA, "--out", "p.pt", "--groups", "fc9"], "--groups", "fc9")
    assert not (work / "p_prune").exists()


def test_a_deep_json_in_a_run_folder_is_one_line(work: Path) -> None:
    (work / "run").mkdir()
    (work / "run" / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    _refused(work, ["report", "run", "--out", "r.html"], "summary.json", "nested more than")


def test_a_full_disk_ends_decompress_in_one_line_and_leaves_nothing(work: Path) -> None:
    def small_files() -> None:  # a file-size limit fails writes with EFBIG, as a full disk does with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    before = _tree(work)
    done = subprocess.run(
        [sys.executable, "-m", "nncompress", "--quiet", "decompress", "base.nnc", "--out", "dense.pt"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nncompress: error: cannot write dense.pt: File too large"), (
        done.stderr
    )
    assert _tree(work) == before  # the temporary file is gone


def test_a_disk_filling_up_mid_compress_is_one_line_with_the_resume_command(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import nncompress.train.journal as journal_module

    real = torch.save

    def full(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:  # half an entry, then no space
        handle.write(b"\x00" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.torch, "save", full)
    rc, out, err = run_main(
        [
            "--quiet",
            "compress",
            "base.pt",
            *DATA,
            "--skip-prune",
            "--share-epochs",
            "1",
            "--run-dir",
            "run",
            "--out",
            "m.nnc",
        ]
    )
    monkeypatch.setattr(journal_module.torch, "save", real)
    line = assert_one_line_error(
        rc,
        out,
        err,
        "No space left on device",
        "free some space",
        "continue with: nncompress compress --resume --run-dir",
    )
    assert "Traceback" not in err and ".tmp" not in line
    assert not list(work.rglob(".*.tmp")) and not (work / "m.nnc").exists()
