"""A model nncompress does not ship, through the command line: a small ResNet with BatchNorm
(examples/small_resnet.py, named by import path) on Fashion-MNIST, trained and compressed with
the CLI defaults, seed by seed.

Reported per seed: the dense test accuracy, the accuracy of the model decoded from the
``.nnc`` file, its whole-file ratio against the dense fp32 parameters, and beside it how the
same dense model stores today: ``torch.save`` of its state dict, and float16 + gzip of it.
A seed whose compress was interrupted continues from its run folder when the bench runs again
(a trained dense net is reused). Writes bench/results/<tag>.{json,md}. Never run by the tests.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchlib import run_meta, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUNS = HERE / "runs"
MODEL = "examples/small_resnet.py:SmallResNet"


def cli(*args: str) -> dict:
    """One nncompress command, run from the repository root (the import path is relative to it)."""
    cmd = [sys.executable, "-m", "nncompress", "--quiet", *args, "--json"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def stored_today(checkpoint: Path) -> dict[str, int]:
    """The dense state dict as people store it: torch.save, and float16 + gzip."""
    state = torch.load(checkpoint, weights_only=True)["state"]
    out = {}
    for name, tensors in (
        ("torch_save_fp32", state),
        ("fp16_gzip", {k: v.half() if v.is_floating_point() else v for k, v in state.items()}),
    ):
        buf = io.BytesIO()
        torch.save(tensors, buf)
        out[name] = len(buf.getvalue()) if name.startswith("torch") else len(gzip.compress(buf.getvalue(), 9))
    return out


def batchnorm_affine(nnc: Path, widths: list[int]) -> dict[str, float]:
    """The run's file with every BatchNorm re-coded as ``--batchnorm affine`` writes it (the library's own
    rewrite of the decoded model; every other tensor's entry and bytes kept), its size and the test accuracy
    of the model decoded from it: what the same run gives with the flag, which acts only on the finished
    model."""
    sys.path.insert(0, str(ROOT / "examples"))
    from small_resnet import SmallResNet

    from nncompress.coding.container import dumps, loads
    from nncompress.coding.layers import encode_plain
    from nncompress.data import load_data
    from nncompress.models.batchnorm import batchnorm_as_affine_
    from nncompress.modelfile import load_compressed
    from nncompress.pipeline import metrics

    box = loads(nnc.read_bytes())
    header = {k: v for k, v in box.header.items() if k not in ("sections", "data_bytes")}
    model = load_compressed(nnc).build_model(SmallResNet(widths=widths))
    layers = batchnorm_as_affine_(model)
    state = model.state_dict()
    rewritten = {f"{name}.{part}" for name in layers for part in ("weight", "bias", "running_mean", "running_var")}
    tensors, sections = [], []
    for entry in header["tensors"]:
        name = entry["name"]
        if name in rewritten:
            entry, secs = encode_plain(name, state[name].numpy())  # as save_compressed codes it
        else:
            secs = [(name, box.sections[name])] if name in box.sections else []
        tensors.append(entry)
        sections += secs
    out = nnc.with_name(nnc.stem + "_bn_affine.nnc")
    out.write_bytes(
        dumps({**header, "tensors": tensors, "meta": {**header["meta"], "batchnorm_affine": layers}}, sections)
    )
    decoded = load_compressed(out).build_model(SmallResNet(widths=widths)).eval()
    return {"file_bytes": out.stat().st_size, "test_accuracy": metrics(decoded, load_data("fashion-mnist"))["score"]}


def one(seed: int, widths: list[int], epochs: int, flags: list[str]) -> dict:
    RUNS.mkdir(parents=True, exist_ok=True)
    tag = f"resnet{'-'.join(map(str, widths))}_s{seed}"
    base, out, run_dir = RUNS / f"{tag}.pt", RUNS / f"{tag}.nnc", RUNS / f"{tag}_run"
    kwargs = json.dumps({"widths": widths})
    t0 = time.perf_counter()
    if not base.exists():
        cli(
            "train",
            "--model",
            MODEL,
            "--model-kwargs",
            kwargs,
            "--data",
            "fashion-mnist",
            "--epochs",
            str(epochs),
            "--seed",
            str(seed),
            "--out",
            str(base),
        )
    t1 = time.perf_counter()
    if (run_dir / "run.json").exists() and not out.exists():  # an interrupted run: continue it
        res = cli("compress", "--resume", "--run-dir", str(run_dir))
    else:
        res = cli(
            "compress",
            str(base),
            "--model",
            MODEL,
            "--data",
            "fashion-mnist",
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--run-dir",
            str(run_dir),
            *flags,
        )
    t2 = time.perf_counter()
    return {
        "seed": seed,
        "widths": widths,
        "flags": flags,
        "dense_test_accuracy": res["dense_test_score"],
        "test_accuracy": res["test_score"],
        "drop_points": res["test_drop_points"],
        "file_bytes": res["file_bytes"],
        "dense_bytes": res["dense_bytes"],
        "ratio": res["ratio"],
        "finetune": (res.get("finetune") or {}).get("note"),
        "totals": res["totals"],
        "stored_today": stored_today(base),
        # with the flag among the run's own, the file is already what the column would show
        "batchnorm_affine": None if "--batchnorm" in flags else batchnorm_affine(out, widths),
        "seconds": {"train": round(t1 - t0, 1), "compress": round(t2 - t1, 1)},
    }


def markdown(results: list[dict], meta: dict) -> str:
    recoded = any(r.get("batchnorm_affine") for r in results)
    lines = [
        "# A user's model through the CLI: small ResNet with BatchNorm, Fashion-MNIST",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['threads']} threads, torch {meta['torch']}.",
        "",
        f"Model: `--model {MODEL} --model-kwargs '{{\"widths\": {results[0]['widths']}}}'`"
        + (f", compress flags `{shlex.join(results[0].get('flags') or [])}`" if results[0].get("flags") else "")
        + "; every other setting is the CLI default. Ratio = dense fp32 parameter bytes / whole .nnc file; "
        "accuracy of the model decoded from the file.",
        "",
        "| seed | dense acc | file acc | drop | file B | ratio | "
        + ("with --batchnorm affine: B (ratio, acc) | " if recoded else "")
        + "torch.save B | fp16+gzip B (ratio) | fine-tuning |",
        "|---" * (10 if recoded else 9) + "|",
    ]
    for r in results:
        st, bn = r["stored_today"], r.get("batchnorm_affine")
        affine = (
            f"{bn['file_bytes']:,} ({r['dense_bytes'] / bn['file_bytes']:.1f}x, {100 * bn['test_accuracy']:.2f})"
            if bn
            else ""
        )
        lines.append(
            f"| {r['seed']} | {100 * r['dense_test_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} | "
            f"{r['drop_points']:+.2f} | {r['file_bytes']:,} | {r['ratio']:.1f}x | "
            + (f"{affine} | " if recoded else "")
            + f"{st['torch_save_fp32']:,} | {st['fp16_gzip']:,} ({r['dense_bytes'] / st['fp16_gzip']:.1f}x) | "
            f"{r['finetune']} |"
        )
    if recoded:
        lines += [
            "",
            "The `--batchnorm affine` column is the same run's file with its BatchNorms re-coded as that flag "
            "writes them (`batchnorm_affine` here: the flag acts only on the finished model).",
        ]
    if len(results) > 1:
        drops, ratios = [r["drop_points"] for r in results], [r["ratio"] for r in results]
        lines += [
            "",
            f"Median ratio {statistics.median(ratios):.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f}); "
            f"mean drop {statistics.mean(drops):+.2f} pt (min {min(drops):+.2f}, max {max(drops):+.2f}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--widths", nargs=3, type=int, default=[8, 16, 32])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--tag", default="resnet_bench")
    parser.add_argument("--flags", default="", help="more compress flags, one string: '--tolerance 0.5'")
    args = parser.parse_args()
    results = [one(seed, args.widths, args.epochs, shlex.split(args.flags)) for seed in args.seeds]
    meta = run_meta("resnet_bench.py")
    write_results(args.tag, meta, results, markdown(results, meta))


if __name__ == "__main__":
    main()
