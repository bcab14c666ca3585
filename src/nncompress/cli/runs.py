"""compress, report and demo: the commands of a whole run in a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from nncompress.cli.checks import (
    _check_output,
    _check_report_name,
    _data_inputs,
    _report_outputs,
    _run_owned,
    _sensitivity_input,
)
from nncompress.cli.common import _check_model, _emit, _model_kwargs, _pct, _recorded, load_checked
from nncompress.cli.flags import (
    COMPRESS_FLAGS,
    COMPRESS_SWITCHES,
    PRUNE_LAYER_MESSAGES,
    SHARE_LAYER_MESSAGES,
    _dest,
    _flag_named,
    _given_flags,
    _int_option,
    _layer_flags,
)
from nncompress.errors import ConfigError, ReportError
from nncompress.progress import ProgressFn
from nncompress.report.text import file_table_lines
from nncompress.runguard import PendingRun, first_missing, refuse_clobber, run_files


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


def _resolve_compress(args: argparse.Namespace, pending: PendingRun) -> tuple[Any, Any, Optional[str], Optional[str]]:
    """(recipe, run dir, checkpoint, out) from the command line, a recipe, or a run to resume; a new run's
    folder goes into ``pending``, to be removed again if the run fails before it starts."""
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
        refuse_clobber(_report_outputs("--report", args.report), _run_owned(run.path))
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
        *(run_files(Path(args.run_dir)) if args.run_dir else []),
    ]  # RunDir refuses a folder in use
    out = Path(args.out) if args.out else Path(args.run_dir) / "model.nnc" if args.run_dir else None
    what = f"--out {args.out}" if args.out else f"the run's model.nnc ({out})"
    refuse_clobber([*([(what, "--out", out)] if out else []), *_report_outputs("--report", args.report)], inputs)
    if args.run_dir:
        path = Path(args.run_dir).absolute()
        made = first_missing(path)
    else:
        made = first_missing(Path("runs").absolute())
        path = new_run_dir().absolute()
        made = made or path
    pending.path, pending.top = path, made  # removed again if the run fails before it starts
    return recipe, RunDir(args.run_dir or path), args.checkpoint, args.out


def cmd_compress(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.pipeline import run_recipe

    if args.report:
        _check_output(args.report, flag="--report")
        _check_report_name(args.report)
    _check_output(args.out)
    if args.run_dir:
        _check_output(args.run_dir, folder=True, flag="--run-dir")
    else:
        _check_output("runs", folder=True, flag="the default run folder (give --run-dir)")
    recipe, run, checkpoint, out = _resolve_compress(args, pending)
    try:
        pending.resume_dir = run.path  # for the interruption message
        splits = _compress_splits(recipe, checkpoint)
        res = run_recipe(recipe, run, checkpoint=checkpoint, out=out, progress=progress, splits=splits)
    except ConfigError as exc:  # a flag's value found wrong once the model is loaded (--groups fc9)
        pending.drop_if_unstarted()
        raise _flag_named(
            exc,
            _given_flags(args, COMPRESS_FLAGS)
            + _layer_flags(args, PRUNE_LAYER_MESSAGES)
            + _layer_flags(args, SHARE_LAYER_MESSAGES),
        ) from None
    except BaseException:
        pending.drop_if_unstarted()
        raise
    pending.resume_dir = None  # finished: nothing to resume from here on
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


def _compress_splits(recipe: Any, checkpoint: Optional[str]) -> Any:
    """The run's data, loaded before the run starts (None: no data named; run_recipe says so); without a
    val_size of its own, the validation split the checkpoint records."""
    if recipe.data is None:
        return None
    return load_checked(
        recipe.data, recipe.normalize, recipe.val_size, _recorded(checkpoint)[0] if checkpoint else None
    )


def cmd_report(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.report.page import write_report

    _check_report_name(args.out)
    if Path(args.run_dir).exists() and not Path(args.run_dir).is_dir():
        raise ReportError(
            f"{args.run_dir} is a file, not a run folder: give the folder that `nncompress compress --run-dir` wrote"
        )
    refuse_clobber(_report_outputs("--out", args.out), _run_owned(Path(args.run_dir)))
    html, md = write_report(args.run_dir, args.out)
    _emit(args, {"html": str(html), "markdown": str(md)}, [f"wrote {html} and {md}"])


# The demo's whole run: a recipe shipped in the package (recipes/mlp-digits.yaml links to it).
DEMO_RECIPE = "mlp-digits.yaml"


def cmd_demo(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import apply_overrides, shipped_recipe
    from nncompress.report.page import write_report
    from nncompress.rundir import RunDir, new_run_dir

    recipe = apply_overrides(shipped_recipe(DEMO_RECIPE), {"seed": args.seed}, "demo")
    run = RunDir(new_run_dir(args.out))
    pending.resume_dir = run.path
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
