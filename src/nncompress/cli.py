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
import stat
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from nncompress import __version__
from nncompress.recipe import OBJECTIVES
from nncompress.config import GROUP_PRESETS, PruneConfig, SensitivityConfig, TrainConfig
from nncompress.errors import BadMagicError, ConfigError, NNCompressError, OutputError, PathError, ReportError
from nncompress.jsonfile import load_json_file
from nncompress.paths import check_input_file, check_output_file, check_output_folder, kind_of
from nncompress.progress import ProgressBars, ProgressFn
from nncompress.report.text import file_table_lines

DATA_HELP = (
    "fashion-mnist, digits, a folder with the four MNIST-format IDX files, or package.module:function "
    "returning (train, val[, test]) loaders"
)
MODEL_HELP = (
    "a built-in model (lenet300, lenet5, mlp) or your own: package.module:factory or path/to/file.py:factory "
    "(a class or function returning an nn.Module; naming it also trusts a file that records it)"
)
NORMALIZE_HELP = (
    "input transform of image data: standardize (train-split mean/std, the default), unit ([0, 1]), "
    "none (raw pixel values) or MEAN,STD (applied to [0, 1] inputs); a .nnc made with another records "
    "it and evaluate reuses it"
)


def _model_kwargs(text: Optional[str]) -> Optional[dict[str, Any]]:
    """--model-kwargs: a JSON object of the factory's keyword arguments."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--model-kwargs must be a JSON object like '{{\"width\": 16}}': {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object like '{{\"width\": 16}}', got {text!r}")
    return value


def _splits(args: argparse.Namespace, recorded_meta: Optional[dict[str, Any]] = None) -> Any:
    """The data of --data with --normalize, or, when that is not given, the transform the model file recorded."""
    from nncompress.data import load_data
    from nncompress.data.datasets import recorded_normalize

    normalize = getattr(args, "normalize", None)
    if normalize is None and recorded_meta:
        normalize = recorded_normalize(recorded_meta.get("transform"))
    return load_data(args.data, normalize=normalize)


def _recorded(path: Optional[str]) -> tuple[dict[str, Any], Optional[str]]:
    """(meta, model) a checkpoint or .nnc records, its model being a factory's import path or a built-in's
    name; ({}, None) when it records none or cannot be read (the real load says why)."""
    from nncompress.models.factory import is_factory_record
    from nncompress.pipeline import read_model_header

    try:
        file = read_model_header(path) if path else None
    except (NNCompressError, OSError):
        file = None
    if file is None:
        return {}, None
    arch = file.arch
    if is_factory_record(arch):
        return file.meta, str(arch["factory"])
    name = arch.get("name") if isinstance(arch, dict) else None
    return file.meta, name if isinstance(name, str) else None


def _same_model(recorded: str, named: str) -> bool:
    """Whether --model names the model a file records; a file path may be written from another folder."""
    from nncompress.imports import names_file

    if recorded == named:
        return True
    if not (":" in recorded and ":" in named and names_file(recorded) and names_file(named)):
        return False
    (rfile, _, rattr), (nfile, _, nattr) = recorded.rpartition(":"), named.rpartition(":")
    return rattr == nattr and Path(rfile).name == Path(nfile).name


def _check_model(path: Optional[str], recorded: Optional[str], model: Optional[str], flag: str = "--model") -> None:
    """Refuse a --model other than the one the file at ``path`` records: weights made for one architecture
    are not loaded into another that merely has the same tensor shapes."""
    if recorded is not None and model is not None and not _same_model(recorded, model):
        raise ConfigError(
            f"{path} records the model {recorded!r}, but {flag} names {model!r}: pass {flag} "
            f"{recorded}, the model its weights were made for"
        )


def _remove_if_empty(made: Optional[Path]) -> None:
    """Remove a folder this command made (``_first_missing``) if nothing was written into it."""
    from nncompress.distributed import is_main

    if made is not None and is_main() and made.is_dir() and not any(p.is_file() for p in made.rglob("*")):
        shutil.rmtree(made, ignore_errors=True)


def _emit(args: argparse.Namespace, payload: dict[str, Any], lines: Sequence[str]) -> None:
    from nncompress.distributed import is_main

    if not is_main():  # under torchrun rank 0 speaks for the run
        return
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str))
    else:
        print("\n".join(lines))


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def cmd_train(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import check_fits, metrics, model_for_data, save_trained, train_model

    if args.epochs < 1:  # TrainConfig allows 0 (fine-tuning may skip), but train would save an untrained model
        raise ConfigError(f"--epochs must be at least 1 to train a model, got {args.epochs}")
    _refuse_clobber([(f"--out {args.out}", "--out", Path(args.out))], _data_inputs(args.data))
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    kwargs = _model_kwargs(args.model_kwargs)
    splits = _splits(args)
    if not splits.has_labels:
        raise ConfigError(
            f"{splits.name} carries no labels: train needs labelled data (compress a trained model "
            "on label-free data instead)"
        )
    from nncompress.train import set_seed

    set_seed(args.seed)  # the initial weights too
    model = model_for_data(args.model, splits, kwargs)
    check_fits(model, splits, args.model)
    info = train_model(model, splits, cfg, progress)
    test = metrics(model, splits, "test")
    save_trained(
        model,
        splits,
        args.out,
        {"val_accuracy": info["val"]["accuracy"], "test_accuracy": test["accuracy"], "train": cfg.to_dict()},
    )
    _emit(
        args,
        {
            "out": args.out,
            "val_accuracy": info["val"]["accuracy"],
            "test_accuracy": test["accuracy"],
            "params": test["params"],
            "seconds": info["train_seconds"],
        },
        [
            f"trained {args.model} on {splits.name} for {cfg.epochs} epochs in {info['train_seconds']:.1f} s",
            f"validation accuracy {_pct(info['val']['accuracy'])}, test accuracy {_pct(test['accuracy'])}",
            f"wrote {args.out}",
        ],
    )


def cmd_evaluate(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.data.datasets import describe_transform
    from nncompress.pipeline import load_for_data, metrics

    kwargs = _model_kwargs(args.model_kwargs)
    meta, recorded = _recorded(args.checkpoint)
    _check_model(args.checkpoint, recorded, args.model)
    splits = _splits(args, meta)
    objective = None
    if args.reference:
        from nncompress.train.objective import against_reference

        _check_model(args.reference, _recorded(args.reference)[1], args.model)
        reference, _ = load_for_data(args.reference, splits, args.model, kwargs)
        objective = against_reference(args.objective, reference, splits)
    elif not splits.has_labels:
        raise ConfigError(
            f"{splits.name} carries no labels: give the dense model the file was compressed from, "
            "--reference DENSE.pt, to score it against that model's outputs"
        )
    model, _ = load_for_data(args.checkpoint, splits, args.model, kwargs)
    m = metrics(model, splits, "test", objective)
    if args.reference:
        m["reference"] = str(args.reference)
    m["file_bytes"] = Path(args.checkpoint).stat().st_size
    m["data"] = splits.name
    m["transform"] = splits.transform
    against = f" against {args.reference}" if args.reference else ""
    shown = _pct(m["score"]) if m["metric"] in ("accuracy", "agreement") else f"{m['score']:.4f}"
    _emit(
        args,
        m,
        [
            f"{args.checkpoint} on {splits.name} test split ({m['examples']} examples){against}: "
            f"{m['metric']} {shown}, loss {m['loss']:.4f}",
            f"parameters {m['params']:,}, nonzero {m['nonzero']:,} "
            f"({m['params'] / max(1, m['nonzero']):.1f}x fewer), file {m['file_bytes']:,} bytes",
            f"inputs: {describe_transform(splits.transform)}",
        ],
    )


def cmd_sensitivity(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_sensitivity, sensitivity_files

    _refuse_clobber(
        [(f"--out {args.out} (its {path.name})", "--out", path) for path in sensitivity_files(args.out).values()],
        [(f"the checkpoint {args.checkpoint}", Path(args.checkpoint)), *_data_inputs(args.data)],
    )
    try:
        cfg = SensitivityConfig(q0=args.q0, q_step=args.q_step, q_max=args.q_max, max_drop=args.max_drop)
    except ConfigError as exc:
        raise _flag_named(
            exc, [("--q0", "q0"), ("--q-step", "q_step"), ("--q-max", "q_max"), ("--max-drop", "max_drop")]
        ) from None
    meta, recorded = _recorded(args.checkpoint)
    _check_model(args.checkpoint, recorded, args.model)
    res = run_sensitivity(
        args.checkpoint,
        args.data,
        args.out,
        cfg,
        model_name=args.model,
        progress=progress,
        splits=_splits(args, meta),
        model_kwargs=_model_kwargs(args.model_kwargs),
        objective=args.objective,
    )
    lines = [
        f"dense validation {res.get('metric', 'accuracy')} {_pct(res['dense_val_accuracy'])}",
        "per-layer q scale (prune --sensitivity uses it): "
        + ", ".join(f"{k} {v:g}" for k, v in res["layer_scale"].items()),
        "wrote " + " and ".join(res["files"].values()),
    ]
    _emit(args, res, lines)


def _prune_config(args: argparse.Namespace) -> PruneConfig:
    scale: dict[str, float] = {}
    if args.max_drop is not None:
        SensitivityConfig(max_drop=args.max_drop)  # a bad value is named first, whatever else is missing
        if not args.sensitivity:
            raise ConfigError(
                "--max-drop sets how a sensitivity scan becomes per-layer q: give --sensitivity CSV "
                "too, or drop --max-drop"
            )
    if args.sensitivity:
        from nncompress.pruning.sensitivity import from_csv, layer_scales

        base, rows = from_csv(args.sensitivity)
        max_drop = args.max_drop if args.max_drop is not None else SensitivityConfig().max_drop
        scale = layer_scales(rows, base, max_drop)
    flags, switches = _prune_flags()
    values = {name: getattr(args, _dest(flag)) for flag, name, _, _ in flags}
    if values["target_steps"] is not None and values["target_density"] is None:
        raise ConfigError("--target-steps sets how many steps reach --target-density: give --target-density too")
    values = {k: v for k, v in values.items() if v is not None or k == "target_density"}
    values.update({name: not getattr(args, _dest(flag)) for flag, name, _ in switches})
    try:
        return PruneConfig(**values, layer_scale=scale, seed=args.seed)
    except ConfigError as exc:  # name the flag the user typed, not the config field it sets
        raise _flag_named(exc, [(flag, name) for flag, name, _, _ in flags]) from None


def _prune_lines(s: dict[str, Any]) -> list[str]:
    from nncompress.data.datasets import describe_transform

    lines = [f"{'layer':<8}{'weights':>10}{'kept':>10}{'kept %':>9}{'dense B':>11}{'CSR B':>11}  CSR smaller?"]
    for r in s["layers"]:
        lines.append(
            f"{r['layer']:<8}{r['weights']:>10,}{r['nonzero']:>10,}{r['kept'] * 100:>8.2f}%"
            f"{r['dense_bytes']:>11,}{r['csr_bytes']:>11,}  {'yes' if r['csr_smaller'] else 'no'}"
        )
    lines.append(f"{'total':<8}{s['weights']:>10,}{s['kept_weights']:>10,}{s['kept_fraction'] * 100:>8.2f}%")
    lines += [
        f"{s['compression']:.1f}x fewer nonzero weights; test {s.get('metric', 'accuracy')} "
        f"{_pct(s['dense']['test_accuracy'])} -> {_pct(s['pruned']['test_accuracy'])} "
        f"({-s['test_drop_points']:+.2f} pt); {s['seconds']:.0f} s",
        f"removed neurons: {s['removed_neurons'] or 'none'}",
        f"inputs: {describe_transform(s.get('transform'))}",
        f"fine-tuned at {s['finetune']['note']}",
        f"wrote {s['checkpoint']} ({s['file_bytes']:,} bytes; the input checkpoint is {s['input_file_bytes']:,} bytes)",
    ]
    return lines


def cmd_prune(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import prune_files, run_prune

    cfg = _prune_config(args)
    log_flag, log_given = ("--log-dir", args.log_dir) if args.log_dir else ("--out", args.out)
    out, *logs = prune_files(args.out, args.log_dir).values()
    for path in logs:
        check_output_file(path, f"{log_flag} {log_given} (its {path})")
    _refuse_clobber(
        [
            (f"--out {args.out}", "--out", out),
            *[(f"{log_flag} {log_given} (its {path})", log_flag, path) for path in logs],
        ],
        [
            (f"the checkpoint {args.checkpoint}", Path(args.checkpoint)),
            *_sensitivity_input(args.sensitivity),
            *_data_inputs(args.data),
        ],
    )
    kwargs = _model_kwargs(args.model_kwargs)
    meta, recorded = _recorded(args.checkpoint)
    _check_model(args.checkpoint, recorded, args.model)
    made = _first_missing(logs[0].parent.absolute())
    try:
        run = run_prune(
            args.checkpoint,
            args.data,
            args.out,
            cfg,
            log_dir=args.log_dir,
            storage=args.storage,
            model_name=args.model,
            progress=progress,
            splits=_splits(args, meta),
            model_kwargs=kwargs,
            objective=args.objective,
        )
    except ConfigError as exc:  # e.g. --groups naming a layer the model lacks, found once it is loaded
        _remove_if_empty(made)
        raise _flag_named(
            exc, [(flag, name) for flag, name, _, _ in _prune_flags()[0]] + _layer_flags(args, PRUNE_LAYER_MESSAGES)
        ) from None
    except BaseException:
        _remove_if_empty(made)  # an empty log folder is no record of anything
        raise
    _emit(
        args,
        {**run.summary, "files": run.files},
        _prune_lines(run.summary)
        + [
            f"step log, {'histograms, ' if 'hist_after' in run.files else ''}summary in "
            f"{Path(run.files['steps']).parent}"
        ],
    )


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
    (
        "--decision",
        "prune.decision",
        str,
        "pooled (the drop estimated from every reading of the run, paired with "
        "the dense model) or reading (each step's own reading)",
    ),
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
    (
        "--probe-kl",
        "prune.probe_kl",
        float,
        "largest output shift (mean KL, nats) one fine-tuning step at --lr "
        "may cause the dense model before --fallback-lr is used",
    ),
    ("--fallback-lr", "prune.fallback_lr", float, "fine-tuning rate when the probe finds --lr too rough"),
    ("--fallback-distill", "prune.fallback_distill", float, "distillation weight that goes with --fallback-lr"),
    (
        "--target-density",
        "prune.target_density",
        float,
        "prune to this fraction of kept weights in --target-steps steps instead of the tolerance loop",
    ),
    ("--target-steps", "prune.target_steps", int, "steps to reach --target-density"),
    (
        "--select",
        "prune.select",
        str,
        "layers to prune: kinds (fc, conv, embedding), class names, all, or globs on module names, comma-separated",
    ),
    ("--exclude", "prune.exclude", str, "layers left out of --select (same forms)"),
    ("--fc-bits", "share.fc_bits", int, "codebook bits of Linear layers"),
    ("--conv-bits", "share.conv_bits", int, "codebook bits of convolutions"),
    ("--embedding-bits", "share.embedding_bits", int, "codebook bits of embedding tables"),
    ("--share-select", "share.select", str, "layers to weight-share (same forms as --select); the rest is stored raw"),
    ("--share-exclude", "share.exclude", str, "layers left out of --share-select"),
    (
        "--min-members",
        "share.min_members",
        int,
        "a small layer's codebook keeps at most one centroid per this many surviving weights",
    ),
    (
        "--init",
        "share.init",
        str,
        "k-means init of Linear/conv layers: linear, density, random or auto (measured per layer)",
    ),
    (
        "--share-tolerance",
        "share.tolerance",
        float,
        "largest validation drop (points) sharing may add: widths "
        "grow from --fc-bits/--conv-bits/--embedding-bits until it fits",
    ),
    ("--max-bits", "share.max_bits", int, "widest codebook the --share-tolerance search may give a layer"),
    (
        "--quantize",
        "share.quantize",
        str,
        "layers (same forms as --select) stored as uniform int8/int16 with per-channel scales instead of shared",
    ),
    ("--quantize-dtype", "share.quantize_dtype", str, "int8 or int16, for --quantize"),
    ("--share-epochs", "share.epochs", int, "centroid fine-tuning epochs"),
    ("--centroid-lr", "share.centroid_lr", float, "step size on the sum of each centroid's member gradients"),
    ("--raw-dtype", "coding.raw_dtype", str, "unshared tensors: auto (float16 from 4096 values), float32 or float16"),
    (
        "--codebook-dtype",
        "coding.codebook_dtype",
        str,
        "codebook storage: auto (float16 where centroids fit it), float32 or float16",
    ),
    ("--rel-bits", "coding.rel_bits", "auto|int", "relative-index width, or auto (whatever makes the file smallest)"),
    ("--seed", "seed", int, "fixes every source of randomness"),
    ("--data", "data", str, DATA_HELP),
    ("--normalize", "normalize", str, NORMALIZE_HELP),
    ("--model", "model", str, MODEL_HELP + "; trained from scratch when no checkpoint is given"),
    ("--model-kwargs", "model_kwargs", "json", "JSON object of the factory's keyword arguments"),
    (
        "--objective",
        "objective",
        str,
        "what the run keeps: auto (accuracy with labels; without, distillation from "
        "the dense model: kl for logits, cosine otherwise), classification, kl, "
        "cosine or mse",
    ),
]
COMPRESS_SWITCHES: list[tuple[str, str, str]] = [
    (
        "--no-control",
        "prune.control",
        "measure drops from the dense model itself, not from the dense model "
        "after the same fine-tuning without pruning",
    ),
    ("--no-probe", "prune.probe", "skip the probe: always fine-tune at --lr with --distill"),
    ("--keep-dead", "prune.remove_dead", "do not remove dead neurons"),
    ("--keep-dropout", "prune.adjust_dropout", "do not adjust dropout rates"),
    ("--skip-prune", "prune.enabled", "share and code only (automatic when the checkpoint is already pruned)"),
]


# How layer-selection errors start (the library's words) -> the flag that set the selection.
PRUNE_LAYER_MESSAGES = [("--exclude", "prune layers exclude"), ("--select", "prune layers")]
SHARE_LAYER_MESSAGES = [
    ("--share-exclude", "share.select exclude"),
    ("--share-select", "share.select"),
    ("--share-exclude", "share layers exclude"),
    ("--share-select", "share layers"),
]


def _layer_flags(args: argparse.Namespace, table: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(flag, message head) pairs for _flag_named, of the selection flags this command line set."""
    return [(flag, head) for flag, head in table if getattr(args, _dest(flag), None) is not None]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _flag_named(exc: ConfigError, pairs: Sequence[tuple[str, str]]) -> ConfigError:
    """The same error naming the flag the user typed instead of the setting it sets: ``pairs`` are
    (flag, setting) for the flags given; an error whose ``field`` is one of those settings is said
    with the flag in the setting's place (and any recipe source before it dropped). Any other error
    is returned as it is."""
    flag = next((flag for flag, name in pairs if name == exc.field), None)
    if flag is None or exc.field is None:
        return exc
    rest = str(exc).split(exc.field, 1)[1]  # the message names its field first
    return ConfigError(flag + rest, field=flag, key=exc.key, expected=exc.expected, got=exc.got)


