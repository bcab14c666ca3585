"""The argument parser: every command, its options and the function that runs it."""

from __future__ import annotations

import argparse
from typing import NoReturn

from nncompress import __version__
from nncompress.cli.files import cmd_benchmark, cmd_decompress, cmd_evaluate, cmd_inspect
from nncompress.cli.flags import (
    COMPRESS_FLAGS,
    COMPRESS_SWITCHES,
    DATA_HELP,
    MODEL_HELP,
    NORMALIZE_HELP,
    VAL_SIZE_HELP,
    _prune_flags,
)
from nncompress.cli.runs import cmd_compress, cmd_demo, cmd_report
from nncompress.cli.training import cmd_prune, cmd_sensitivity, cmd_train
from nncompress.config import PruneConfig, SensitivityConfig
from nncompress.recipe import OBJECTIVES


def _add_common(p: argparse.ArgumentParser, data: bool = True, objective: bool = False) -> None:
    if data:
        p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--model", default=None, help=f"{MODEL_HELP}; needed for checkpoints that record no architecture")
    p.add_argument("--model-kwargs", default=None, help="JSON object of the factory's keyword arguments")
    if data:
        p.add_argument("--normalize", default=None, help=NORMALIZE_HELP)
        p.add_argument("--val-size", type=int, default=None, help=VAL_SIZE_HELP)
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
    p.add_argument("--val-size", type=int, default=None, help=VAL_SIZE_HELP)
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
