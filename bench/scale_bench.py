"""VGG-16 (138 M parameters) through every stage on one CPU machine: time and peak memory.

Random weights and synthetic 32x32 inputs (the stages' cost does not depend on what the
weights mean): build and save the dense checkpoint; prune (one step of the q x std rule
to a target density, fine-tuned on a few synthetic batches); share (k-means, 5 bits for
Linear and 8 for convolutions) and code the file; decode it. Each stage runs in a fresh
process, so its peak resident memory (``ru_maxrss``) is its own; the table gives it beside
the process's memory after importing torch and as a multiple of the model's fp32 bytes.
With ``--procs 2`` the prune and compress stages run as two ranks under torchrun (gloo),
each rank's peak reported; build and decode stay one process.
Writes bench/results/<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SHAPE = (3, 32, 32)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(n: int, batch: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(batch, *SHAPE, generator=gen), torch.randint(0, 1000, (batch,), generator=gen))
        for _ in range(max(1, n // batch))
    ]
    return batches, batches[:1], batches[:1]


def stage(name: str, work: Path, args: argparse.Namespace) -> dict:
    """Run one stage in this process and return its figures."""
    import torch
    import nncompress as nnc
    from nncompress import distributed
    from nncompress.models import build_model
    from nncompress.pipeline import load_model_file
    from nncompress.train.checkpoint import save_checkpoint

    torch.set_num_threads(args.threads)
    base_rss = _rss_mb()
    distributed.init_from_env(device="cpu")
    t0 = time.perf_counter()
    info: dict = {}
    if name == "build":
        torch.manual_seed(0)
        model = build_model("vgg16", SHAPE, 1000)
        save_checkpoint(work / "dense.pt", model, meta={"data": "synthetic"}, storage="dense")
        info["params"] = sum(p.numel() for p in model.parameters())
    elif name == "prune":
        model = load_model_file(work / "dense.pt")[0]
        cfg = nnc.PruneConfig(
            target_density=args.density,
            target_steps=1,
            epochs_per_step=1,
            final_epochs=0,
            batch_size=args.batch,
            probe=False,
            control=False,
            remove_dead=False,
        )
        model, result = nnc.prune(model, _data(args.images, args.batch), cfg, inplace=True)
        if distributed.is_main():
            save_checkpoint(work / "pruned.pt", model, meta={"data": "synthetic", "pruned": True})
        info["density"] = result.steps[-1].overall_density
    elif name == "compress":
        model = load_model_file(work / "pruned.pt")[0]
        share = nnc.ShareConfig(epochs=0, batch_size=args.batch)
        result = nnc.compress(
            model,
            _data(args.batch, args.batch),
            work / "vgg16.nnc",
            nnc.CompressConfig(prune=None, share=share),
            inplace=True,
        )
        info.update(file_bytes=result.file_bytes, ratio=round(result.ratio, 2), stage_seconds=result.summary["seconds"])
    elif name == "decode":
        model = nnc.load(work / "vgg16.nnc")
        info["params"] = sum(p.numel() for p in model.parameters())
    return {
        "stage": name,
        "seconds": round(time.perf_counter() - t0, 2),
        "base_rss_mb": round(base_rss),
        "peak_rss_mb": round(_rss_mb()),
        "rank": distributed.rank(),
        **info,
    }


def _run_stage(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """One stage in fresh processes (two ranks under torchrun for prune and compress with
    --procs 2); each process's figures come back through a file of its own."""
    procs = args.procs if name in ("prune", "compress") else 1
    for old in work.glob(f"{name}.rank*.json"):
        old.unlink()
    cmd = [sys.executable, __file__, "--stage", name, *sys.argv[1:]]
    if procs > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
            __file__,
            "--stage",
            name,
            *sys.argv[1:],
        ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        return [{"stage": name, "procs": procs, "error": out.stderr.strip().splitlines()[-1:]}]
    rows = [json.loads(p.read_text()) for p in sorted(work.glob(f"{name}.rank*.json"))]
    return [{**r, "procs": procs} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=str(HERE / "runs" / "scale"))
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--images", type=int, default=64, help="synthetic training images per fine-tuning epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tag", default="scale_bench")
    parser.add_argument("--procs", type=int, default=1, help="ranks under torchrun for prune and compress")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        row = stage(args.stage, work, args)
        (work / f"{args.stage}.rank{row['rank']}.json").write_text(json.dumps(row))
        return
    from benchlib import run_meta, write_results

    rows: list[dict] = []
    for name in ("build", "prune", "compress", "decode"):
        rows += _run_stage(name, args, work)
        print(rows[-1], flush=True)
        if "error" in rows[-1]:
            break
    fp32_mb = 4 * rows[0].get("params", 0) / 2**20
    for r in rows:
        if "peak_rss_mb" in r:
            r["peak_over_model"] = round((r["peak_rss_mb"] - r["base_rss_mb"]) / fp32_mb, 2)
    meta = run_meta(
        "scale_bench.py",
        fp32_mb=round(fp32_mb),
        density=args.density,
        images=args.images,
        batch=args.batch,
        load_average=[round(x, 2) for x in os.getloadavg()],  # after the run: seconds mean little when high
    )
    how = "one process per stage" if args.procs == 1 else f"prune and compress as {args.procs} ranks under torchrun"
    lines = [
        f"# VGG-16 (138 M parameters) through every stage, {how}",
        "",
        f"`{meta['command']}` on {meta['machine']}, {args.threads} threads per process, torch {meta['torch']}, "
        f"{meta['date']}. Model fp32: {fp32_mb:,.0f} MiB. Random weights, synthetic {SHAPE} inputs. Each "
        "stage runs in fresh processes; peak RSS is each process's own (`ru_maxrss`). Load average after the "
        f"run {meta['load_average']} (seconds are only comparable on a quiet machine; memory is not affected).",
        "",
        "| stage | rank | seconds | peak RSS MiB | after import MiB | (peak - import) / model fp32 | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = {
            k: v
            for k, v in r.items()
            if k not in ("stage", "seconds", "peak_rss_mb", "base_rss_mb", "peak_over_model", "rank", "procs")
        }
        rank = f"{r.get('rank', 0)} of {r.get('procs', 1)}"
        lines.append(
            f"| {r['stage']} | {rank} | {r.get('seconds', '')} | {r.get('peak_rss_mb', '')} | "
            f"{r.get('base_rss_mb', '')} | {r.get('peak_over_model', '')} | {json.dumps(notes)} |"
        )
    write_results(args.tag, meta, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
