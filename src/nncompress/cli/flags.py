"""The options of the commands as tables (flag, recipe key or config field, type, help), and how an
error about a setting is said with the flag the user typed."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from nncompress.config import GROUP_PRESETS
from nncompress.errors import ConfigError
from nncompress.models import MODELS

DATA_HELP = (
    "fashion-mnist, digits, a folder with the four MNIST-format IDX files, or package.module:function "
    "returning (train, val[, test]) loaders"
)
MODEL_HELP = (
    f"a built-in model ({', '.join(MODELS)}) or your own: package.module:factory or path/to/file.py:factory "
    "(a class or function returning an nn.Module; naming it also trusts a file that records it)"
)
NORMALIZE_HELP = (
    "input transform of image data: standardize (train-split mean/std, the default), unit ([0, 1]), "
    "none (raw pixel values) or MEAN,STD (applied to [0, 1] inputs); a .nnc made with another records "
    "it and evaluate reuses it"
)
VAL_SIZE_HELP = (
    "training examples the built-in data and IDX folders hold out for validation (default 5000, or 10 %% of "
    "a training set under 25,000); a model's later runs reuse the size its checkpoint records"
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
    (
        "--min-stage-share",
        "prune.min_stage_share",
        float,
        "a stage of kinds (conv, fc) holding less than this share of the weights joins its neighbour",
    ),
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
        "--batchnorm",
        "coding.batchnorm",
        str,
        "exact (default) or affine: each BatchNorm stored as its eval-mode scale and shift, half the bytes, "
        "the same eval outputs",
    ),
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
    ("--val-size", "val_size", int, VAL_SIZE_HELP),
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
