"""The ``nncompress`` command line: arguments -> configs -> pipeline calls.

Errors of ours become one line on stderr and exit status 1; progress bars go
to stderr so ``--json`` output on stdout stays machine-readable.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from nncompress import __version__
from nncompress.config import GROUP_PRESETS, PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.errors import ConfigError, NNCompressError
from nncompress.progress import Progress, ProgressFn

DATA_HELP = "fashion-mnist, digits, or a folder with the four MNIST-format IDX files"


class Bars:
    """tqdm bars keyed by task; a task restarting at 1 gets a fresh bar."""

    POSITION = {"prune": 0, "sensitivity": 0, "train": 0, "fine-tune": 1}
    UNIT = {"train": "epoch", "fine-tune": "epoch", "probe": "epoch", "centroids": "epoch", "k-means": "layer",
            "coding": "tensor"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        bar = self.bars.get(event.task)
        if bar is None or event.done <= bar.n or bar.total != event.total:
            if bar is not None:
                bar.close()
            nested = self.POSITION.get(event.task, 0) > 0
            bar = tqdm(total=event.total, desc=event.task, position=self.POSITION.get(event.task, 0),
                       leave=not nested, file=sys.stderr, dynamic_ncols=True,
                       unit=self.UNIT.get(event.task, "step"))
            self.bars[event.task] = bar
        bar.update(event.done - bar.n)
        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in event.info.items()}
        if shown:
            bar.set_postfix(shown, refresh=False)
        if event.done >= event.total:
            bar.close()
            del self.bars[event.task]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _emit(args: argparse.Namespace, payload: dict[str, Any], lines: Sequence[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print("\n".join(lines))


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def cmd_train(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.data import load_data
    from nncompress.models import build_model
    from nncompress.pipeline import check_fits, metrics, save_trained, train_model
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    splits = load_data(args.data)
    model = build_model(args.model, splits.input_shape, splits.num_classes)
    check_fits(model, splits, args.model)
    info = train_model(model, splits, cfg, progress)
    test = metrics(model, splits, "test")
    save_trained(model, splits, args.out, {"val_accuracy": info["val"]["accuracy"],
                                           "test_accuracy": test["accuracy"], "train": cfg.to_dict()})
    _emit(args, {"out": args.out, "val_accuracy": info["val"]["accuracy"], "test_accuracy": test["accuracy"],
                 "params": test["params"], "seconds": info["train_seconds"]},
          [f"trained {args.model} on {splits.name} for {cfg.epochs} epochs in {info['train_seconds']:.1f} s",
           f"validation accuracy {_pct(info['val']['accuracy'])}, test accuracy {_pct(test['accuracy'])}",
           f"wrote {args.out}"])


def cmd_evaluate(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.data import load_data
    from nncompress.pipeline import load_for_data, metrics
    splits = load_data(args.data)
    model, _ = load_for_data(args.checkpoint, splits, args.model)
    m = metrics(model, splits, "test")
    m["file_bytes"] = Path(args.checkpoint).stat().st_size
    m["data"] = splits.name
    _emit(args, m, [f"{args.checkpoint} on {splits.name} test split ({m['examples']} images): "
                    f"accuracy {_pct(m['accuracy'])}, loss {m['loss']:.4f}",
                    f"parameters {m['params']:,}, nonzero {m['nonzero']:,} "
                    f"({m['params'] / max(1, m['nonzero']):.1f}x fewer), file {m['file_bytes']:,} bytes"])


def cmd_sensitivity(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_sensitivity
    cfg = SensitivityConfig(q0=args.q0, q_step=args.q_step, q_max=args.q_max, max_drop=args.max_drop)
    res = run_sensitivity(args.checkpoint, args.data, args.out, cfg, model_name=args.model, progress=progress)
    lines = [f"dense validation accuracy {_pct(res['dense_val_accuracy'])}",
             "per-layer q scale (prune --sensitivity uses it): " +
             ", ".join(f"{k} {v:g}" for k, v in res["layer_scale"].items()),
             f"wrote {res['files']['csv']} and {res['files']['plot']}"]
    _emit(args, res, lines)


def _prune_config(args: argparse.Namespace) -> PruneConfig:
    scale: dict[str, float] = {}
    SensitivityConfig(max_drop=args.max_drop)  # validates --max-drop even without --sensitivity
    if args.sensitivity:
        from nncompress.pruning.sensitivity import from_csv, layer_scales
        base, rows = from_csv(args.sensitivity)
        scale = layer_scales(rows, base, args.max_drop)
    flags, switches = _prune_flags()
    values = {name: getattr(args, _dest(flag)) for flag, name, _, _ in flags}
    values.update({name: not getattr(args, _dest(flag)) for flag, name, _ in switches})
    try:
        return PruneConfig(**values, layer_scale=scale, seed=args.seed)
    except ConfigError as exc:  # name the flag the user typed, not the config field it sets
        message = str(exc)
        for flag, name, _, _ in flags:
            if message.startswith(f"{name} must"):
                raise ConfigError(flag + message[len(name):]) from None
        raise


def _prune_lines(s: dict[str, Any]) -> list[str]:
    lines = [f"{'layer':<8}{'weights':>10}{'kept':>10}{'kept %':>9}{'dense B':>11}{'CSR B':>11}  CSR smaller?"]
    for r in s["layers"]:
        lines.append(f"{r['layer']:<8}{r['weights']:>10,}{r['nonzero']:>10,}{r['kept'] * 100:>8.2f}%"
                     f"{r['dense_bytes']:>11,}{r['csr_bytes']:>11,}  {'yes' if r['csr_smaller'] else 'no'}")
    lines.append(f"{'total':<8}{s['weights']:>10,}{s['kept_weights']:>10,}{s['kept_fraction'] * 100:>8.2f}%")
    lines += [f"{s['compression']:.1f}x fewer nonzero weights; test accuracy "
              f"{_pct(s['dense']['test_accuracy'])} -> {_pct(s['pruned']['test_accuracy'])} "
              f"({-s['test_drop_points']:+.2f} pt); {s['seconds']:.0f} s",
              f"removed neurons: {s['removed_neurons'] or 'none'}",
              f"fine-tuned at {s['finetune']['note']}",
              f"wrote {s['checkpoint']} ({s['file_bytes']:,} bytes; the input checkpoint is "
              f"{s['input_file_bytes']:,} bytes)"]
    return lines


def cmd_prune(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_prune
    cfg = _prune_config(args)
    run = run_prune(args.checkpoint, args.data, args.out, cfg, log_dir=args.log_dir, storage=args.storage,
                    model_name=args.model, progress=progress)
    _emit(args, {**run.summary, "files": run.files},
          _prune_lines(run.summary) + [f"step log, histograms, summary in {Path(run.files['steps']).parent}"])


def _file_lines(t: dict[str, Any]) -> list[str]:
    """Deep Compression's per-layer table (Tables 2-3) for a compressed file."""
    head = (f"{'tensor':<12}{'weights':>9}{'kept %':>8}{'w bits':>7}{'w huff':>7}{'i bits':>7}{'i huff':>7}"
            f"{'bytes':>9}{'ratio':>8}")
    lines = [head]
    totals = t.get("totals")
    for r in [*t["layers"], *([{**totals, "tensor": "total", "codec": "total"}] if totals else [])]:
        if r["codec"] == "raw" or r.get("weight_bits_huffman") is None:
            bits = f"{'raw' if r['codec'] == 'raw' else '':>7}{'':>21}"
        else:
            bits = "".join(f"{r[k]:>7.2f}" if isinstance(r[k], float) else f"{r[k]:>7}" for k in
                           ("weight_bits_fixed", "weight_bits_huffman", "index_bits_fixed", "index_bits_huffman"))
        lines.append(f"{r['tensor']:<12}{r['weights']:>9,}{r['kept'] * 100:>7.2f}%{bits}{r['bytes']:>9,}"
                     f"{r['ratio']:>7.1f}x")
    lines.append(f"whole file {t['file_bytes']:,} bytes (headers included) vs {t['dense_bytes']:,} dense fp32 "
                 f"bytes: {t['ratio']:.1f}x smaller")
    return lines


