"""Every subcommand against missing, wrong-kind, hostile and huge inputs and unusable outputs.

Each case runs ``python -m nncompress ...`` as a real process in a scratch
folder, with a timeout (a hang is a failure). A row records the exit code,
the number of stderr lines, whether a traceback appeared, whether any file
in the scratch folder (or a special file the command was pointed at) was
created, changed or replaced, and the wall time. A row passes when the exit
code is 1 (2 for a malformed command line), stderr is one line starting
``nncompress: error:``, no traceback, nothing left behind, within the timeout.

    python bench/cli_bad_inputs.py [--timeout 60] [--only SUBSTRING]

Writes bench/results/cli_bad_inputs.{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import resource
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run_meta, write_results

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass
class Case:
    group: str  # missing, wrong-kind, hostile, huge, output
    argv: list[str]
    note: str = ""
    expect_rc: int = 1
    limit_fsize: Optional[int] = None  # bytes: a file-size limit stands in for a full disk
    watch: list[str] = field(default_factory=list)  # paths outside the scratch folder that must not change


def _python() -> list[str]:
    return [sys.executable, "-m", "nncompress"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = Path(__file__).resolve().parent.parent / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def _run(
    argv: list[str], cwd: Path, timeout: float, limit_fsize: Optional[int] = None
) -> tuple[Optional[int], str, str, float]:
    def limit() -> None:
        if limit_fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

    start = time.perf_counter()
    try:
        done = subprocess.run(
            [*_python(), "--quiet", *argv],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, "", err, time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def _snapshot(root: Path, extra: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """(mode, size, mtime_ns, inode) of everything under ``root`` and of the watched paths."""
    out: dict[str, tuple[int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (
                st.st_mode,
                st.st_size if not p.is_dir() else 0,
                st.st_mtime_ns if not p.is_dir() else 0,
                st.st_ino,
            )
    for path in extra:
        try:
            st = os.lstat(root / path)
            out[path] = (st.st_mode, st.st_rdev, 0, st.st_ino)
        except OSError:
            out[path] = (0, 0, 0, 0)
    return out


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    added = [f"+{k}" for k in after if k not in before]
    gone = [f"-{k}" for k in before if k not in after]
    changed = [f"~{k}" for k in before if k in after and before[k] != after[k]]
    return added + gone + changed


# ---------------------------------------------------------------- the scratch folder


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _gzip_bomb(path: Path, header: bytes, zeros: int) -> None:
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            out.write(chunk)


class _Evil:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch PWNED",))


def prepare(root: Path, timeout: float) -> dict[str, Path]:
    """The good files each case twists: a checkpoint, a compressed file, a finished run folder."""
    f = {"ckpt": root / "base.pt", "nnc": root / "base.nnc", "run": root / "run"}
    for argv in (
        ["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", "base.pt"],
        [
            "compress",
            "base.pt",
            "--data",
            "digits",
            "--skip-prune",
            "--share-epochs",
            "0",
            "--run-dir",
            "run",
            "--out",
            "base.nnc",
        ],
    ):
        rc, _, err, _ = _run(argv, root, timeout * 5)
        if rc != 0:
            raise SystemExit(f"setup failed: {' '.join(argv)}: {err}")
    (root / "text.txt").write_text("just some text\n")
    (root / "folder").mkdir()
    (root / "empty.pt").write_bytes(b"")
    os.mkfifo(root / "pipe")
    os.mkfifo(root / "pipe.nnc")
    os.mkfifo(root / "pipe.yaml")
    os.mkfifo(root / "pipe.onnx")
    os.mkfifo(root / "pipe.safetensors")
    os.symlink("/dev/zero", root / "zero-link.pt")
    os.symlink(null_device(root), root / "null-link.pt")
    # hostile checkpoints
    (root / "evil.pt").write_bytes(pickle.dumps({"w": _Evil()}))
    torch.save(_tiny_model(), root / "whole-model.pt")
    torch.save({"nncompress_checkpoint": True, "state": {"w": torch.ones(2)}}, root / "version-true.pt")
    torch.save({"nncompress_checkpoint": "1", "state": {"w": torch.ones(2)}}, root / "version-str.pt")
    torch.save({"fc1.weight": torch.ones(3, 3).to_sparse()}, root / "sparse-coo.pt")
    torch.save({"fc1.weight": torch.empty(3, 3, device="meta")}, root / "meta.pt")
    torch.save({"fc1.weight": torch.ones(3, 3).to(torch.float8_e4m3fn)}, root / "float8.pt")
    torch.save(
        {
            "nncompress_checkpoint": 1,
            "state": {},
            "sparse": {
                "fc1.weight": {
                    "values": torch.ones(2),
                    "col_indices": torch.tensor([0, 0]),
                    "crow_indices": torch.tensor([0, 2]),
                    "shape": [1, 64],
                }
            },
        },
        root / "csr-duplicate.pt",
    )
    torch.save(
        {
            "nncompress_checkpoint": 1,
            "state": {},
            "sparse": {
                "fc1.weight": {
                    "values": torch.ones(1),
                    "col_indices": torch.tensor([0]),
                    "crow_indices": torch.tensor([0, 1]),
                    "shape": [1, 10**12],
                }
            },
        },
        root / "csr-huge.pt",
    )
    # huge inputs: sparse files (no disk used)
    for name in ("huge.pt", "huge.nnc", "huge.yaml"):
        with open(root / name, "wb") as handle:
            handle.truncate(3 << 30)
    # recipes
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (root / "bomb.yaml").write_text("\n".join(lines) + "\n")
    (root / "kwargs-bomb.yaml").write_text(
        "model: nets:factory\nmodel_kwargs:\n" + "".join(f"  {line}\n" for line in lines)
    )
    (root / "deep.yaml").write_text("model: " + "[" * 100_000 + "]" * 100_000 + "\n")
    # run folders
    for name, file, text in (
        ("run-deep", "histograms.json", '{"stages": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ("run-bigint", "histograms.json", None),
        ("run-steps", "steps.jsonl", "[" * 100_000 + "]" * 100_000 + "\n"),
    ):
        dst = root / name
        _copytree(f["run"], dst)
        if text is None:
            data = json.loads((dst / file).read_text())
            stage = next(iter(data["stages"].values()))
            layer = next(iter(stage.values()))
            layer["counts"][0] = 12345678987654321
            text = json.dumps(data).replace("12345678987654321", "1" + "0" * 400)
        (dst / file).write_text(text)
    (root / "run-deep-runjson").mkdir()
    (root / "run-deep-runjson" / "run.json").write_text('{"recipe": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (root / "run-deep-runjson" / "state").mkdir()
    # data folders
    rng = np.random.default_rng(0)
    good = {
        IDX_FILES[0]: rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
        IDX_FILES[1]: (np.arange(60) % 10).astype(np.uint8),
        IDX_FILES[2]: rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
        IDX_FILES[3]: (np.arange(20) % 10).astype(np.uint8),
    }
    bomb = root / "data-bomb"
    bomb.mkdir()
    for name, arr in good.items():
        if name == IDX_FILES[1]:
            _gzip_bomb(bomb / f"{name}.gz", _idx(arr), 1600 << 20)  # 1.6 GB after the 60 labels
        else:
            (bomb / name).write_bytes(_idx(arr))
    fifo_data = root / "data-fifo"
    fifo_data.mkdir()
    for name, arr in good.items():
        if name == IDX_FILES[0]:
            os.mkfifo(fifo_data / name)
        else:
            (fifo_data / name).write_bytes(_idx(arr))
    (root / "afile").write_text("x")
    return f


def null_device(root: Path) -> str:
    """A character device to point outputs at. Run as root, a build that replaced its --out would replace
    the machine's /dev/null: root gets a device node of its own in the scratch folder instead."""
    if os.geteuid() != 0:
        return "/dev/null"
    node = root / "nulldev"
    if not node.exists():
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return node.name  # commands run in ``root``


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 10))


