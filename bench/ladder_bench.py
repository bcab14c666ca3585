"""How a pruning decision's validation reading compares with the test set, step by step.

Each seed's dense net (`nncompress train --seed S`, shared with `seeds_bench.py`'s --work folder) is pruned
along a fixed ladder of densities with the default fine-tuning and nothing rolled back (`--target-density`
with many steps, every layer at the same q), and after every step the pruner's own validation reading
(paired drop, its standard error, KL to the dense model, the pooled estimate) is written beside the drop
on the test set. The tolerance is held to the validation reading, the benchmarks' criteria to the test
drop: where the two part, the stopping rule cannot meet both.

    python bench/ladder_bench.py run --model lenet5 --seeds 21 24 --work /tmp/seeds
    python bench/ladder_bench.py table --model lenet5 --work /tmp/seeds --tag ladder_bench_lenet5
    python bench/ladder_bench.py halves --model lenet5 --seeds 21 22 24 --work /tmp/v10k

`run` keeps one JSON per seed in --work (a finished one is reused). `halves` reads nets trained and pruned
with `--val-size 10000` (`seeds_bench.py run ... --val-size 10000`: base_*.pt and pruned_*_new.pt in --work)
on the two halves of their validation split and on the test set: whether a gap between validation and test
is one split's luck (then the halves disagree) or the split's source (then both halves read alike).
Never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run_meta, write_results
from seeds_bench import DATA, base

from nncompress.config import PruneConfig
from nncompress.data import load_data
from nncompress.pipeline.modelfiles import load_for_data
from nncompress.pipeline.prune import prune_model
from nncompress.pruning import StepRecord
from nncompress.train.evidence import ValidationReader
from nncompress.train.objective import default_objective

TARGET, STEPS = 0.04, 12  # densities 0.765, 0.585, ... 0.053, 0.04: 1.3x to 25x fewer weights


def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1.0 per example the model classifies right, else 0.0 (the pruner's own per-example reading)."""
    return ValidationReader(default_objective(y), x, y, model, with_kl=False).read(model).examples


def ladder(work: Path, model_name: str, seed: int) -> list[dict[str, Any]]:
    """One seed's steps (cached in --work)."""
    path = work / f"ladder_{model_name}_s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    splits = load_data(DATA)
    model, _ = load_for_data(base(work, model_name, seed), splits)
    dense = _correct(model, splits.test_x, splits.test_y)
    rows: list[dict[str, Any]] = []

    def on_step(rec: StepRecord) -> None:
        diff = dense - _correct(model, splits.test_x, splits.test_y)  # the model as this step left it
        rows.append(
            {
                **rec.to_dict(),
                "test_drop": float(diff.mean()) * 100,
                "test_se": float(diff.std()) / len(diff) ** 0.5 * 100,
            }
        )
        print(seed, rec.stage, f"{rec.overall_density:.4f}", rec.drop_points, rows[-1]["test_drop"], flush=True)

    torch.set_num_threads(1)
    cfg = PruneConfig(seed=seed, groups="all", target_density=TARGET, target_steps=STEPS, final_epochs=0)
    prune_model(model, splits, cfg, on_step=on_step)
    path.write_text(json.dumps(rows, indent=1))
    return rows


