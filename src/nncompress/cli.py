"""The ``nncompress`` command line: arguments -> configs -> pipeline calls.

Errors of ours become one line on stderr and exit status 1; progress bars go
to stderr so ``--json`` output on stdout stays machine-readable.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
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
                       unit="epoch" if event.task in ("train", "fine-tune") else "step")
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
    return PruneConfig(q0=args.q0, q_step=args.q_step, q_max=args.q_max, tolerance=args.tolerance,
                       epochs_per_step=args.epochs_per_step,
                       recover_epochs=args.recover_epochs, refine_steps=args.refine_steps, control=not args.no_control,
                       min_layer_share=args.min_layer_share, final_epochs=args.final_epochs, lr=args.lr,
                       groups=args.groups, layer_scale=scale, remove_dead=not args.keep_dead,
                       adjust_dropout=not args.keep_dropout, seed=args.seed)


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
    for r in t["layers"]:
        if r["codec"] == "shared":
            bits = (f"{r['weight_bits_fixed']:>7}{r['weight_bits_huffman']:>7.2f}{r['index_bits_fixed']:>7}"
                    f"{r['index_bits_huffman']:>7.2f}")
        else:
            bits = f"{'raw':>7}{'':>21}"
        lines.append(f"{r['tensor']:<12}{r['weights']:>9,}{r['kept'] * 100:>7.2f}%{bits}{r['bytes']:>9,}"
                     f"{r['ratio']:>7.1f}x")
    lines.append(f"whole file {t['file_bytes']:,} bytes (headers included) vs {t['dense_bytes']:,} dense fp32 "
                 f"bytes: {t['ratio']:.1f}x smaller")
    return lines


def _share_config(args: argparse.Namespace) -> ShareConfig:
    rel: Any = args.rel_bits if args.rel_bits == "auto" else _int_option("--rel-bits", args.rel_bits)
    return ShareConfig(fc_bits=args.fc_bits, conv_bits=args.conv_bits, init=args.init, epochs=args.share_epochs,
                       centroid_lr=args.centroid_lr, rel_bits=rel, raw_dtype=args.raw_dtype, seed=args.seed)


def _int_option(flag: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag} takes 'auto' or a whole number, got {value!r}") from None


def cmd_compress(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_compress
    res = run_compress(args.checkpoint, args.data, args.out, None if args.skip_prune else _prune_config(args),
                       _share_config(args), model_name=args.model, progress=progress)
    skipped = "; pruning skipped (input already pruned)" if res["pruning_skipped"] else ""
    _emit(args, res, _file_lines(res) + [
        f"test accuracy of the decoded file {_pct(res['test_accuracy'])} (input {_pct(res['dense_test_accuracy'])}, "
        f"{-res['test_drop_points']:+.2f} pt){skipped}",
        f"wrote {res['file']}"])


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


def cmd_demo(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.data import load_data
    from nncompress.models import build_model
    from nncompress.pipeline import metrics, run_compress, run_prune, run_sensitivity, save_trained, train_model
    out = Path(args.out)
    splits = load_data("digits")
    model = build_model("mlp", splits.input_shape, splits.num_classes)
    info = train_model(model, splits, TrainConfig(epochs=40, lr=0.05, batch_size=64, seed=args.seed), progress)
    save_trained(model, splits, out / "base.pt", {"test_accuracy": metrics(model, splits)["accuracy"]})
    sens = run_sensitivity(out / "base.pt", "digits", out / "sens", SensitivityConfig(), progress=progress,
                           splits=splits)
    cfg = PruneConfig(epochs_per_step=4, final_epochs=20, lr=0.02, batch_size=64, tolerance=0.8,
                      layer_scale=sens["layer_scale"], seed=args.seed)
    run = run_prune(out / "base.pt", "digits", out / "pruned.pt", cfg, splits=splits, progress=progress)
    packed = run_compress(out / "pruned.pt", "digits", out / "model.nnc", None,
                          ShareConfig(batch_size=64, seed=args.seed), splits=splits, progress=progress)
    print("\n".join([f"demo: MLP on scikit-learn digits ({splits.sizes()})",
                     f"dense: trained in {info['train_seconds']:.1f} s", "", "pruning:",
                     *_prune_lines(run.summary), "", "weight sharing + Huffman coding of the pruned model:",
                     *_file_lines(packed),
                     f"test accuracy of the decoded file {_pct(packed['test_accuracy'])}", f"outputs in {out}"]))


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    if data:
        p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--model", default=None, help="model name for checkpoints that record no architecture")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def _add_q_range(p: argparse.ArgumentParser, defaults: PruneConfig | SensitivityConfig) -> None:
    p.add_argument("--q0", type=float, default=defaults.q0, help="first q (threshold = q x std of the layer)")
    p.add_argument("--q-step", type=float, default=defaults.q_step, help="how much q rises per step")
    p.add_argument("--q-max", type=float, default=defaults.q_max, help="largest q tried")


def _add_prune_flags(p: argparse.ArgumentParser) -> None:
    c = PruneConfig()
    p.add_argument("--groups", default=c.groups,
                   help=f"pruning stages: {', '.join(GROUP_PRESETS)}, or layers like fc1+fc2,fc3")
    p.add_argument("--tolerance", type=float, default=c.tolerance,
                   help="largest validation accuracy drop (points) a step may leave")
    _add_q_range(p, c)
    p.add_argument("--epochs-per-step", type=int, default=c.epochs_per_step)
    p.add_argument("--recover-epochs", type=int, default=c.recover_epochs,
                   help="extra fine-tuning a step that misses the tolerance gets before the loop stops")
    p.add_argument("--refine-steps", type=int, default=c.refine_steps,
                   help="bisections of q between the last good and the failed step")
    p.add_argument("--no-control", action="store_true",
                   help="measure drops from the dense model itself, not from the dense model after the "
                        "same fine-tuning without pruning")
    p.add_argument("--min-layer-share", type=float, default=c.min_layer_share,
                   help="leave layers holding less than this fraction of the weights unpruned (e.g. 0.01)")
    p.add_argument("--final-epochs", type=int, default=c.final_epochs)
    p.add_argument("--lr", type=float, default=c.lr, help="fine-tuning learning rate")
    p.add_argument("--sensitivity", default=None, help="sensitivity.csv (or its folder): per-layer q from it")
    p.add_argument("--max-drop", type=float, default=SensitivityConfig().max_drop,
                   help="with --sensitivity: drop (points) that sets each layer's q scale")
    p.add_argument("--keep-dead", action="store_true", help="do not remove dead neurons")
    p.add_argument("--keep-dropout", action="store_true", help="do not adjust dropout rates")
    p.add_argument("--seed", type=int, default=c.seed)


def _add_share_flags(p: argparse.ArgumentParser) -> None:
    c = ShareConfig()
    p.add_argument("--fc-bits", type=int, default=c.fc_bits, help="codebook bits of Linear layers")
    p.add_argument("--conv-bits", type=int, default=c.conv_bits, help="codebook bits of convolutions")
    p.add_argument("--init", choices=["linear", "density", "random"], default=c.init,
                   help="k-means initialisation")
    p.add_argument("--share-epochs", type=int, default=c.epochs, help="centroid fine-tuning epochs")
    p.add_argument("--centroid-lr", type=float, default=c.centroid_lr,
                   help="step size on the sum of each centroid's member gradients")
    p.add_argument("--raw-dtype", choices=["float32", "float16"], default=c.raw_dtype,
                   help="storage of biases and other unshared tensors")
    p.add_argument("--rel-bits", default=str(c.rel_bits),
                   help="relative-index width, or auto (per layer, whatever makes the file smallest)")


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
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="the compressed file (.nnc)")
    p.add_argument("--skip-prune", action="store_true",
                   help="share and code only (automatic when the checkpoint is already pruned)")
    _add_prune_flags(p)
    _add_share_flags(p)
    _add_common(p)
    p.set_defaults(func=cmd_compress)

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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    bars = Bars(enabled=not args.quiet and not getattr(args, "json", False))
    try:
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
        print(f"nncompress: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bars.close()
        print("nncompress: interrupted; no output file was left half-written", file=sys.stderr)
        return 130
    bars.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
