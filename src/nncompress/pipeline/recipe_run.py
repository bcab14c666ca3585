"""A whole run described by a recipe, in a run directory: train when needed, then compress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import torch
from torch import nn

from nncompress.data import Splits, load_data
from nncompress.errors import ConfigError
from nncompress.progress import ProgressFn
from nncompress.pruning import prunable_layers
from nncompress.pruning.iterative import pruning_groups
from nncompress.layers import Compressible, select_layers
from nncompress.rundir import RunDir
from nncompress.train import set_seed
from nncompress.train.journal import fingerprint
from nncompress.pipeline.compress import compress_model
from nncompress.pipeline.measure import metrics
from nncompress.pipeline.modelfiles import check_fits, load_for_data, model_for_data, save_trained
from nncompress.pipeline.training import train_model

if TYPE_CHECKING:
    from nncompress.recipe import Recipe


def run_recipe(
    recipe: "Recipe",
    run: RunDir,
    *,
    checkpoint: Optional[str | Path] = None,
    out: Optional[str | Path] = None,
    progress: Optional[ProgressFn] = None,
    splits: Optional[Splits] = None,
    model: Optional[nn.Module] = None,
) -> dict[str, Any]:
    """A whole run described by a recipe, in a run directory: train (when neither a
    checkpoint nor a trained ``model`` in memory is given), sensitivity scan, prune,
    share, code. Interrupted, the same call with ``RunDir(..., resume=True)`` (and
    the same ``model``, whose weights are checked) continues from the last saved
    epoch and writes the same file, byte for byte. ``model`` is changed in place."""
    from nncompress.recipe import dump_recipe, recipe_to_dict

    if recipe.data is None and splits is None:
        raise ConfigError("the recipe names no data set; add `data:` to it or give --data")
    if checkpoint is not None and model is not None:
        raise ConfigError("give a checkpoint or a model in memory, not both")
    if checkpoint is None and recipe.model is None and model is None:
        raise ConfigError("nothing to compress: give a checkpoint, or name a `model:` in the recipe to train one")
    checkpoint = str(Path(checkpoint).resolve()) if checkpoint else None
    out = Path(out).resolve() if out else run.file("model.nnc").resolve()
    started = {"command": "compress", "checkpoint": checkpoint, "out": str(out), "recipe": recipe_to_dict(recipe)}
    if model is not None:
        started["model_weights_sha256"] = fingerprint(model)
    if run.resume:
        run.check_same_run(started)
    if splits is None:
        assert recipe.data is not None  # refused above
        splits = load_data(recipe.data, normalize=recipe.normalize)
    source_meta: dict[str, Any] = {}
    if model is not None:
        check_fits(model, splits, "the model")
    elif checkpoint is None:
        assert recipe.model is not None  # refused above
        set_seed(recipe.seed)  # the initial weights too
        model = model_for_data(recipe.model, splits, recipe.model_kwargs)
    else:
        model, source_meta = load_for_data(checkpoint, splits, recipe.model, recipe.model_kwargs)
    train_first = checkpoint is None and "model_weights_sha256" not in started
    if not splits.has_labels and train_first:  # refused before run.json: a typo leaves no half-made run
        raise ConfigError(
            f"{splits.name} carries no labels, so compress cannot train a model from scratch: "
            "give the trained checkpoint to compress (label-free runs distil from its outputs)"
        )
    if not splits.has_labels and recipe.objective == "classification":
        raise ConfigError(
            f"objective 'classification' needs labels, and {splits.name} carries none; use 'auto', "
            "'kl', 'cosine' or 'mse' to distil from the dense model"
        )
    check_layer_names(recipe, model)  # before hours of training, not after
    if not run.resume:  # written only once the inputs are known to be good: a typo leaves no half-made run
        from nncompress.rundir import environment

        run.write_json("environment.json", environment())
        run.write_text("recipe.yaml", dump_recipe(recipe))
        run.write_json("run.json", {**started, "torch_threads": torch.get_num_threads()})
    if train_first:
        info = train_model(model, splits, recipe.train, progress, journal=run.journal)
        save_trained(
            model,
            splits,
            run.file("base.pt"),
            {"test_accuracy": metrics(model, splits)["accuracy"], "val_accuracy": info["val"]["accuracy"]},
        )
    return compress_model(
        model,
        source_meta,
        splits,
        out,
        recipe.prune,
        recipe.share,
        progress=progress,
        sensitivity_cfg=recipe.sensitivity,
        run=run,
        objective=recipe.objective,
    )


def check_layer_names(recipe: "Recipe", model: nn.Module) -> None:
    """Every layer a recipe names must be one its section selects (pruned or shared)."""
    named: list[tuple[str, Iterable[str], dict[str, Compressible], str]] = [
        (
            "share.layers",
            recipe.share.layer_bits,
            select_layers(model, recipe.share.select, recipe.share.exclude, what="share.select"),
            "shared",
        )
    ]
    if recipe.prune is not None:
        named.insert(
            0,
            (
                "prune.layers",
                recipe.prune.layer_scale,
                prunable_layers(model, recipe.prune.select, recipe.prune.exclude),
                "pruned",
            ),
        )
    for key, names, layers, verb in named:
        unknown = sorted(set(names) - set(layers))
        if unknown:
            raise ConfigError(
                f"{key}: unknown layer(s) {unknown}; the model's {verb} layers are {list(layers)}", field=key
            )
    if recipe.prune is not None:
        try:
            pruning_groups(model, recipe.prune)  # the pruner's own checks: groups, layers too small to prune
        except ConfigError as exc:
            raise ConfigError(f"prune.{exc}", field=exc.field and f"prune.{exc.field}") from None
