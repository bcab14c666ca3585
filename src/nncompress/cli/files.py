"""evaluate, inspect, decompress and benchmark: the commands that read a finished file."""

from __future__ import annotations

import argparse
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

from nncompress.cli.common import _check_model, _emit, _model_kwargs, _pct, _recorded, _splits
from nncompress.errors import BadMagicError, ConfigError
from nncompress.progress import ProgressFn
from nncompress.report.text import file_table_lines
from nncompress.runguard import PendingRun, refuse_clobber


def cmd_evaluate(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
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


def cmd_inspect(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.modelfile import layer_table, read_compressed_header

    box = _load_nnc(args.file, read_compressed_header)
    table = layer_table(box.header, box.section_bytes, box.file_bytes)
    table["arch"] = box.header.get("arch")
    _emit(args, table, file_table_lines(table))


def cmd_decompress(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
    from nncompress.atomic import atomic_open
    import torch

    refuse_clobber([(f"--out {args.out}", "--out", Path(args.out))], [(f"the input {args.file}", Path(args.file))])
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


def cmd_benchmark(args: argparse.Namespace, progress: ProgressFn, pending: PendingRun) -> None:
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
