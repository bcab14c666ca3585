"""The CLI's defaults on fresh seeds, as a new user meets them: dense nets trained
with `nncompress train --seed S`, then `nncompress prune` and `nncompress compress`
(of the pruned checkpoint) with every default. The same seeds run through a
second source tree (`--code NAME=PATH/src`, e.g. an older checkout) give the
comparison in the same table.

    python bench/seeds_bench.py run --model lenet300 --seeds 20 21 --code new=src --work /tmp/seeds
    python bench/seeds_bench.py time --seeds 20 21 22 --code today=OLD/src --code new=src --work /tmp/seeds
    python bench/seeds_bench.py table --work /tmp/seeds --tag seeds_bench_lenet300
    python bench/seeds_bench.py run --model lenet5 --seeds 30 --val-size 10000 --code new=src --work /tmp/v10k

`run` keeps one JSON per model, seed and code in --work (a finished one is
reused); `time` runs `prune` of each code on the same seeds, interleaved, for a
wall-time ratio that shared-machine load cannot tilt; `table` writes
bench/results/<tag>.{json,md}. Never run by the tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run_meta, write_results

ROOT = Path(__file__).resolve().parent.parent
DATA = "fashion-mnist"


def cli(src: Path, *args: str) -> tuple[dict[str, Any], float]:
    """Run `nncompress ARGS --json` from source tree ``src``; (its JSON, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "nncompress", *args, "--json", "--quiet"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"nncompress {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout), seconds


def base(work: Path, model: str, seed: int, val_size: Optional[int] = None) -> Path:
    """The dense net, trained by this tree's `nncompress train` (shared by every code compared), holding out
    ``val_size`` validation images when given (keep one --work folder per size: the file name does not say)."""
    path = work / f"base_{model}_s{seed}.pt"
    if not path.exists():
        held = ["--val-size", str(val_size)] if val_size else []
        cli(ROOT / "src", "train", "--model", model, "--data", DATA, "--seed", str(seed), *held, "--out", str(path))
    return path


@functools.lru_cache(maxsize=None)
def takes_val_size(src: Path) -> bool:
    """Whether the tree's `prune` has --val-size (older trees validate on their default split, which is the
    head of the same seeded permutation, so never on images a base net with a larger split trained on)."""
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    done = subprocess.run(
        [sys.executable, "-m", "nncompress", "prune", "--help"], env=env, capture_output=True, text=True
    )
    return "--val-size" in done.stdout


def one(work: Path, model: str, seed: int, code: str, src: Path, val_size: Optional[int] = None) -> dict[str, Any]:
    out = work / f"{model}_s{seed}_{code}.json"
    if out.exists():
        return json.loads(out.read_text())
    dense = base(work, model, seed, val_size)
    pruned = work / f"pruned_{model}_s{seed}_{code}.pt"
    nnc = work / f"{model}_s{seed}_{code}.nnc"
    held = ["--val-size", str(val_size)] if val_size and takes_val_size(src) else []
    prune, prune_s = cli(src, "prune", str(dense), "--data", DATA, "--seed", str(seed), *held, "--out", str(pruned))
    comp, comp_s = cli(src, "compress", str(pruned), "--data", DATA, "--seed", str(seed), *held, "--out", str(nnc))
    dense_acc = prune["dense"]["test_accuracy"] if "test_accuracy" in prune.get("dense", {}) else None
    record = {
        "model": model,
        "seed": seed,
        "code": code,
        "dense_test_accuracy": dense_acc,
        "prune": {
            "fewer": prune["compression"],
            "kept": prune["kept_fraction"],
            "test_drop": prune["test_drop_points"],
            "seconds": round(prune_s, 1),
            "finetune": prune.get("finetune", {}).get("note"),
        },
        "compress": {
            "ratio": comp["ratio"],
            "file_bytes": comp["file_bytes"],
            "test_accuracy": comp["test_accuracy"],
            "seconds": round(comp_s, 1),
            "bit_search": comp.get("bit_search"),
        },
        "steps": [
            json.loads(line)
            for line in (pruned.parent / f"{pruned.stem}_prune" / "steps.jsonl").read_text().splitlines()
            if line.strip()
        ]
        if (pruned.parent / f"{pruned.stem}_prune" / "steps.jsonl").exists()
        else [],
    }
    if dense_acc is not None:
        record["compress"]["test_drop"] = round((dense_acc - comp["test_accuracy"]) * 100, 2)
    out.write_text(json.dumps(record, indent=1))
    return record


# fine-tuning epochs each step-log stage stands for, at the CLI defaults (the probe adds one step's worth)
STAGE_EPOCHS = {"control": 2, "step": 2, "recover": 4, "consolidate": 4, "target": 2, "final": 10}
PROBE_EPOCHS = 2


def epochs(record: dict[str, Any]) -> int:
    return PROBE_EPOCHS + sum(STAGE_EPOCHS.get(step["stage"], 0) for step in record["steps"])


def timing(work: Path, model: str, seeds: list[int], codes: list[list[str]], repeats: int) -> None:
    """`prune` wall time of each code on the same seeds, the codes interleaved (their order alternating from
    one round to the next) so both meet the same load on a shared machine; written to timing_<model>.json."""
    path = work / f"timing_{model}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for rnd in range(repeats):
        for seed in seeds:
            order = codes if (rnd + seed) % 2 == 0 else codes[::-1]
            for name, src in order:
                out = work / "timing" / f"{model}_s{seed}_{name}.pt"
                out.parent.mkdir(exist_ok=True)
                _, seconds = cli(
                    Path(src),
                    "prune",
                    str(base(work, model, seed)),
                    "--data",
                    DATA,
                    "--seed",
                    str(seed),
                    "--out",
                    str(out),
                )
                rows.append({"seed": seed, "code": name, "seconds": round(seconds, 2)})
                print(f"{model} s{seed} {name}: prune {seconds:.1f} s", flush=True)
                path.write_text(json.dumps(rows, indent=1))


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def table(work: Path, tag: str, models: list[str], notes: Optional[list[str]] = None) -> None:
    records = [
        r for p in sorted(work.glob("*_s*_*.json")) if (r := json.loads(p.read_text()))["model"] in models or not models
    ]
    if not records:
        raise SystemExit(f"no results in {work}: run `run` first")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["code"]), []).append(r)
    meta = run_meta("seeds_bench.py")
    for note in notes or []:  # the notes stand under the tables, not in the command line above them
        meta["command"] = meta["command"].replace(f" --note {note}", " --note ...")
    lines = [
        "# Fresh seeds with the CLI defaults: prune and compress",
        "",
        f"`{meta['command']}` on {meta['machine']}, torch {meta['torch']}, {meta['date']}. "
        "Each seed: `nncompress train --seed S`, `nncompress prune` and `nncompress compress` of the pruned "
        "checkpoint, every setting at its default. Drops are dense minus final test accuracy, in points "
        "(10,000 test images: one reading's standard error is about 0.15-0.2 points).",
        "",
        "| model | code | seeds | fewer nonzero min / median / max | seeds < 12x | prune drop min / median / max "
        "| mean | seeds > 0.6 | file ratio mean (min) | file drop mean (max) | prune s (median, shared machine) "
        "| fine-tuning epochs (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (model, code), rs in sorted(groups.items()):
        fewer = [r["prune"]["fewer"] for r in rs]
        drop = [r["prune"]["test_drop"] for r in rs]
        ratio = [r["compress"]["ratio"] for r in rs]
        fdrop = [r["compress"].get("test_drop", float("nan")) for r in rs]
        secs = [r["prune"]["seconds"] for r in rs]
        lines.append(
            f"| {model} | {code} | {len(rs)} | {spread(fewer)} | {sum(f < 12 for f in fewer)} | "
            f"{spread(drop)} | {statistics.mean(drop):+.2f} | {sum(d > 0.6 for d in drop)} | "
            f"{statistics.mean(ratio):.1f}x ({min(ratio):.1f}x) | {statistics.mean(fdrop):+.2f} "
            f"({max(fdrop):+.2f}) | {statistics.median(secs):.0f} | "
            f"{statistics.median(epochs(r) for r in rs):.0f} |"
        )
    lines += [
        "",
        "Per seed:",
        "",
        "| model | seed | code | dense test | fewer | prune drop | file ratio | file drop | prune s | fine-tuning |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["model"], r["seed"], r["code"])):
        p, c = r["prune"], r["compress"]
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['code']} | {r['dense_test_accuracy'] * 100:.2f} | "
            f"{p['fewer']:.1f}x | {p['test_drop']:+.2f} | {c['ratio']:.1f}x | {c.get('test_drop', 0):+.2f} | "
            f"{p['seconds']:.0f} | {(p['finetune'] or '')[:60]} |"
        )
    for model in sorted({m for m, _ in groups}):
        path = work / f"timing_{model}.json"
        if path.exists():
            lines += ["", _timing_line(model, json.loads(path.read_text()))]
    for note in notes or []:  # what the codes stand for where a folder gathers several runs
        lines += ["", note]
    write_results(tag, meta, records, "\n".join(lines) + "\n")