def _copytree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)


# ---------------------------------------------------------------- the cases


def cases(null: str) -> list[Case]:
    """``null``: the character device outputs are pointed at (see ``null_device``)."""
    d = ["--data", "digits"]
    c: list[Case] = []
    model_cmds: list[tuple[str, Callable[[str], list[str]]]] = [
        ("evaluate", lambda p: ["evaluate", p, *d]),
        ("sensitivity", lambda p: ["sensitivity", p, *d, "--out", "sens"]),
        ("prune", lambda p: ["prune", p, *d, "--out", "pruned.pt"]),
        ("compress", lambda p: ["compress", p, *d, "--out", "x.nnc", "--run-dir", "newrun"]),
    ]
    for _, make in model_cmds:
        c += [
            Case("missing", make("nope.pt"), "no such file"),
            Case("wrong-kind", make("folder"), "a folder"),
            Case("wrong-kind", make("text.txt"), "a text file"),
            Case("wrong-kind", make("empty.pt"), "an empty file"),
            Case("hostile", make("pipe"), "a FIFO"),
            Case("hostile", make("/dev/zero"), "a character device"),
            Case("hostile", make("zero-link.pt"), "a symlink to /dev/zero"),
            Case("hostile", make("/proc/self/environ"), "a /proc file"),
            Case("hostile", make("evil.pt"), "a pickle that runs a command"),
            Case("hostile", make("whole-model.pt"), "a whole pickled model"),
            Case("huge", make("huge.pt"), "a 3 GiB sparse file"),
        ]
    for name, note in (
        ("version-true.pt", "checkpoint version true"),
        ("version-str.pt", "checkpoint version '1'"),
        ("sparse-coo.pt", "a sparse COO tensor"),
        ("meta.pt", "a meta-device tensor"),
        ("csr-duplicate.pt", "CSR with a repeated column"),
        ("csr-huge.pt", "CSR shape of 10**12 elements"),
    ):
        c.append(Case("hostile", ["evaluate", name, *d], note))
    c.append(Case("hostile", ["evaluate", "float8.pt", *d], "float8 weights that fit no model"))
    c += [
        Case("hostile", ["evaluate", "base.pt", *d, "--reference", "pipe"], "a FIFO as --reference"),
        Case("hostile", ["evaluate", "base.pt", *d, "--reference", "/dev/zero"], "a device as --reference"),
        Case("missing", ["evaluate", "base.pt", *d, "--reference", "nope.pt"], "no such --reference"),
    ]
    for cmd in ("inspect", "decompress", "benchmark"):
        extra = ["--out", "dense.pt"] if cmd == "decompress" else []
        c += [
            Case("missing", [cmd, "nope.nnc", *extra], "no such file"),
            Case("wrong-kind", [cmd, "folder", *extra], "a folder"),
            Case("wrong-kind", [cmd, "text.txt", *extra], "a text file"),
            *(
                [Case("wrong-kind", [cmd, "base.pt", *extra], "a .pt where a .nnc belongs")]
                if cmd != "benchmark"
                else []
            ),  # benchmark times checkpoints too
            Case("hostile", [cmd, "pipe.nnc", *extra], "a FIFO"),
            Case("hostile", [cmd, "/dev/zero", *extra], "a character device"),
            Case("hostile", [cmd, "/proc/self/environ", *extra], "a /proc file"),
            Case("huge", [cmd, "huge.nnc", *extra], "a 3 GiB sparse file"),
        ]
    c += [
        Case("wrong-kind", ["evaluate", "base.nnc", "--data", "folder"], "an empty data folder"),
        Case("hostile", ["evaluate", "base.pt", "--data", "data-fifo"], "a FIFO in a data folder"),
        Case("huge", ["evaluate", "base.pt", "--data", "data-bomb"], "a 1.6 GB gzip bomb in a data folder"),
        Case("huge", ["train", "--model", "mlp", "--data", "data-bomb", "--out", "t.pt"], "gzip bomb data"),
        Case("missing", ["compress", "base.pt", *d, "--recipe", "nope.yaml", "--run-dir", "newrun"], "no recipe"),
        Case("hostile", ["compress", "base.pt", *d, "--recipe", "pipe.yaml", "--run-dir", "newrun"], "FIFO recipe"),
        Case("hostile", ["compress", "base.pt", *d, "--recipe", "/dev/zero", "--run-dir", "newrun"], "/dev/zero"),
        Case(
            "hostile",
            ["compress", "base.pt", *d, "--recipe", "bomb.yaml", "--run-dir", "newrun"],
            "billion-laughs YAML",
        ),
        Case(
            "hostile",
            ["compress", "base.pt", *d, "--recipe", "kwargs-bomb.yaml", "--run-dir", "newrun"],
            "billion laughs inside model_kwargs",
        ),
        Case(
            "hostile",
            ["compress", "base.pt", *d, "--recipe", "deep.yaml", "--run-dir", "newrun"],
            "YAML nested 100,000 deep",
        ),
        Case("huge", ["compress", "base.pt", *d, "--recipe", "huge.yaml", "--run-dir", "newrun"], "a 3 GiB recipe"),
        Case("hostile", ["prune", "base.pt", *d, "--out", "p.pt", "--sensitivity", "pipe"], "FIFO sensitivity"),
        Case("missing", ["report", "nope", "--out", "r.html"], "no run folder"),
        Case("wrong-kind", ["report", "text.txt", "--out", "r.html"], "a file for the run folder"),
        Case("wrong-kind", ["report", "folder", "--out", "r.html"], "an empty folder"),
        Case("hostile", ["report", "run-deep", "--out", "r.html"], "histograms nested 100,000 deep"),
        Case("hostile", ["report", "run-bigint", "--out", "r.html"], "a histogram count of 10**400"),
        Case("hostile", ["report", "run-steps", "--out", "r.html"], "steps.jsonl nested 100,000 deep"),
        Case("hostile", ["compress", "--resume", "--run-dir", "run-deep-runjson"], "run.json nested deep"),
        Case("wrong-kind", ["train", "--model", "mlp", "--data", "text.txt", "--out", "t.pt"], "a file as data"),
        Case("wrong-kind", ["train", "--model", "mlp", "--data", "/dev/zero", "--out", "t.pt"], "a device as data"),
        Case("wrong-kind", ["prune", "base.pt", *d, "--out", "p.pt", "--groups", "fc9"], "a layer the model lacks"),
        Case(
            "wrong-kind",
            ["compress", "base.pt", *d, "--groups", "fc9", "--run-dir", "newrun"],
            "a layer the model lacks",
        ),
        Case("wrong-kind", ["prune", "base.pt", *d, "--out", "p.pt", "--q0", "abc"], "a malformed number", expect_rc=2),
    ]
    # outputs
    outs: list[tuple[str, Callable[[str], list[str]]]] = [
        ("train", lambda o: ["train", "--model", "mlp", *d, "--epochs", "1", "--out", o]),
        ("prune", lambda o: ["prune", "base.pt", *d, "--out", o]),
        (
            "compress",
            lambda o: [
                "compress",
                "base.pt",
                *d,
                "--skip-prune",
                "--share-epochs",
                "0",
                "--out",
                o,
                "--run-dir",
                "newrun",
            ],
        ),
        ("decompress", lambda o: ["decompress", "base.nnc", "--out", o]),
    ]
    for _, make in outs:
        c += [
            Case("output", make(null), "--out a character device", watch=[null]),
            Case("output", make("pipe"), "--out a FIFO"),
            Case("output", make("null-link.pt"), "--out a symlink to a character device", watch=[null]),
            Case("output", make("/proc/x.pt"), "--out in /proc"),
            Case("output", make("/sys/x.pt"), "--out in /sys"),
            Case("output", make("afile/x.pt"), "--out under a file"),
            Case("output", make("folder"), "--out a folder"),
        ]
    for suffix in (".onnx", ".safetensors"):
        c += [
            Case("output", ["decompress", "base.nnc", "--out", f"/proc/x{suffix}"], f"--out {suffix} in /proc"),
            Case("output", ["decompress", "base.nnc", "--out", f"afile/x{suffix}"], f"--out {suffix} under a file"),
            Case("output", ["decompress", "base.nnc", "--out", f"pipe{suffix}"], f"--out {suffix} a FIFO"),
        ]
    c += [
        Case("output", ["sensitivity", "base.pt", *d, "--out", "/proc/sens"], "--out folder in /proc"),
        Case("output", ["sensitivity", "base.pt", *d, "--out", "afile"], "--out folder is a file"),
        Case("output", ["sensitivity", "base.pt", *d, "--out", null], "--out folder is a device", watch=[null]),
        Case("output", ["report", "run", "--out", null], "--out a character device", watch=[null]),
        Case("output", ["report", "run", "--out", "/proc/r.html"], "--out in /proc"),
        Case("output", ["compress", "base.pt", *d, "--run-dir", "/proc/run"], "--run-dir in /proc"),
        Case("output", ["compress", "base.pt", *d, "--run-dir", "afile"], "--run-dir is a file"),
        Case(
            "output",
            [
                "compress",
                "base.pt",
                *d,
                "--skip-prune",
                "--share-epochs",
                "0",
                "--run-dir",
                "newrun",
                "--report",
                "/proc/r.html",
            ],
            "--report in /proc",
        ),
        Case("output", ["demo", "--out", "/proc/demo"], "--out folder in /proc"),
        Case("output", ["demo", "--out", null], "--out folder is a device", watch=[null]),
        Case(
            "output",
            ["decompress", "base.nnc", "--out", "full.pt"],
            "disk full (file-size limit 20 KB)",
            limit_fsize=20_000,
        ),
        Case(
            "output",
            ["train", "--model", "mlp", *d, "--epochs", "1", "--out", "full.pt"],
            "disk full (file-size limit 20 KB)",
            limit_fsize=20_000,
        ),
    ]
    return c


