"""What the commands share: printing the result, reading --model-kwargs and --data, and the model a file records."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from nncompress.errors import ConfigError, NNCompressError

log = logging.getLogger("nncompress.cli")


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
    """The data of --data with --normalize and --val-size, or, where they are not given, the transform and
    the validation split the model file recorded."""
    from nncompress.data.datasets import recorded_normalize

    normalize = getattr(args, "normalize", None)
    if normalize is None and recorded_meta:
        normalize = recorded_normalize(recorded_meta.get("transform"))
    return load_checked(args.data, normalize, getattr(args, "val_size", None), recorded_meta)


def load_checked(data: str, normalize: Any, val_size: Optional[int], recorded_meta: Optional[dict[str, Any]]) -> Any:
    """``load_data`` with ``val_size``, else the validation size the model recorded for this same data. The split
    is a seeded permutation's head, so a larger one than the model was trained with holds out images it trained
    on: warned (a smaller one is a subset of its validation images)."""
    from nncompress.data import load_data
    from nncompress.data.datasets import data_name, recorded_val_size

    meta = recorded_meta or {}
    same = meta.get("data") is not None and meta.get("data") == data_name(data)
    recorded = recorded_val_size(meta.get("split")) if same else None

    splits = load_data(data, normalize=normalize, val_size=val_size if val_size is not None else recorded)
    held = (splits.split or {}).get("val")
    if recorded is not None and held is not None and held > recorded:
        log.warning(
            "the model was trained holding out %d validation examples, this run holds out %d: %d of them are "
            "images it trained on, so drops read on them are optimistic; leave --val-size out to use the "
            "recorded %d",
            recorded,
            held,
            held - recorded,
            recorded,
        )
    return splits


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