def _given_flags(args: argparse.Namespace, table: Sequence[tuple[Any, ...]]) -> list[tuple[str, str]]:
    """(flag, setting) of the table's flags this command line set."""
    return [(row[0], row[1]) for row in table if getattr(args, _dest(row[0]), None) not in (None, False)]


def _compress_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys the command line sets, typed as the recipe expects them."""
    out: dict[str, Any] = {}
    for flag, key, kind, _ in COMPRESS_FLAGS:
        value = getattr(args, _dest(flag))
        if value is not None:
            if kind == "json":
                out[key] = _model_kwargs(value)
            else:
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
            raise ConfigError(
                f"--resume continues the run in {args.run_dir} with its own settings "
                f"({args.run_dir}/run.json); give only --run-dir (and --quiet, --json, --report)"
            )
        run = RunDir(args.run_dir, resume=True)
        saved = run.read_run()
        if isinstance(saved.get("out"), str):
            _check_output(saved["out"], flag=f"the run's output (--out in {run.path}/run.json)")
        _refuse_clobber(_report_outputs("--report", args.report), _run_owned(run.path))
        return (
            parse_recipe(saved.get("recipe") or {}, f"{run.path}/run.json"),
            run,
            saved.get("checkpoint"),
            saved.get("out"),
        )
    recipe = load_recipe(args.recipe) if args.recipe else parse_recipe({}, "<defaults>")
    try:
        recipe = apply_overrides(recipe, overrides)
    except ConfigError as exc:  # name the flag the user typed, not the recipe key it sets
        raise _flag_named(
            exc, [(flag, key) for flag, key, _, _ in COMPRESS_FLAGS] + [("--max-drop", "sensitivity.max_drop")]
        ) from None
    if args.skip_prune and any(k.startswith("prune.") and k != "prune.enabled" for k in overrides):
        raise ConfigError("--skip-prune turns pruning off: drop the pruning options, or --skip-prune")
    if args.max_drop is not None and recipe.sensitivity is None and not args.sensitivity:
        raise ConfigError(
            "--max-drop sets how a sensitivity scan becomes per-layer q: give --sensitivity CSV, "
            "or a recipe with a sensitivity section"
        )
    if args.target_steps is not None and recipe.prune is not None and recipe.prune.target_density is None:
        raise ConfigError(
            "--target-steps sets how many steps reach --target-density: give --target-density too "
            "(or prune.target_density in the recipe)"
        )
    _check_model(
        args.checkpoint,
        _recorded(args.checkpoint)[1] if recipe.model else None,
        recipe.model,
        "--model" if args.model else "the recipe's model:",
    )
    if not args.checkpoint and recipe.train.epochs < 1:  # as `train --epochs 0`: an untrained model
        raise ConfigError(
            f"train.epochs must be at least 1 when compress trains the model itself (no checkpoint "
            f"given), got {recipe.train.epochs}"
        )
    _check_output(args.out)
    inputs = [
        *([(f"the checkpoint {args.checkpoint}", Path(args.checkpoint))] if args.checkpoint else []),
        *([(f"the recipe {args.recipe}", Path(args.recipe))] if args.recipe else []),
        *_sensitivity_input(args.sensitivity),
        *_data_inputs(recipe.data),
        *(_run_files(Path(args.run_dir)) if args.run_dir else []),
    ]  # RunDir refuses a folder in use
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.nnc" if args.run_dir else None
    what = f"--out {args.out}" if args.out else f"the run's model.nnc ({out})"
    _refuse_clobber([*([(what, "--out", out)] if out else []), *_report_outputs("--report", args.report)], inputs)
    if args.run_dir:
        path = Path(args.run_dir).absolute()
        made = _first_missing(path)
    else:
        made = _first_missing(Path("runs").absolute())
        path = new_run_dir().absolute()
        made = made or path
    args._made_run_dir = (path, made)  # removed again if the run fails before it starts
    return recipe, RunDir(args.run_dir or path), args.checkpoint, args.out


def _first_missing(path: Path) -> Optional[Path]:
    """The outermost folder of ``path`` that does not exist yet: what making ``path`` creates."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _drop_unstarted_run(args: argparse.Namespace) -> None:
    """A run that failed before it wrote run.json has nothing to resume: remove the folders it made."""
    from nncompress.distributed import is_main

    run_dir = getattr(args, "_run_dir", None)
    if run_dir is None or (Path(run_dir) / "run.json").exists() or not is_main():
        return
    args._run_dir = None  # no resume hint for a run that never started
    path, top = getattr(args, "_made_run_dir", (None, None))
    if path is None or top is None:  # the folder was there before this command: leave it
        return
    shutil.rmtree(path, ignore_errors=True)
    for parent in path.parents:  # folders made on the way to it, if nothing else went in since
        if not parent.is_relative_to(top):
            break
        try:
            parent.rmdir()
        except OSError:
            break