def _int_option(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag} takes 'auto' or a whole number, got {value!r}") from None


# compress: flag -> recipe key. Flags left out keep the recipe's value (or the default recipe's).
COMPRESS_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--groups", "prune.groups", str, f"pruning stages: {', '.join(GROUP_PRESETS)}, or layers like fc1+fc2,fc3"),
    ("--tolerance", "prune.tolerance", float, "largest validation accuracy drop (points) a step may leave"),
    ("--budget", "prune.budget", str, "greedy (each stage the whole tolerance) or even (stage i of n: i/n of it)"),
    ("--distill", "prune.distill", float, "weight of the dense model's soft outputs in fine-tuning (0: labels only)"),
    ("--q0", "prune.q0", float, "first q (threshold = q x std of the layer)"),
    ("--q-step", "prune.q_step", float, "how much q rises per step"),
    ("--q-max", "prune.q_max", float, "largest q tried"),
    ("--epochs-per-step", "prune.epochs_per_step", int, "fine-tuning epochs after each pruning step"),
    ("--recover-epochs", "prune.recover_epochs", int, "extra fine-tuning for a step that misses the tolerance"),
    ("--refine-steps", "prune.refine_steps", int, "bisections of q between the last good and the failed step"),
    ("--min-layer-share", "prune.min_layer_share", float, "leave layers holding less than this share unpruned"),
    ("--final-epochs", "prune.final_epochs", int, "fine-tuning epochs after the last stage"),
    ("--lr", "prune.lr", float, "fine-tuning learning rate, probed first (see --probe-kl; --no-probe keeps it)"),
    ("--probe-kl", "prune.probe_kl", float, "largest output shift (mean KL, nats) one fine-tuning step at --lr "
                                            "may cause the dense model before --fallback-lr is used"),
    ("--fallback-lr", "prune.fallback_lr", float, "fine-tuning rate when the probe finds --lr too rough"),
    ("--fallback-distill", "prune.fallback_distill", float, "distillation weight that goes with --fallback-lr"),
    ("--fc-bits", "share.fc_bits", int, "codebook bits of Linear layers"),
    ("--conv-bits", "share.conv_bits", int, "codebook bits of convolutions"),
    ("--min-members", "share.min_members", int, "a small layer's codebook keeps at most one centroid per this "
                                                   "many surviving weights"),
    ("--init", "share.init", str, "k-means initialisation: linear, density or random"),
    ("--share-epochs", "share.epochs", int, "centroid fine-tuning epochs"),
    ("--centroid-lr", "share.centroid_lr", float, "step size on the sum of each centroid's member gradients"),
    ("--raw-dtype", "coding.raw_dtype", str, "storage of biases and other unshared tensors: float32 or float16"),
    ("--codebook-dtype", "coding.codebook_dtype", str,
     "codebook storage: auto (float16 where centroids fit it), float32 or float16"),
    ("--rel-bits", "coding.rel_bits", "auto|int", "relative-index width, or auto (whatever makes the file smallest)"),
    ("--seed", "seed", int, "fixes every source of randomness"),
    ("--data", "data", str, DATA_HELP),
    ("--model", "model", str, "built-in model: to train from scratch, or for checkpoints that record none"),
]
COMPRESS_SWITCHES: list[tuple[str, str, str]] = [
    ("--no-control", "prune.control", "measure drops from the dense model itself, not from the dense model "
                                      "after the same fine-tuning without pruning"),
    ("--no-probe", "prune.probe", "skip the probe: always fine-tune at --lr with --distill"),
    ("--keep-dead", "prune.remove_dead", "do not remove dead neurons"),
    ("--keep-dropout", "prune.adjust_dropout", "do not adjust dropout rates"),
    ("--skip-prune", "prune.enabled", "share and code only (automatic when the checkpoint is already pruned)"),
]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys the command line sets, typed as the recipe expects them."""
    out: dict[str, Any] = {}
    for flag, key, kind, _ in COMPRESS_FLAGS:
        value = getattr(args, _dest(flag))
        if value is not None:
            out[key] = value if kind != "auto|int" or value == "auto" else _int_option(flag, value)
    for flag, key, _ in COMPRESS_SWITCHES:
        if getattr(args, _dest(flag)):
            out[key] = False
    if args.sensitivity:
        from nncompress.config import SensitivityConfig
        from nncompress.pruning.sensitivity import from_csv, layer_scales
        max_drop = args.max_drop if args.max_drop is not None else SensitivityConfig().max_drop
        base, rows = from_csv(args.sensitivity)
        for layer, scale in layer_scales(rows, base, max_drop).items():
            out[f"prune.layers.{layer}.q_scale"] = scale
    elif args.max_drop is not None:
        out["sensitivity.max_drop"] = args.max_drop
    return out


def _resolve_compress(args: argparse.Namespace) -> tuple[Any, Any, Optional[str], Optional[str]]:
    """(recipe, run dir, checkpoint, out) from the command line, a recipe, or a run to resume."""
    from nncompress.recipe import apply_overrides, load_recipe, parse_recipe
    from nncompress.rundir import RunDir, new_run_dir
    overrides = _compress_overrides(args)
    if args.resume:
        if not args.run_dir:
            raise ConfigError("--resume needs --run-dir: the folder of the run to continue")
        if args.checkpoint or args.recipe or args.out or overrides:
            raise ConfigError(f"--resume continues the run in {args.run_dir} with its own settings "
                              f"({args.run_dir}/run.json); give only --run-dir (and --quiet, --json, --report)")
        run = RunDir(args.run_dir, resume=True)
        saved = run.read_run()
        return parse_recipe(saved.get("recipe") or {}, f"{run.path}/run.json"), run, saved.get("checkpoint"), \
            saved.get("out")
    recipe = load_recipe(args.recipe) if args.recipe else parse_recipe({}, "<defaults>")
    try:
        recipe = apply_overrides(recipe, overrides)
    except ConfigError as exc:  # name the flag the user typed, not the recipe key it sets
        message = str(exc)
        for flag, key, _, _ in COMPRESS_FLAGS:
            message = message.replace(f"override: {key}:", f"{flag}:")
        raise ConfigError(message) from None
    if args.skip_prune and any(k.startswith("prune.") and k != "prune.enabled" for k in overrides):
        raise ConfigError("--skip-prune turns pruning off: drop the pruning options, or --skip-prune")
    if args.max_drop is not None and recipe.sensitivity is None and not args.sensitivity:
        raise ConfigError("--max-drop sets how a sensitivity scan becomes per-layer q: give --sensitivity CSV, "
                          "or a recipe with a sensitivity section")
    _check_output(args.out)
    if args.run_dir:
        return recipe, RunDir(args.run_dir), args.checkpoint, args.out
    path = new_run_dir()
    args._made_run_dir = path  # removed again if the run fails before it starts
    return recipe, RunDir(path), args.checkpoint, args.out


def cmd_compress(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_recipe
    if args.report:
        _check_output(args.report)
        _check_report_name(args.report)
    recipe, run, checkpoint, out = _resolve_compress(args)
    try:
        args._run_dir = run.path  # for the interruption message
        res = run_recipe(recipe, run, checkpoint=checkpoint, out=out, progress=progress)
    except BaseException:
        made = getattr(args, "_made_run_dir", None)
        if made is not None and not (made / "run.json").exists():  # failed before it started: leave no empty folder
            shutil.rmtree(made, ignore_errors=True)
            args._run_dir = None
        raise
    args._run_dir = None  # finished: nothing to resume from here on
    lines = [f"run folder {run.path}"]
    if args.report:
        from nncompress.report.page import write_report
        html, md = write_report(run.path, args.report)
        res["report"] = {"html": str(html), "markdown": str(md)}
        lines.append(f"report {html} (and {md})")
    skipped = "; pruning skipped (input already pruned)" if res["pruning_skipped"] else ""
    if res.get("finetune"):
        lines.insert(0, f"pruning fine-tuned at {res['finetune']['note']}")
    _emit(args, {**res, "run_dir": str(run.path)}, _file_lines(res) + [
        f"test accuracy of the decoded file {_pct(res['test_accuracy'])} (input {_pct(res['dense_test_accuracy'])}, "
        f"{-res['test_drop_points']:+.2f} pt){skipped}", f"wrote {res['file']}", *lines])


def _check_report_name(path: str) -> None:
    if Path(path).suffix.lower() == ".md":
        raise ConfigError(f"{path}: give the HTML page's name (e.g. report.html); the Markdown twin goes beside it")


def cmd_report(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.report.page import write_report
    _check_report_name(args.out)
    html, md = write_report(args.run_dir, args.out)
    _emit(args, {"html": str(html), "markdown": str(md)}, [f"wrote {html} and {md}"])


def cmd_inspect(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.modelfile import layer_table, load_compressed
    box = load_compressed(args.file)
    table = layer_table(box.header, box.section_bytes, box.file_bytes)
    table["arch"] = box.header.get("arch")
    _emit(args, table, _file_lines(table))


def cmd_decompress(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.atomic import atomic_open
    from nncompress.modelfile import load_compressed
    import torch
    box = load_compressed(args.file)
    with atomic_open(args.out, "wb") as handle:
        torch.save(box.state, handle)
    _emit(args, {"out": args.out, "tensors": len(box.state)},
          [f"wrote {args.out}: a plain state dict of {len(box.state)} tensors "
           "(torch.load(path, weights_only=True) reads it)"])


# The demo's whole run; recipes/mlp-digits.yaml holds the same (a test keeps them equal).
DEMO_RECIPE: dict[str, Any] = {
    "model": "mlp", "data": "digits",
    "train": {"epochs": 40, "lr": 0.05, "batch_size": 64},
    "sensitivity": {"enabled": True},
    "prune": {"epochs_per_step": 4, "final_epochs": 20, "lr": 0.02, "batch_size": 64, "tolerance": 0.8},
    "share": {"batch_size": 64},
}


def cmd_demo(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import parse_recipe
    from nncompress.report.page import write_report
    from nncompress.rundir import RunDir, new_run_dir
    recipe = parse_recipe({**DEMO_RECIPE, "seed": args.seed}, "demo")
    run = RunDir(new_run_dir(args.out))
    args._run_dir = run.path
    res = run_recipe(recipe, run, progress=progress)
    html, _ = write_report(run.path, run.file("report.html"))
    steps = [json.loads(line) for line in run.file("steps.jsonl").read_text().splitlines()]
    density = steps[-1]["overall_density"]  # against the layer sizes before dead neurons were removed
    print("\n".join([
        "demo: MLP on scikit-learn's embedded 8x8 digits: train -> sensitivity -> prune -> share -> code",
        f"pruning: {len(steps)} logged steps; {1 / max(density, 1e-12):.1f}x fewer nonzero weights "
        f"({density:.1%} kept); fine-tuned at {(res.get('finetune') or {}).get('note', '-')}", "",
        *_file_lines(res),
        f"test accuracy: dense {_pct(res['dense_test_accuracy'])}, decoded file {_pct(res['test_accuracy'])} "
        f"({-res['test_drop_points']:+.2f} pt)",
        f"outputs in {run.path}; open {html} for the report"]))


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--model", default=None, help="model name for checkpoints that record no architecture")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def _add_q_range(p: argparse.ArgumentParser, defaults: PruneConfig | SensitivityConfig) -> None:
    p.add_argument("--q0", type=float, default=defaults.q0, help="first q (threshold = q x std of the layer)")
    p.add_argument("--q-step", type=float, default=defaults.q_step, help="how much q rises per step")
    p.add_argument("--q-max", type=float, default=defaults.q_max, help="largest q tried")


def _prune_flags() -> tuple[list[tuple[str, str, Any, str]], list[tuple[str, str, str]]]:
    """``prune``'s flags: the pruning rows of the compress tables, keyed by PruneConfig field."""
    flags = [(flag, key.split(".", 1)[1], kind, text) for flag, key, kind, text in COMPRESS_FLAGS
             if key.startswith("prune.")]
    switches = [(flag, key.split(".", 1)[1], text) for flag, key, text in COMPRESS_SWITCHES
                if key.startswith("prune.") and key != "prune.enabled"]
    return flags, switches