def _timing_line(model: str, rows: list[dict[str, Any]], baseline: str = "today") -> str:
    """Median over seeds of (median seconds of a code) / (median seconds of the baseline), from `timing`."""
    by: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        by.setdefault((r["code"], r["seed"]), []).append(r["seconds"])
    parts = []
    for code in sorted({c for c, _ in by} - {baseline}):
        ratios = [
            statistics.median(v) / statistics.median(by[(baseline, s)])
            for (c, s), v in by.items()
            if c == code and (baseline, s) in by
        ]
        if ratios:
            runs = sum(len(v) for (c, _), v in by.items() if c in (code, baseline))
            parts.append(
                f"{code}: {statistics.median(ratios):.2f}x (seeds {len(ratios)}, runs {runs}, per-seed "
                f"ratios {min(ratios):.2f}-{max(ratios):.2f})"
            )
    return (
        f"Wall time of `prune` on {model}, interleaved with `{baseline}`'s on the same seeds "
        f"(`seeds_bench.py time`): " + "; ".join(parts)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", default="lenet300")
    r.add_argument("--seeds", type=int, nargs="+", default=list(range(20, 30)))
    r.add_argument("--code", action="append", default=[], help="NAME=PATH/src (default new=src)")
    r.add_argument("--work", type=Path, required=True)
    r.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images held out (train, and prune/compress of trees that take --val-size)",
    )
    tm = sub.add_parser("time")
    tm.add_argument("--model", default="lenet300")
    tm.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22])
    tm.add_argument("--code", action="append", default=[], help="NAME=PATH/src, two or more")
    tm.add_argument("--repeats", type=int, default=1)
    tm.add_argument("--work", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--tag", default="seeds_bench")
    t.add_argument("--models", nargs="*", default=[], help="only these models (default: all)")
    t.add_argument("--note", action="append", default=[], help="a paragraph under the tables (repeatable)")
    args = ap.parse_args()
    if args.what == "table":
        table(args.work, args.tag, args.models, args.note)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    codes = [c.split("=", 1) for c in (args.code or ["new=src"])]
    if args.what == "time":
        timing(args.work, args.model, args.seeds, codes, args.repeats)
        return
    for seed in args.seeds:
        for name, src in codes:
            rec = one(args.work, args.model, seed, name, Path(src), args.val_size)
            print(
                f"{args.model} s{seed} {name}: {rec['prune']['fewer']:.1f}x prune drop "
                f"{rec['prune']['test_drop']:+.2f}"
                f", file {rec['compress']['ratio']:.1f}x drop {rec['compress'].get('test_drop', 0):+.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