def run_case(case: Case, root: Path, timeout: float) -> dict[str, Any]:
    before = _snapshot(root, case.watch)
    rc, out, err, seconds = _run(case.argv, root, timeout, case.limit_fsize)
    after = _snapshot(root, case.watch)
    lines = err.strip("\n").splitlines()
    left = _changes(before, after)
    pwned = (root / "PWNED").exists()
    ok = (
        rc == case.expect_rc
        and len(lines) == 1
        and lines[0].startswith("nncompress: error:")
        and "Traceback" not in err
        and not left
        and not pwned
    )
    return {
        "command": "nncompress " + " ".join(case.argv),
        "group": case.group,
        "note": case.note,
        "exit": rc if rc is not None else "timeout",
        "expected_exit": case.expect_rc,
        "stderr_lines": len(lines),
        "traceback": "Traceback" in err,
        "left_behind": left[:6] + (["PWNED"] if pwned else []),
        "seconds": round(seconds, 2),
        "ok": ok,
        "message": (lines[-1][:300] if lines else "").replace(f"{root}/", ""),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    passed = sum(r["ok"] for r in rows)
    by_group: dict[str, list[int]] = {}
    for r in rows:
        by_group.setdefault(r["group"], [0, 0])
        by_group[r["group"]][0] += r["ok"]
        by_group[r["group"]][1] += 1
    out = [
        "# CLI bad inputs",
        "",
        f"`{meta['command']}` ({meta['date']}, torch {meta['torch']}, timeout {meta['timeout_s']} s per case).",
        "",
        "Each case is a real process in a scratch folder holding a trained checkpoint, its .nnc and its run "
        "folder. A row passes when the exit code is as documented (1; 2 for a malformed command line), "
        "stderr is one line `nncompress: error: ...`, no traceback appears, nothing in the scratch folder (or "
        "a device it was pointed at) is created, changed or replaced, and the command ends within the timeout.",
        "",
        f"**{passed} of {len(rows)} pass.** "
        + ", ".join(f"{g}: {a}/{b}" for g, (a, b) in by_group.items())
        + f". Median {_median([r['seconds'] for r in rows]):.1f} s a case (mostly Python and torch starting), "
        f"slowest {max(r['seconds'] for r in rows):.1f} s.",
        "",
        "| command | case | exit | stderr lines | traceback | left behind | s | ok |",
        "|---|---|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        cmd = r["command"].replace("|", "\\|")
        out.append(
            f"| `{cmd}` | {r['group']}: {r['note']} | {r['exit']} | {r['stderr_lines']} | "
            f"{'yes' if r['traceback'] else 'no'} | {', '.join(r['left_behind']) or '-'} | "
            f"{r['seconds']:.1f} | {'yes' if r['ok'] else '**NO**'} |"
        )
    out += ["", "Messages:", ""]
    out += [f"- `{r['command']}`: {r['message']}" for r in rows]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case; longer counts as a hang")
    ap.add_argument("--only", default=None, help="run only cases whose command contains this")
    ap.add_argument("--no-write", action="store_true", help="print the table, write no results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnc-bad-inputs-") as tmp:
        root = Path(tmp)
        prepare(root, args.timeout)
        rows = []
        for case in cases(null_device(root)):
            if args.only and args.only not in " ".join(case.argv):
                continue
            row = run_case(case, root, args.timeout)
            rows.append(row)
            print(
                f"{'ok ' if row['ok'] else 'BAD'} {row['seconds']:6.1f}s rc={row['exit']} {row['command']}: "
                f"{row['message'][:160]} {row['left_behind'] or ''}",
                file=sys.stderr,
                flush=True,
            )
    meta = run_meta("cli_bad_inputs.py", timeout_s=args.timeout, cases=len(rows), passed=sum(r["ok"] for r in rows))
    text = markdown(meta, rows)
    if args.no_write:
        print(text)
    else:
        write_results("cli_bad_inputs", meta, rows, text)


if __name__ == "__main__":
    main()
