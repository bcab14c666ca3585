"""Deep Compression benchmark on Fashion-MNIST: the whole-file ratio of
`nncompress compress` (CLI defaults) and the test accuracy of the model decoded
from that file, beside the ways people store a pruned model today.

Stage 1 (pruning with the CLI's default settings) is the checkpoint that
bench/prune_bench.py wrote for the same model and seed: `nncompress compress`
runs exactly that pruning first, so it is reused rather than recomputed.
Writes bench/results/compress_bench.{json,md}. Never run by the tests.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from nncompress.config import ShareConfig
from nncompress.data import load_data
from nncompress.modelfile import load_compressed
from nncompress.pipeline import metrics, run_compress
from nncompress.pruning.apply import count_parameters
from nncompress.train.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "results"
PUBLISHED = {  # MNIST figures: Deep Compression (Han 2016), soft weight-sharing (Ullrich 2017)
    "lenet300": {"deep_compression": 40, "soft_weight_sharing": 64},
    "lenet5": {"deep_compression": 39, "soft_weight_sharing": 162},
}


def stored_today(state: dict) -> dict[str, int]:
    """torch.save of the pruned state dict, and that file gzipped / zstd'd."""
    import zstandard

    buf = io.BytesIO()
    torch.save(state, buf)
    raw = buf.getvalue()
    return {
        "torch_save": len(raw),
        "gzip_9": len(gzip.compress(raw, 9)),
        "zstd_19": len(zstandard.ZstdCompressor(level=19).compress(raw)),
    }


def one(model_name: str, seed: int, splits, variant: str = "") -> dict:
    base = RUNS / f"base_{model_name}_s{seed}.pt"
    pruned = RUNS / f"pruned_{model_name}_s{seed}{variant}.pt"
    if not pruned.exists():
        raise SystemExit(f"{pruned} is missing: run bench/prune_bench.py first")
    dense_model = load_checkpoint(base).build_model()
    dense_params = count_parameters(dense_model)[0]
    dense_acc = metrics(dense_model, splits)["accuracy"]
    out = RUNS / f"{model_name}_s{seed}{variant}.nnc"
    t0 = time.perf_counter()
    res = run_compress(pruned, splits.name, out, None, ShareConfig(seed=seed), splits=splits)
    seconds = time.perf_counter() - t0
    decoded = load_compressed(out).build_model()
    acc = metrics(decoded, splits)["accuracy"]  # measured again, on a fresh decode of the file
    file_bytes = out.stat().st_size
    pruned_state = load_checkpoint(pruned).build_model().state_dict()
    return {
        "model": model_name,
        "seed": seed,
        "dense_params": dense_params,
        "dense_bytes": 4 * dense_params,
        "dense_test_accuracy": dense_acc,
        "test_accuracy": acc,
        "drop_points": round((dense_acc - acc) * 100, 4),
        "file_bytes": file_bytes,
        "ratio": 4 * dense_params / file_bytes,
        "seconds": round(seconds, 1),
        "stage_seconds": res["seconds"],
        "layers": res["layers"],
        "stored_today": stored_today(pruned_state),
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Compression benchmark: Fashion-MNIST, whole file",
        "",
        f"`{meta['command']}` on {meta['machine']}, torch {meta['torch']}, {meta['date']}.",
        "",
        "| model | seed | dense acc | decoded acc | drop | file B | ratio | torch.save | gzip | zstd |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["stored_today"]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['dense_test_accuracy'] * 100:.2f} | "
            f"{r['test_accuracy'] * 100:.2f} | {r['drop_points']:+.2f} | {r['file_bytes']:,} | "
            f"{r['ratio']:.1f}x | {t['torch_save']:,} | {t['gzip_9']:,} | {t['zstd_19']:,} |"
        )
    lines += [
        "",
        "| model | mean ratio (ours) | mean drop | Deep Compression (MNIST) | soft weight-sharing (MNIST) |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]
        lines.append(
            f"| {name} | {statistics.mean(r['ratio'] for r in rs):.1f}x | "
            f"{statistics.mean(r['drop_points'] for r in rs):+.2f} pt | "
            f"{PUBLISHED[name]['deep_compression']}x | {PUBLISHED[name]['soft_weight_sharing']}x |"
        )
    lines += [
        "",
        "Ratio = dense fp32 parameter bytes of the unpruned model / bytes of the whole .nnc file "
        "(headers included). Accuracy is measured on the model decoded from the file. "
        "torch.save/gzip/zstd: the same pruned model's state dict stored the usual way. "
        "Huffman bits are the coded stream's bytes in the file per kept weight, its code table and "
        "checksum included, so a layer of a hundred weights can pay more than the fixed width.",
        "",
        "Per-layer table, seed 0:",
        "",
    ]
    for r in results:
        if r["seed"] != results[0]["seed"]:
            continue
        lines += [
            f"**{r['model']}**",
            "",
            "| tensor | weights | kept | w bits (fixed/Huffman) | index bits (fixed/Huffman) | bytes | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["layers"]:
            if row["codec"] == "shared":
                bits = (
                    f"{row['weight_bits_fixed']} / {row['weight_bits_huffman']:.2f} | "
                    f"{row['index_bits_fixed']} / {row['index_bits_huffman']:.2f}"
                )
            else:
                bits = "raw fp32 | -"
            lines.append(
                f"| {row['tensor']} | {row['weights']:,} | {row['kept'] * 100:.1f} % | {bits} | "
                f"{row['bytes']:,} | {row['ratio']:.1f}x |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", default="compress_bench")
    parser.add_argument("--variant", default="", help="compress bench/runs/pruned_MODEL_sSEED<variant>.pt")
    parser.add_argument("--merge", nargs="+", default=None, help="only rebuild TAG.{json,md} from these JSONs")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        merged = {
            "meta": parts[0]["meta"],
            "parts": [p["meta"] for p in parts],
            "results": [r for p in parts for r in p["results"]],
        }
        (RESULTS / f"{args.tag}.json").write_text(json.dumps(merged, indent=2))
        (RESULTS / f"{args.tag}.md").write_text(markdown(merged["results"], merged["meta"]))
        return
    splits = load_data("fashion-mnist")
    meta = {
        "command": "python bench/compress_bench.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
    }
    results = []
    for name in args.models:
        for seed in args.seeds:
            results.append(one(name, seed, splits, args.variant))
            r = results[-1]
            sys.stderr.write(f"{name} seed {seed}: {r['ratio']:.1f}x, {r['drop_points']:+.2f} pt\n")
            (RESULTS / f"{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / f"{args.tag}.md").write_text(markdown(results, meta))


if __name__ == "__main__":
    main()
