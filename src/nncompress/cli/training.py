"""train, sensitivity and prune: the commands that make or prune a checkpoint step by step."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nncompress.cli.checks import _data_inputs, _sensitivity_input
from nncompress.cli.common import _check_model, _emit, _model_kwargs, _pct, _recorded, _splits
from nncompress.cli.flags import PRUNE_LAYER_MESSAGES, _dest, _flag_named, _layer_flags, _prune_flags
from nncompress.config import PruneConfig, SensitivityConfig, TrainConfig
from nncompress.errors import ConfigError
from nncompress.paths import check_output_file
from nncompress.progress import ProgressFn
from nncompress.runguard import PendingRun, first_missing, refuse_clobber, remove_if_empty


def cmd_train(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.pipeline import check_fits, metrics, model_for_data, save_trained, train_model

    if args.epochs < 1:  # TrainConfig allows 0 (fine-tuning may skip), but train would save an untrained model
        raise ConfigError(f"--epochs must be at least 1 to train a model, got {args.epochs}")
    refuse_clobber([(f"--out {args.out}", "--out", Path(args.out))], _data_inputs(args.data))
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


def cmd_sensitivity(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.pipeline import run_sensitivity, sensitivity_files

    refuse_clobber(
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


def cmd_prune(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.pipeline import prune_files, run_prune

    cfg = _prune_config(args)
    log_flag, log_given = ("--log-dir", args.log_dir) if args.log_dir else ("--out", args.out)
    out, *logs = prune_files(args.out, args.log_dir).values()
    for path in logs:
        check_output_file(path, f"{log_flag} {log_given} (its {path})")
    refuse_clobber(
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
    made = first_missing(logs[0].parent.absolute())
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
        remove_if_empty(made)
        raise _flag_named(
            exc, [(flag, name) for flag, name, _, _ in _prune_flags()[0]] + _layer_flags(args, PRUNE_LAYER_MESSAGES)
        ) from None
    except BaseException:
        remove_if_empty(made)  # an empty log folder is no record of anything
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