def _add_prune_flags(p: argparse.ArgumentParser) -> None:
    c = PruneConfig()
    flags, switches = _prune_flags()
    for flag, name, kind, text in flags:
        p.add_argument(flag, type=kind, default=getattr(c, name), help=f"{text} (default {getattr(c, name)})")
    for flag, _, text in switches:
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--sensitivity", default=None, help="sensitivity.csv (or its folder): per-layer q from it")
    p.add_argument("--max-drop", type=float, default=SensitivityConfig().max_drop,
                   help="with --sensitivity: drop (points) that sets each layer's q scale")
    p.add_argument("--seed", type=int, default=c.seed)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of ours."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"nncompress: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nncompress", description="Compress trained networks: prune, "
                                     "fine-tune, measure.")
    parser.add_argument("--version", action="version", version=f"nncompress {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    # the same flags after the sub-command; SUPPRESS keeps them from resetting the ones given before it
    common = _Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log what the library does")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    p = add("train", help="train a built-in model")
    p.add_argument("--model", required=True, choices=["lenet300", "lenet5", "mlp"])
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_train)

    p = add("evaluate", help="test accuracy and weight counts of a checkpoint")
    p.add_argument("checkpoint")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    d = SensitivityConfig()
    p = add("sensitivity", help="prune each layer alone over a range of q; CSV + plot")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="folder for sensitivity.csv and sensitivity.png")
    _add_q_range(p, d)
    p.add_argument("--max-drop", type=float, default=d.max_drop,
                   help="accuracy drop (points) a layer may take alone; sets the per-layer q scale")
    _add_common(p)
    p.set_defaults(func=cmd_sensitivity)

    p = add("prune", help="iterative std-threshold pruning with fine-tuning")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="pruned checkpoint")
    p.add_argument("--log-dir", default=None, help="step log, histograms, summary (default: OUT_prune/)")
    p.add_argument("--storage", choices=["auto", "dense", "csr"], default="auto",
                   help="auto: CSR for each weight where it is smaller than dense")
    _add_prune_flags(p)
    _add_common(p)
    p.set_defaults(func=cmd_prune)

    p = add("compress", help="prune -> share weights -> fine-tune -> code into one small file")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="trained checkpoint (leave out to train the recipe's model first)")
    p.add_argument("--recipe", default=None, help="YAML or TOML file describing the whole run; flags override it")
    p.add_argument("--out", default=None, help="the compressed file (.nnc; default RUN_DIR/model.nnc)")
    p.add_argument("--run-dir", default=None,
                   help="folder for the run's logs, figures and saved state (default: a new runs/TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --run-dir")
    p.add_argument("--report", default=None, help="also write this HTML report (and its Markdown twin)")
    for flag, key, kind, text in COMPRESS_FLAGS:
        p.add_argument(flag, default=None, type=kind if kind in (int, float) else str, help=f"{text} [{key}]")
    for flag, key, text in COMPRESS_SWITCHES:
        p.add_argument(flag, action="store_true", help=f"{text} [{key}: false]")
    p.add_argument("--sensitivity", default=None, help="sensitivity.csv (or its folder): per-layer q from it")
    p.add_argument("--max-drop", type=float, default=None, help="drop (points) that sets each layer's q scale")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_compress)

    p = add("report", help="HTML page (and Markdown twin) of a compress run folder")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="the HTML file; the Markdown twin goes beside it")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_report)

    p = add("inspect", help="per-layer table of a compressed file, from the file alone")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_inspect)

    p = add("decompress", help="a compressed file -> a plain state dict")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_decompress)

    p = add("demo", help="train, analyse and prune an MLP on the embedded digits data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def _check_output(path: Optional[str], folder: bool = False) -> None:
    """Refuse an unusable --out before any work is done, not after hours of it."""
    if path is None:
        return
    target = Path(path)
    if not folder and target.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name")
    if folder and target.exists() and not target.is_dir():
        raise ConfigError(f"--out {path} is a file; give a folder")
    parent = target if folder else target.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"cannot write {path}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK):
                raise ConfigError(f"cannot write {path}: {p} is not writable")
            break


def _resume_hint(args: argparse.Namespace) -> str:
    run_dir = getattr(args, "_run_dir", None)
    if not run_dir:
        return ""
    report = f" --report {args.report}" if getattr(args, "report", None) else ""
    return f"; continue with: nncompress compress --resume --run-dir {run_dir}{report}"


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM ends a run like Ctrl-C: files stay whole and the run can be resumed."""
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return _main(argv)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    bars = Bars(enabled=not args.quiet and not getattr(args, "json", False))
    try:
        if args.command != "compress":  # compress checks its --out once it knows it (--resume reads it)
            _check_output(getattr(args, "out", None), folder=args.command in ("sensitivity", "demo"))
        args.func(args, bars)
    except NNCompressError as exc:
        bars.close()
        print(f"nncompress: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `nncompress inspect f.nnc | head`: the reader left, nothing to say
        sys.stderr = open(os.devnull, "w")
        return 0
    except OSError as exc:
        bars.close()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"nncompress: error: {exc.strerror or exc}{where}{_resume_hint(args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bars.close()
        print(f"nncompress: interrupted; no output file was left half-written{_resume_hint(args)}", file=sys.stderr)
        return 130
    bars.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