def table(work: Path, model_name: str, tag: str) -> None:
    seeds = sorted(int(p.stem.rsplit("_s", 1)[1]) for p in work.glob(f"ladder_{model_name}_s*.json"))
    runs = {s: [r for r in ladder(work, model_name, s) if r["stage"] == "target"] for s in seeds}
    steps = len(next(iter(runs.values())))
    lines = [
        f"# Validation against test drop along a pruning ladder: {model_name}, {len(seeds)} seeds",
        "",
        f"`{run_meta('ladder_bench.py')['command']}`. Dense nets from `nncompress train --seed S` (5,000 "
        "validation images held out of the training set, the default); each pruned in "
        f"{steps} steps to {TARGET:g} of its weights (every layer at the same q x std), default fine-tuning "
        "after each step, nothing rolled back. Drops are in points against the dense net: validation as the "
        "pruner reads it (paired, on the same 5,000 images every step), test on the 10,000 test images.",
        "",
        "| fewer weights | validation drop: mean (min, max) | test drop: mean (min, max) | validation - test: mean "
        "(its SE over seeds) | seeds with validation > test |",
        "|---|---|---|---|---|",
    ]
    results = []
    for i in range(steps):
        at = [runs[s][i] for s in seeds]
        val, test = [r["drop_points"] for r in at], [r["test_drop"] for r in at]
        gap = [v - t for v, t in zip(val, test, strict=True)]
        se = statistics.stdev(gap) / len(gap) ** 0.5 if len(gap) > 1 else float("nan")
        fewer = statistics.mean(1 / r["overall_density"] for r in at)
        results.append({"fewer": fewer, "val": val, "test": test, "seeds": seeds})
        lines.append(
            f"| {fewer:.1f}x | {statistics.mean(val):+.2f} ({min(val):+.2f}, {max(val):+.2f}) | "
            f"{statistics.mean(test):+.2f} ({min(test):+.2f}, {max(test):+.2f}) | "
            f"{statistics.mean(gap):+.2f} ({se:.2f}) | {sum(g > 0 for g in gap)} of {len(gap)} |"
        )
    write_results(tag, run_meta("ladder_bench.py", model=model_name), results, "\n".join(lines) + "\n")


def halves(work: Path, model_name: str, seeds: list[int], tag: str) -> None:
    splits = load_data(DATA, val_size=10000)
    parts = {
        "validation, first 5,000": (splits.val_x[:5000], splits.val_y[:5000]),
        "validation, other 5,000": (splits.val_x[5000:], splits.val_y[5000:]),
        "test, 10,000": (splits.test_x, splits.test_y),
    }
    results, rows = [], []
    for seed in seeds:
        dense, _ = load_for_data(work / f"base_{model_name}_s{seed}.pt", splits)
        pruned, _ = load_for_data(work / f"pruned_{model_name}_s{seed}_new.pt", splits)
        kept = sum(int(torch.count_nonzero(m.weight)) for m in pruned.modules() if hasattr(m, "weight"))
        cells = {}
        for name, (x, y) in parts.items():
            a, b = _correct(dense, x, y), _correct(pruned, x, y)
            diff = a - b
            cells[name] = {
                "dense": float(a.mean()) * 100,
                "drop": float(diff.mean()) * 100,
                "se": float(diff.std()) / len(diff) ** 0.5 * 100,
            }
        results.append({"seed": seed, "nonzero": kept, **cells})
        rows.append(
            f"| {seed} | {kept:,} | "
            + " | ".join(f"{c['dense']:.2f} | {c['drop']:+.2f} ({c['se']:.2f})" for c in cells.values())
            + " |"
        )
    head = " | ".join(f"{name}: dense % | drop (SE)" for name in parts)
    lines = [
        f"# Two halves of a validation split against the test set: {model_name}",
        "",
        f"`{run_meta('ladder_bench.py')['command']}`. Nets trained and pruned holding out 10,000 validation "
        "images (`--val-size 10000`); each read on both halves of that split and on the test set. Drops in "
        "points, pruned against dense, paired on the same images.",
        "",
        f"| seed | nonzero weights | {head} |",
        "|---|---|" + "---|---|" * len(parts),
        *rows,
    ]
    write_results(tag, run_meta("ladder_bench.py", model=model_name), results, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("run", "table", "halves"))
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--seeds", type=int, nargs="*", default=[])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.action == "run":
        for seed in args.seeds:
            ladder(args.work, args.model, seed)
    elif args.action == "halves":
        halves(args.work, args.model, args.seeds, args.tag or f"val_halves_{args.model}")
    else:
        table(args.work, args.model, args.tag or f"ladder_bench_{args.model}")


if __name__ == "__main__":
    main()
