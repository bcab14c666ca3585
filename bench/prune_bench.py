"""Pruning benchmark on Fashion-MNIST: nncompress's iterative std-threshold
pruning (CLI defaults) against torch.nn.utils.prune.global_unstructured (L1),
iterative, with the same fine-tuning epoch budget, in the same run.

Writes bench/results/prune_bench.json and prune_bench.md. Never run by tests.
Usage: python bench/prune_bench.py [--models lenet300 lenet5] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gzip
import io
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.utils.prune as tprune

from nncompress.config import PruneConfig, TrainConfig
from nncompress.data import load_data
from nncompress.models import build_model
from nncompress.pipeline import metrics, run_prune, save_trained, train_model
from nncompress.pruning import prunable_layers
from nncompress.train import fit, set_seed
from nncompress.train.loop import Teacher
from nncompress.train.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "results"


def baseline(model_name: str, seed: int, splits) -> Path:
    """The dense model, trained exactly as `nncompress train` does (cached)."""
    path = RUNS / f"base_{model_name}_s{seed}.pt"
    if not path.exists():
        model = build_model(model_name, splits.input_shape, splits.num_classes)
        cfg = TrainConfig(seed=seed)
        info = train_model(model, splits, cfg)
        save_trained(
            model,
            splits,
            path,
            {"val_accuracy": info["val"]["accuracy"], "train": cfg.to_dict(), "train_seconds": info["train_seconds"]},
        )
    return path


def epochs_spent(steps: list[dict], cfg: PruneConfig) -> tuple[int, int]:
    """(fine-tuning epochs before the final fine-tune, pruning iterations) our run used:
    the control run, every step, every recovery and every consolidation count."""
    per_stage = {
        "control": cfg.epochs_per_step,
        "step": cfg.epochs_per_step,
        "recover": cfg.recover_epochs,
        "consolidate": cfg.recover_epochs,
    }
    return sum(per_stage.get(s["stage"], 0) for s in steps), sum(s["stage"] == "step" for s in steps)


def saved_bytes(state: dict) -> dict[str, int]:
    buf = io.BytesIO()
    torch.save(state, buf)
    raw = buf.getvalue()
    out = {"torch_save": len(raw), "gzip": len(gzip.compress(raw, 9))}
    try:
        import zstandard

        out["zstd"] = len(zstandard.ZstdCompressor(level=19).compress(raw))
    except ImportError:
        pass
    return out


def peer(base_path: Path, splits, density: float, step_epochs: int, iterations: int, cfg: PruneConfig) -> dict:
    """torch's global L1 pruning to the same overall density, iteratively, same epoch budget and the
    same fine-tuning recipe (rate, and distillation from the dense model when ours used it)."""
    model = load_checkpoint(base_path).build_model()
    teacher = Teacher(copy.deepcopy(model), cfg.distill, cfg.distill_temperature) if cfg.distill > 0 else None
    layers = prunable_layers(model)
    params = [(m, "weight") for m in layers.values()]
    gen = set_seed(cfg.seed)
    per_iter = max(1, step_epochs // max(1, iterations))
    final = cfg.final_epochs + max(0, step_epochs - per_iter * iterations)
    keep_each = density ** (1.0 / iterations)
    t0 = time.perf_counter()
    for _ in range(iterations):
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=1.0 - keep_each)
        fit(model, splits.train_x, splits.train_y, cfg.finetune(per_iter), generator=gen, teacher=teacher)
    fit(model, splits.train_x, splits.train_y, cfg.finetune(final), generator=gen, teacher=teacher)
    seconds = time.perf_counter() - t0
    with_masks = saved_bytes(model.state_dict())
    for m in layers.values():
        tprune.remove(m, "weight")
    test = metrics(model, splits, "test")
    kept = sum(int((m.weight != 0).sum()) for m in layers.values())
    total = sum(m.weight.numel() for m in layers.values())
    return {
        "test_accuracy": test["accuracy"],
        "kept_fraction": kept / total,
        "seconds": round(seconds, 1),
        "epochs": per_iter * iterations + final,
        "iterations": iterations,
        "bytes_with_masks": with_masks,
        "bytes_after_remove": saved_bytes(model.state_dict()),
    }


def reused_run(out: Path) -> tuple[dict, list[dict]]:
    """Ours from an earlier run's files, for a rerun of the peer alone: the summary and step log
    that ``run_prune`` wrote beside ``out``. Summaries from before the probe existed name the
    fine-tuning recipe only in their config."""
    log_dir = out.with_name(out.stem + "_prune")
    s = json.loads((log_dir / "summary.json").read_text())
    steps = [json.loads(line) for line in (log_dir / "steps.jsonl").read_text().splitlines()]
    s.setdefault("finetune", {"lr": s["config"]["lr"], "distill": s["config"]["distill"]})
    return s, steps


def one(model_name: str, seed: int, splits, recipe: str | None = None, variant: str = "", reuse: bool = False) -> dict:
    base = baseline(model_name, seed, splits)
    cfg = PruneConfig(seed=seed)
    if recipe:  # a recipe's pruning section instead of the CLI defaults
        from nncompress.recipe import load_recipe

        cfg = dataclasses.replace(load_recipe(recipe).prune or cfg, seed=seed)
    out = RUNS / f"pruned_{model_name}_s{seed}{variant}.pt"
    if reuse:
        s, steps = reused_run(out)
        ours_seconds = s["seconds"]
        known = {f.name for f in dataclasses.fields(PruneConfig)}
        cfg = PruneConfig(**{k: v for k, v in s["config"].items() if k in known})  # the run's own settings
    else:
        t0 = time.perf_counter()
        run = run_prune(base, splits.name, out, cfg, splits=splits)
        ours_seconds = time.perf_counter() - t0
        s = run.summary
        steps = [json.loads(line) for line in Path(run.files["steps"]).read_text().splitlines()]
    step_epochs, iterations = epochs_spent(steps, cfg)
    dense_state = load_checkpoint(base).build_model().state_dict()
    tuned = dataclasses.replace(cfg, lr=s["finetune"]["lr"], distill=s["finetune"]["distill"])
    p = peer(base, splits, s["kept_fraction"], step_epochs, iterations, tuned)
    return {
        "model": model_name,
        "seed": seed,
        "dense_test_accuracy": s["dense"]["test_accuracy"],
        "ours": {
            "test_accuracy": s["pruned"]["test_accuracy"],
            "drop_points": s["test_drop_points"],
            "kept_fraction": s["kept_fraction"],
            "compression": s["compression"],
            "kept_per_layer": {r["layer"]: r["kept"] for r in s["layers"]},
            "removed_neurons": s["removed_neurons"],
            "seconds": round(ours_seconds, 1),
            "epochs": step_epochs + cfg.final_epochs,
            "file_bytes": s["file_bytes"],
            "q": s["q"],
            "finetune": s["finetune"],
            "reused": reuse,
            "config": s["config"],
        },
        "peer": {**p, "drop_points": round((s["dense"]["test_accuracy"] - p["test_accuracy"]) * 100, 4)},
        "dense_bytes": saved_bytes(dense_state),
    }


def _recipe(finetune: dict | None) -> str:
    if not finetune:
        return "-"
    return f"lr {finetune['lr']:g}" + (f" + distill {finetune['distill']:g}" if finetune["distill"] else "")


def markdown(results: list[dict], meta: dict, parts: list[dict] | None = None) -> str:
    runs = parts or [meta]
    lines = [
        "# Pruning benchmark: Fashion-MNIST",
        "",
        *[f"`{m['command']}` on {m['machine']}, torch {m['torch']}, {m['date']}." for m in runs],
        "",
        "Ours: `nncompress prune` defaults. Peer: `torch.nn.utils.prune.global_unstructured` (L1), "
        "iterative, pruned to the same density with the same fine-tuning epochs and recipe (the rate ours' probe "
        "chose, and distillation from the dense model where ours used it).",
        "",
        "| model | seed | dense acc | ours acc | ours drop | kept | fewer | peer acc | peer drop | "
        "ours s | peer s | ours file B | peer file B (masks) | fine-tuning |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, p = r["ours"], r["peer"]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['dense_test_accuracy'] * 100:.2f} | "
            f"{o['test_accuracy'] * 100:.2f} | {o['drop_points']:+.2f} | {o['kept_fraction'] * 100:.2f} % | "
            f"{o['compression']:.1f}x | {p['test_accuracy'] * 100:.2f} | {p['drop_points']:+.2f} | "
            f"{o['seconds']:.0f} | {p['seconds']:.0f} | {o['file_bytes']:,} | "
            f"{p['bytes_with_masks']['torch_save']:,} | {_recipe(o.get('finetune'))}"
            f"{' (ours: earlier run, peer rerun)' if o.get('reused') else ''} |"
        )
    lines += [
        "",
        "Mean over seeds:",
        "",
        "| model | dense acc | ours drop | ours kept | fewer | peer drop | per-layer kept (ours) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]

        def mean(f, rows=rs):
            return statistics.mean(f(r) for r in rows)

        per_layer = {
            k: statistics.mean(r["ours"]["kept_per_layer"][k] for r in rs) for k in rs[0]["ours"]["kept_per_layer"]
        }
        lines.append(
            f"| {name} | {mean(lambda r: r['dense_test_accuracy']) * 100:.2f} | "
            f"{mean(lambda r: r['ours']['drop_points']):+.2f} | "
            f"{mean(lambda r: r['ours']['kept_fraction']) * 100:.2f} % | "
            f"{mean(lambda r: r['ours']['compression']):.1f}x | "
            f"{mean(lambda r: r['peer']['drop_points']):+.2f} | "
            + ", ".join(f"{k} {v * 100:.1f} %" for k, v in per_layer.items())
            + " |"
        )
    lines += [
        "",
        "Drop = dense minus pruned test accuracy, in points (negative: pruned is better).",
        "Files: ours is `nncompress prune`'s checkpoint (CSR where smaller); the peer's is "
        "`torch.save(model.state_dict())` while its pruning is attached (weight_orig + weight_mask), "
        "as people save it; gzip/zstd figures are in the JSON.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tag", default="prune_bench")
    parser.add_argument("--recipe", default=None, help="take the pruning settings from this recipe")
    parser.add_argument("--variant", default="", help="suffix of the pruned checkpoints' names (e.g. -kd)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take ours from the run files already in bench/runs (same names) and rerun the peer only",
    )
    parser.add_argument(
        "--merge", nargs="+", default=None, help="only rebuild TAG.md (and TAG.json) from these result JSON files"
    )
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        merged = {
            "meta": parts[0]["meta"],
            "parts": [p["meta"] for p in parts],
            "results": [r for p in parts for r in p["results"]],
        }
        (RESULTS / f"{args.tag}.json").write_text(json.dumps(merged, indent=2))
        (RESULTS / f"{args.tag}.md").write_text(markdown(merged["results"], merged["meta"], merged["parts"]))
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    splits = load_data("fashion-mnist")
    meta = {
        "command": "python bench/prune_bench.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
    }
    results = []
    json_path = RESULTS / f"{args.tag}.json"
    for name in args.models:
        for seed in args.seeds:
            r = one(name, seed, splits, args.recipe, args.variant, args.reuse)
            results.append(r)
            sys.stderr.write(
                f"{name} seed {seed}: ours {r['ours']['drop_points']:+.2f} pt at "
                f"{r['ours']['compression']:.1f}x, peer {r['peer']['drop_points']:+.2f} pt\n"
            )
            json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / f"{args.tag}.md").write_text(markdown(results, meta))


if __name__ == "__main__":
    main()