def cmd_compress(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_recipe

    if args.report:
        _check_output(args.report, flag="--report")
        _check_report_name(args.report)
    _check_output(args.out)
    if args.run_dir:
        _check_output(args.run_dir, folder=True, flag="--run-dir")
    else:
        _check_output("runs", folder=True, flag="the default run folder (give --run-dir)")
    recipe, run, checkpoint, out = _resolve_compress(args)
    try:
        args._run_dir = run.path  # for the interruption message
        splits = _compress_splits(recipe)
        res = run_recipe(recipe, run, checkpoint=checkpoint, out=out, progress=progress, splits=splits)
    except ConfigError as exc:  # a flag's value found wrong once the model is loaded (--groups fc9)
        _drop_unstarted_run(args)
        raise _flag_named(
            exc,
            _given_flags(args, COMPRESS_FLAGS)
            + _layer_flags(args, PRUNE_LAYER_MESSAGES)
            + _layer_flags(args, SHARE_LAYER_MESSAGES),
        ) from None
    except BaseException:
        _drop_unstarted_run(args)
        raise
    args._run_dir = None  # finished: nothing to resume from here on
    from nncompress.data.datasets import describe_transform

    lines = [f"inputs: {describe_transform(res.get('transform'))}", f"run folder {run.path}"]
    from nncompress.distributed import is_main

    if args.report and is_main():
        from nncompress.report.page import write_report

        html, md = write_report(run.path, args.report)
        res["report"] = {"html": str(html), "markdown": str(md)}
        lines.append(f"report {html} (and {md})")
    skipped = "; pruning skipped (input already pruned)" if res["pruning_skipped"] else ""
    if res.get("finetune"):
        lines.insert(0, f"pruning fine-tuned at {res['finetune']['note']}")
    _emit(
        args,
        {**res, "run_dir": str(run.path)},
        file_table_lines(res)
        + [
            f"test {res['metric']} of the decoded file {_pct(res['test_score'])} "
            f"(input {_pct(res['dense_test_score'])}, "
            f"{-res['test_drop_points']:+.2f} pt){skipped}",
            *[f"warning: {w}" for w in res.get("warnings") or []],
            f"wrote {res['file']}",
            *lines,
        ],
    )


def _compress_splits(recipe: Any) -> Any:
    """The run's data, loaded before the run starts (None: no data named; run_recipe says so)."""
    if recipe.data is None:
        return None
    from nncompress.data import load_data

    return load_data(recipe.data, normalize=recipe.normalize)


def _check_report_name(path: str) -> None:
    """Only .html/.htm: the Markdown twin and the figure folder are named after it, and a rerun
    may replace an earlier report only because its name says it is one."""
    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise ConfigError(
            f"{path}: give the HTML page's name ending in .html (e.g. report.html); the Markdown twin goes beside it"
        )
    from nncompress.report.page import FIGURES

    files = Path(path).with_name(f"{Path(path).stem}_files")
    foreign = [files / n for n in FIGURES if (files / n).exists() and not _report_figure(files / n)]
    if foreign:
        raise ConfigError(
            f"{path}: its figure folder {files} already holds {foreign[0].name}, and no report "
            f"{path} owns it; pick another report name"
        )


def cmd_report(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.report.page import write_report

    _check_report_name(args.out)
    if Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        raise ReportError(
            f"{args.run_dir} is a file, not a run folder: give the folder that `nncompress compress --run-dir` wrote"
        )
    _refuse_clobber(_report_outputs("--out", args.out), _run_owned(Path(args.run_dir)))
    html, md = write_report(args.run_dir, args.out)
    _emit(args, {"html": str(html), "markdown": str(md)}, [f"wrote {html} and {md}"])


def _load_nnc(path: str, reader: Optional[Callable[[str], Any]] = None) -> Any:
    """Read a compressed file (``reader``: load_compressed unless given); a PyTorch checkpoint
    given instead gets told what reads it."""
    from nncompress.coding.container import MAGIC
    from nncompress.modelfile import is_compressed, load_compressed

    try:  # a foreign file is told from its first bytes, before the reader takes in the whole of it
        if os.path.isfile(path) and os.path.getsize(path) >= len(MAGIC) and not is_compressed(path):
            raise BadMagicError(f"{path} is not an nncompress file (its first bytes are not the file magic)")
        return (reader or load_compressed)(path)
    except BadMagicError:
        if zipfile.is_zipfile(path):  # torch.save's format; never unpickled here
            raise BadMagicError(
                f"{path} is a PyTorch checkpoint, not an nncompress file: `nncompress compress "
                f"{path} --data DATA` makes an .nnc from it (`nncompress evaluate` reads "
                "both)"
            ) from None
        raise


def cmd_inspect(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.modelfile import layer_table, read_compressed_header

    box = _load_nnc(args.file, read_compressed_header)
    table = layer_table(box.header, box.section_bytes, box.file_bytes)
    table["arch"] = box.header.get("arch")
    _emit(args, table, file_table_lines(table))


def cmd_decompress(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.atomic import atomic_open
    import torch

    _refuse_clobber([(f"--out {args.out}", "--out", Path(args.out))], [(f"the input {args.file}", Path(args.file))])
    from nncompress.runtime.export import export_format

    if export_format(args.out):
        return _decompress_export(args)
    box = _load_nnc(args.file)
    with atomic_open(args.out, "wb") as handle:
        torch.save(box.state, handle)
    _emit(
        args,
        {"out": args.out, "tensors": len(box.state)},
        [
            f"wrote {args.out}: a plain state dict of {len(box.state)} tensors "
            "(torch.load(path, weights_only=True) reads it)"
        ],
    )


def _decompress_export(args: argparse.Namespace) -> None:
    """decompress --out NAME.onnx / NAME.safetensors: a standard file, ONNX checked in onnxruntime."""
    from nncompress.runtime.export import export_onnx, export_safetensors
    from nncompress.runtime.source import input_shape_for, model_from_file, parse_shape

    box = _load_nnc(args.file)
    if args.out.lower().endswith(".safetensors") and not args.model:
        res = export_safetensors(box.state, args.out, sparse=args.sparse)
    else:
        _, recorded = _recorded(args.file)
        _check_model(args.file, recorded, args.model)
        model, meta = model_from_file(args.file, args.model, _model_kwargs(args.model_kwargs))
        if args.out.lower().endswith(".onnx"):
            shape = input_shape_for(meta, parse_shape(args.input_shape), "--out NAME.onnx")
            res = export_onnx(model, args.out, shape, sparse=args.sparse)
        else:
            res = export_safetensors(model.state_dict(), args.out, sparse=args.sparse)
    lines = [
        f"wrote {args.out}: {res.format}, {res.tensors} tensors, {res.file_bytes:,} bytes"
        + (f", {len(res.sparse_tensors)} stored sparse" if args.sparse else "")
    ]
    if res.max_abs_diff is not None:
        lines.append(
            f"onnxruntime against PyTorch on random inputs "
            f"(batch {', '.join(map(str, res.checked_batches))}): max abs difference {res.max_abs_diff:.3g}"
        )
    _emit(args, res.to_dict(), lines)


def cmd_benchmark(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.runtime.benchmark import benchmark_file
    from nncompress.runtime.source import parse_shape

    _, recorded = _recorded(args.file)
    _check_model(args.file, recorded, args.model)
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    res = benchmark_file(
        args.file,
        args.batch or [1, 64],
        mode=args.runtime,
        int8=args.int8,
        threads=args.threads,
        input_shape=parse_shape(args.input_shape),
        model_name=args.model,
        model_kwargs=_model_kwargs(args.model_kwargs),
        repeats=args.repeats,
    )
    lines = [
        f"{args.file}: dense (decoded) against the {res['runtime']} runtime{' with int8' if res['int8'] else ''}, "
        f"{res['threads']} thread(s), inputs (batch, {', '.join(map(str, res['input_shape']))}); "
        "medians in ms",
        f"{'batch':>6} {'dense':>10} {'runtime':>10} {'speedup':>8}",
    ]
    lines += [
        f"{b['batch']:>6} {b['dense_ms']:>10.3f} {b['runtime_ms']:>10.3f} {b['speedup']:>7.2f}x" for b in res["batches"]
    ]
    lines += ["", f"{'layer':<24} {'kept':>7} {'batch':>6} {'kernel':<10} {'dense':>10} {'runtime':>10} {'speedup':>8}"]
    lines += [
        f"{r['layer']:<24} {100 * r['kept']:>6.1f}% {r['batch']:>6} {r['kernel']:<10} {r['dense_ms']:>10.3f} "
        f"{r['runtime_ms']:>10.3f} {r['speedup']:>7.2f}x"
        for r in res["layers"]
    ]
    lines.append(f"weights held: dense {res['dense_bytes']:,} bytes, runtime {res['runtime_bytes']:,} bytes")
    _emit(args, res, lines)


# The demo's whole run: a recipe shipped in the package (recipes/mlp-digits.yaml links to it).
DEMO_RECIPE = "mlp-digits.yaml"


def cmd_demo(args: argparse.Namespace, progress: ProgressFn) -> None:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import apply_overrides, shipped_recipe
    from nncompress.report.page import write_report
    from nncompress.rundir import RunDir, new_run_dir

    recipe = apply_overrides(shipped_recipe(DEMO_RECIPE), {"seed": args.seed}, "demo")
    run = RunDir(new_run_dir(args.out))
    args._run_dir = run.path
    res = run_recipe(recipe, run, progress=progress)
    from nncompress.distributed import is_main

    if not is_main():  # rank 0 writes the report and speaks for the run
        return
    html, _ = write_report(run.path, run.file("report.html"))
    steps = [json.loads(line) for line in run.file("steps.jsonl").read_text().splitlines()]
    density = steps[-1]["overall_density"]  # against the layer sizes before dead neurons were removed
    print(
        "\n".join(
            [
                "demo: MLP on scikit-learn's embedded 8x8 digits: train -> sensitivity -> prune -> share -> code",
                f"pruning: {len(steps)} logged steps; {1 / max(density, 1e-12):.1f}x fewer nonzero weights "
                f"({density:.1%} kept); fine-tuned at {(res.get('finetune') or {}).get('note', '-')}",
                "",
                *file_table_lines(res),
                f"test accuracy: dense {_pct(res['dense_test_accuracy'])}, decoded file {_pct(res['test_accuracy'])} "
                f"({-res['test_drop_points']:+.2f} pt)",
                f"outputs in {run.path}; open {html} for the report",
            ]
        )
    )


def _add_common(p: argparse.ArgumentParser, data: bool = True, objective: bool = False) -> None:
    if data:
        p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--model", default=None, help=f"{MODEL_HELP}; needed for checkpoints that record no architecture")
    p.add_argument("--model-kwargs", default=None, help="JSON object of the factory's keyword arguments")
    if data:
        p.add_argument("--normalize", default=None, help=NORMALIZE_HELP)
    if objective:
        p.add_argument(
            "--objective",
            default="auto",
            choices=OBJECTIVES,
            help="what decisions keep: auto (accuracy with labels; without, distillation from the dense "
            "model: kl for logits, cosine otherwise), classification, kl, cosine or mse",
        )
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")


def _add_q_range(p: argparse.ArgumentParser, defaults: PruneConfig | SensitivityConfig) -> None:
    p.add_argument("--q0", type=float, default=defaults.q0, help="first q (threshold = q x std of the layer)")
    p.add_argument("--q-step", type=float, default=defaults.q_step, help="how much q rises per step")
    p.add_argument("--q-max", type=float, default=defaults.q_max, help="largest q tried")


def _prune_flags() -> tuple[list[tuple[str, str, Any, str]], list[tuple[str, str, str]]]:
    """``prune``'s flags: the pruning rows of the compress tables, keyed by PruneConfig field."""
    flags = [
        (flag, key.split(".", 1)[1], kind, text) for flag, key, kind, text in COMPRESS_FLAGS if key.startswith("prune.")
    ]
    switches = [
        (flag, key.split(".", 1)[1], text)
        for flag, key, text in COMPRESS_SWITCHES
        if key.startswith("prune.") and key != "prune.enabled"
    ]
    return flags, switches


def _add_prune_flags(p: argparse.ArgumentParser) -> None:
    c = PruneConfig()
    flags, switches = _prune_flags()
    for flag, name, kind, text in flags:
        given_only = name in ("target_steps", "select", "exclude")  # None: not given (checked, named in errors)
        p.add_argument(
            flag,
            type=kind,
            default=None if given_only else getattr(c, name),
            help=f"{text} (default {getattr(c, name)})",
        )
    for flag, _, text in switches:
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--sensitivity", default=None, help="sensitivity.csv (or its folder): per-layer q from it")
    p.add_argument(
        "--max-drop",
        type=float,
        default=None,
        help=f"with --sensitivity: drop (points) that sets each layer's q scale "
        f"(default {SensitivityConfig().max_drop})",
    )
    p.add_argument("--seed", type=int, default=c.seed)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of ours."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nncompress: error: {message} (see {self.prog} --help)\n")


MAX_DECODED_HELP = (
    "memory (MB) the weights of a .nnc file may decode to, per tensor and in all (default: "
    "1024 per tensor, 2048 in all); raise it only for files you trust"
)


def _decode_limits(args: argparse.Namespace) -> Any:
    """The --max-decoded-mb limits for every .nnc file the command reads (none given: the defaults)."""
    from contextlib import nullcontext
    from nncompress.modelfile import decode_limits

    mb = getattr(args, "max_decoded_mb", None)
    if mb is None:
        return nullcontext()
    if not mb > 0 or mb > 2**40:
        raise ConfigError(f"--max-decoded-mb must be a positive number of megabytes, not {mb}")
    return decode_limits(int(mb * 2**20))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nncompress", description="Compress trained networks: prune, fine-tune, measure.")
    parser.add_argument("--version", action="version", version=f"nncompress {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    parser.add_argument("--max-decoded-mb", type=float, default=None, help=MAX_DECODED_HELP)
    # the same flags after the sub-command; SUPPRESS keeps them from resetting the ones given before it
    common = _Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log what the library does"
    )
    common.add_argument("--max-decoded-mb", type=float, default=argparse.SUPPRESS, help=MAX_DECODED_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    p = add("train", help="train a model (built-in or your own factory) on labelled data")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--model-kwargs",
        default=None,
        help="JSON object of the factory's keyword arguments (sizes the "
        "data implies, num_classes / in_channels / input_shape, are filled in when the factory takes them)",
    )
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--normalize", default=None, help=NORMALIZE_HELP)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_train)

    p = add("evaluate", help="test accuracy (or agreement with a reference model) and weight counts of a file")
    p.add_argument("checkpoint")
    p.add_argument(
        "--reference",
        default=None,
        help="the dense model: score the file by its outputs against this model's (needed without labels)",
    )
    _add_common(p, objective=True)
    p.set_defaults(func=cmd_evaluate)

    d = SensitivityConfig()
    p = add("sensitivity", help="prune each layer alone over a range of q; CSV + plot")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="folder for sensitivity.csv and sensitivity.png")
    _add_q_range(p, d)
    p.add_argument(
        "--max-drop",
        type=float,
        default=d.max_drop,
        help="accuracy drop (points) a layer may take alone; sets the per-layer q scale",
    )
    _add_common(p, objective=True)
    p.set_defaults(func=cmd_sensitivity)

    p = add("prune", help="iterative std-threshold pruning with fine-tuning")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="pruned checkpoint")
    p.add_argument("--log-dir", default=None, help="step log, histograms, summary (default: OUT_prune/)")
    p.add_argument(
        "--storage",
        choices=["auto", "dense", "csr"],
        default="auto",
        help="auto: CSR for each weight where it is smaller than dense",
    )
    _add_prune_flags(p)
    _add_common(p, objective=True)
    p.set_defaults(func=cmd_prune)

    p = add("compress", help="prune -> share weights -> fine-tune -> code into one small file")
    p.add_argument(
        "checkpoint", nargs="?", default=None, help="trained checkpoint (leave out to train the recipe's model first)"
    )
    p.add_argument("--recipe", default=None, help="YAML or TOML file describing the whole run; flags override it")
    p.add_argument("--out", default=None, help="the compressed file (.nnc; default RUN_DIR/model.nnc)")
    p.add_argument(
        "--run-dir",
        default=None,
        help="folder for the run's logs, figures and saved state (default: a new runs/TIMESTAMP)",
    )
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

    p = add("decompress", help="a compressed file -> a plain state dict, ONNX or safetensors (by --out's suffix)")
    p.add_argument("file")
    p.add_argument(
        "--out",
        required=True,
        help="NAME.pt: state dict; NAME.onnx: ONNX, checked in onnxruntime; NAME.safetensors: safetensors",
    )
    p.add_argument(
        "--sparse",
        action="store_true",
        help="store pruned weights sparse (.safetensors: CSR parts; "
        ".onnx: sparse initializers, which onnxruntime makes dense when it loads them)",
    )
    p.add_argument(
        "--input-shape",
        default=None,
        help="for .onnx: one input example's shape, e.g. 1,28,28 (default: the one the file records)",
    )
    p.add_argument("--model", default=None, help=f"{MODEL_HELP}; for .onnx when the file records no architecture")
    p.add_argument("--model-kwargs", default=None, help="JSON object of the factory's keyword arguments")
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.set_defaults(func=cmd_decompress)

    p = add("benchmark", help="latency of the decoded dense model against the sparse/int8 runtime, per layer")
    p.add_argument("file")
    p.add_argument(
        "--batch",
        type=int,
        action="append",
        default=None,
        help="a batch size to time (repeat the flag for several; default 1 and 64)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's setting)")
    p.add_argument(
        "--runtime",
        choices=["auto", "sparse"],
        default="auto",
        help="auto: per layer and batch size the faster of dense and CSR, as timed at load; "
        "sparse: CSR for every pruned layer",
    )
    p.add_argument("--int8", action="store_true", help="Linear layers that stay dense run on int8 weights")
    p.add_argument(
        "--input-shape",
        default=None,
        help="one input example's shape, e.g. 1,28,28 (default: the one the file records)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (medians)")
    _add_common(p, data=False)
    p.set_defaults(func=cmd_benchmark)

    p = add("demo", help="train, analyse and prune an MLP on the embedded digits data")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def _check_output(path: Optional[str | Path], folder: bool = False, flag: str = "--out") -> None:
    """Refuse an unusable output before any work is done, not after hours of it: a folder or device where
    a file goes, a file where a folder goes, a FIFO, /proc or /sys, or a place that cannot be written."""
    if path is None:
        return
    what = f"{flag} {path}"
    if not folder:
        check_output_file(path, what)
        return
    try:
        mode: Optional[int] = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise PathError(f"{what} is {'a file' if stat.S_ISREG(mode) else kind_of(mode)}; give a folder")
    check_output_folder(path, what)


# inputs named on the command line: (attribute, what it is); each is checked before any work starts
INPUT_ARGS = (
    ("checkpoint", "checkpoint"),
    ("file", "compressed file"),
    ("recipe", "recipe"),
    ("sensitivity", "sensitivity table"),
    ("reference", "reference model"),
)


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse an input that is a FIFO (its open would block), a device (/dev/zero never ends), a folder
    where a file belongs, or a /proc or /sys file, before anything is read; a missing file is left to the
    reader, whose message says what it expected there."""
    for attr, what in INPUT_ARGS:
        value = getattr(args, attr, None)
        if not value:
            continue
        path = Path(value)
        if attr == "sensitivity" and path.is_dir():
            path = path / "sensitivity.csv"
        if os.path.lexists(path):
            check_input_file(path, f"{what} {path}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: by inode where both exist (links too), else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _refuse_clobber(outputs: Sequence[tuple[str, str, Path]], inputs: Sequence[tuple[str, Path]]) -> None:
    """Refuse, before any work, an output (what, flag, path) that would overwrite an input (what, path) or an
    earlier output: a typo in --out must not destroy what the command reads or writes."""
    seen = list(inputs)
    for what, flag, path in outputs:
        for other, src in seen:
            if _same_file(path, src):
                raise ConfigError(f"{what} would overwrite {other}; pick another {flag}")
        seen.append((what, path))


def _report_outputs(flag: str, html: Optional[str]) -> list[tuple[str, str, Path]]:
    """The report page and its Markdown twin, as outputs for _refuse_clobber."""
    if not html:
        return []
    from nncompress.report.page import FIGURES

    md = Path(html).with_suffix(".md")
    files = Path(html).with_name(f"{Path(html).stem}_files")  # write_report's figure folder
    return [
        (f"{flag} {html}", flag, Path(html)),
        (f"{flag} {html} (its Markdown twin {md})", flag, md),
        *[(f"{flag} {html} (its figure {files / name})", flag, files / name) for name in FIGURES],
    ]


def _data_inputs(spec: Optional[str]) -> list[tuple[str, Path]]:
    """The IDX files of a --data folder (named data sets live elsewhere)."""
    from nncompress.data.datasets import IDX_FILES

    if not spec or spec in ("digits", "fashion-mnist") or not Path(spec).is_dir():
        return []
    return [(f"the data file {Path(spec) / n}", Path(spec) / n) for name in IDX_FILES for n in (name, f"{name}.gz")]


def _sensitivity_input(path: Optional[str]) -> list[tuple[str, Path]]:
    """--sensitivity names the CSV or its folder."""
    if not path:
        return []
    csv = Path(path) / "sensitivity.csv" if Path(path).is_dir() else Path(path)
    return [(f"the sensitivity table {csv}", csv)]


def _run_files(run_dir: Path) -> list[tuple[str, Path]]:
    """The files a run writes in its folder, whether or not they are there yet."""
    from nncompress.rundir import RUN_FILES

    return [(f"the run's {name} ({run_dir / name})", run_dir / name) for name in RUN_FILES]


def _beside_a_page(path: Path) -> bool:
    """Whether ``path`` has an HTML page of the same stem beside it: then it is that report's twin or figure."""
    return any(path.with_suffix(ext).is_file() for ext in (".html", ".htm"))


def _report_figure(path: Path) -> bool:
    """A figure of an earlier report: NAME_files/FIGURE beside NAME.html (or .htm)."""
    from nncompress.report.page import FIGURES

    folder = path.parent
    return (
        path.name in FIGURES
        and folder.name.endswith("_files")
        and _beside_a_page(folder.with_name(folder.name[: -len("_files")]))
    )


def _run_owned(run_dir: Path) -> list[tuple[str, Path]]:
    """What a report must not overwrite: the run's own files (those still to come too), any other file in
    the folder but an earlier report (its page, Markdown twin and figures), and the checkpoint and
    compressed file run.json names."""
    owned = _run_files(run_dir)
    if not run_dir.is_dir():
        return owned
    owned += [
        (f"the run's file {p}", p)
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() not in (".html", ".htm")
        and not _report_figure(p)
        and not (p.suffix.lower() == ".md" and _beside_a_page(p))
    ]
    try:
        saved = load_json_file(run_dir / "run.json", ConfigError) if (run_dir / "run.json").exists() else None
    except ConfigError:  # a damaged run.json is reported by what reads it for the run
        saved = None
    if isinstance(saved, dict):
        for key, what in (("checkpoint", "checkpoint"), ("out", "compressed file")):
            if isinstance(saved.get(key), str):
                owned.append((f"the run's {what} {saved[key]}", Path(saved[key])))
    return owned


def _resume_hint(args: argparse.Namespace) -> str:
    run_dir = getattr(args, "_run_dir", None)
    if not run_dir:
        return ""
    report = f" --report {args.report}" if getattr(args, "report", None) else ""
    from nncompress.distributed import launched

    launcher = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '2')} -m " if launched() else ""
    return f"; continue with: {launcher}nncompress compress --resume --run-dir {run_dir}{report}"


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
    from nncompress import distributed

    try:
        started = distributed.init_from_env()  # under torchrun: one rank of several
    except NNCompressError as exc:
        print(f"nncompress: error: {exc}", file=sys.stderr)
        return 1
    code = _run_command(args)
    if started:
        if code == 0:
            distributed.barrier("finishing")  # every rank is done before any leaves
        # gloo's threads may abort the process when the group is torn down while a peer leaves
        # ("terminate called without an active exception"): flush and leave without tearing it down
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_command(args: argparse.Namespace) -> int:
    from nncompress.distributed import is_main, rank
    from nncompress.errors import DistributedError

    main_rank = is_main()  # other ranks under torchrun stay quiet: no bars, warnings or output
    logging.basicConfig(
        level=(logging.INFO if args.verbose else logging.WARNING) if main_rank else logging.ERROR,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    bars = ProgressBars(enabled=not args.quiet and not getattr(args, "json", False) and main_rank)
    try:
        _check_inputs(args)
        if args.command != "compress":  # compress checks its outputs itself (--resume reads them)
            _check_output(getattr(args, "out", None), folder=args.command in ("sensitivity", "demo"))
        with _decode_limits(args):
            args.func(args, bars)
    except DistributedError as exc:  # a rank lost: every rank says so, with the way to resume
        bars.close()
        print(f"nncompress: error: {exc}{_resume_hint(args)}", file=sys.stderr)
        return 1
    except NNCompressError as exc:
        bars.close()
        hint = _resume_hint(args) if isinstance(exc, OutputError) else ""  # a full disk: free space, continue
        if main_rank:  # the other ranks met the same error (rank 0 shares what it finds)
            print(f"nncompress: error: {exc}{hint}", file=sys.stderr)
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
        from nncompress.distributed import launched

        what = f"rank {rank()} stopped (torchrun ends every rank when one fails)" if launched() else "interrupted"
        print(f"nncompress: {what}; no output file was left half-written{_resume_hint(args)}", file=sys.stderr)
        return 130
    bars.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
