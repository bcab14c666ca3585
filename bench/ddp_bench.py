"""One process against two under torchrun (gloo, CPU): a real pruning run of a small VGG-style
net with BatchNorm on Fashion-MNIST. Writes bench/results/ddp_bench.{json,md}.

    python bench/ddp_bench.py [--width 8] [--train-epochs 2]

Both runs start from the same trained checkpoint with the same flags; each rank runs one
thread (OMP_NUM_THREADS=1), so one process uses one core and two use two. On a machine
whose cores are shared with other work the wall times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
FLAGS = [
    "--epochs-per-step",
    "1",
    "--final-epochs",
    "1",
    "--share-epochs",
    "1",
    "--q-max",
    "1.5",
    "--tolerance",
    "1.0",
    "--seed",
    "0",
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(cmd: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr[-4000:])
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--work", default="/tmp/nnc_ddp_bench")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = [
        "--model",
        str(ROOT / "examples" / "small_vgg.py") + ":small_vgg",
        "--model-kwargs",
        json.dumps({"width": args.width}),
    ]
    base = work / "base.pt"
    cli = [sys.executable, "-m", "nncompress", "--quiet"]
    train_s, trained = _timed(
        [
            *cli,
            "train",
            *model,
            "--data",
            "fashion-mnist",
            "--epochs",
            str(args.train_epochs),
            "--batch-size",
            "128",
            "--out",
            str(base),
            "--json",
        ]
    )
    rows = {}
    for name, launcher in (
        ("1 process", cli),
        (
            "2 processes (torchrun, gloo)",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                f"--master_port={_port()}",
                "-m",
                "nncompress",
                "--quiet",
            ],
        ),
    ):
        run = work / ("one" if launcher is cli else "two")
        subprocess.run(["rm", "-rf", str(run)], check=True)
        seconds, res = _timed(
            [
                *launcher,
                "compress",
                str(base),
                "--data",
                "fashion-mnist",
                "--run-dir",
                str(run),
                "--model",
                model[1],
                "--json",
                *FLAGS,
            ]
        )
        rows[name] = {
            "wall_seconds": round(seconds, 1),
            "ratio": round(res["ratio"], 2),
            "file_bytes": res["file_bytes"],
            "dense_test_accuracy": res["dense_test_score"],
            "test_accuracy": res["test_score"],
            "test_drop_points": res["test_drop_points"],
            "training_calls": res["training_calls"],
            "stage_seconds": res["seconds"],
        }
    result = {
        "model": f"small_vgg width {args.width} (BatchNorm)",
        "data": "fashion-mnist",
        "base_train_epochs": args.train_epochs,
        "base_train_seconds": round(train_s, 1),
        "base_test_accuracy": trained["test_accuracy"],
        "flags": FLAGS,
        "cpus": os.cpu_count(),
        "threads_per_rank": 1,
        "runs": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ddp_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# One process vs two under torchrun: {result['model']} on Fashion-MNIST",
        "",
        f"Base: {args.train_epochs} epochs of training ({train_s:.0f} s), test accuracy "
        f"{100 * trained['test_accuracy']:.2f} %. compress flags: `{' '.join(FLAGS)}`; "
        f"{os.cpu_count()} CPUs, one thread per rank.",
        "",
        "| run | wall s | prune s | ratio | file bytes | test acc % | drop (pt) | training calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wall_seconds']} | {r['stage_seconds']['prune']} | {r['ratio']} | "
            f"{r['file_bytes']:,} | {100 * r['test_accuracy']:.2f} | {r['test_drop_points']:+.2f} | "
            f"{r['training_calls']} |"
        )
    one, two = rows.values()
    lines += [
        "",
        f"Two ranks took {two['wall_seconds'] / one['wall_seconds']:.2f}x the wall time of one "
        f"(one run of each; an epoch of the base training took {train_s / max(1, args.train_epochs):.0f} s "
        "on one thread, start-up included). Each rank does half of every batch, and every step adds one "
        "gradient all-reduce over gloo. Ratio and drop differ as two seeds would: BatchNorm sees half "
        "batches and dropout draws other masks on two ranks.",
    ]
    (OUT / "ddp_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
