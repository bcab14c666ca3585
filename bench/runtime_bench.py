"""Latency of pruned models: dense fp32, the nncompress runtime (auto), the same runtime limited to torch's
CSR (MKL), torch.ao dynamic int8, onnxruntime.

Models (random masks at the stated per-layer densities, and every pruned layer's
weights rounded to 32 distinct values, the 5 bits Deep Compression gave fc layers, as
weight sharing leaves them; latency depends on the shapes, the density and the number
of distinct values, not on which weights survive):
  lenet300  784-264-62-10 (the shrunk sizes of the compress benchmark, seed 0) at 7.1 / 14.5 / 20.2 % kept
  lenet5    conv 20, conv 50, fc 800-373-10 at 100 / 20.0 / 8.0 / 21.9 % kept
  vgg_fc    25088-4096-4096-1000 at 4 / 4 / 23 % kept (Deep Compression's VGG-16 fc densities)
  tfm50, tfm10  one 1536->384 Linear at 50 % and 10 % kept
Each at batch 1 and 64, with 1 thread and all threads, all engines timed in turn in one run
(medians of rounds). Per layer, each sparse kernel (MKL CSR, numba, numba with codebook) against
the dense layer. Also: memory bandwidth (large copy and large sum), weight bytes read per second,
weight bytes held, the numba kernels' compile and cache-load time, and int8's effect on accuracy
(digits MLP).

    python bench/runtime_bench.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run_meta, write_results

from nncompress.models import LeNet5, LeNet300
from nncompress.runtime import Routed, SparseConv, SparseLinear, blocked, convert_, held_bytes
from nncompress.runtime.csr import block_width

warnings.filterwarnings("ignore")


LEVELS = 32


def masked(model: nn.Module, kept: dict[str, float], seed: int = 0) -> nn.Module:
    """Random masks at ``kept``; each pruned layer's weights rounded to ``LEVELS`` evenly spaced values."""
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if name in kept:
            with torch.no_grad():
                w = module.weight
                if kept[name] < 1.0:
                    lo, hi = float(w.min()), float(w.max())
                    step = (hi - lo) / (LEVELS - 1)
                    w.copy_(((w - lo) / step).round() * step + lo)
                w.mul_((torch.rand(w.shape, generator=gen) < kept[name]).float())
    return model.eval()


def medians(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each callable, all called once per round in a rotating order, so that load on a
    shared machine falls on all alike."""
    keys = list(fns)
    times: dict[str, list[float]] = {k: [] for k in keys}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for r in range(max(1, repeats)):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                start = time.perf_counter()
                fns[key]()
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def without_numba() -> Any:
    """A context in which the runtime sees no numba: torch's CSR (MKL) is its only sparse kernel."""

    class _Off:
        def __enter__(self) -> None:
            self.saved = dict(blocked._KERNELS)
            blocked._KERNELS.clear()
            blocked._KERNELS["mod"] = None

        def __exit__(self, *exc: Any) -> None:
            blocked._KERNELS.clear()
            blocked._KERNELS.update(self.saved)

    return _Off()


def models(quick: bool) -> list[tuple[str, nn.Module, tuple[int, ...], dict[str, float]]]:
    torch.manual_seed(0)
    out = [
        ("lenet300", LeNet300([784, 264, 62, 10]), (784,), {"fc1": 0.071, "fc2": 0.145, "fc3": 0.202}),
        ("lenet5", LeNet5(hidden=373), (1, 28, 28), {"conv1": 1.0, "conv2": 0.20, "fc1": 0.08, "fc2": 0.219}),
        ("tfm50", nn.Sequential(OrderedDict(fc=nn.Linear(1536, 384))), (1536,), {"fc": 0.5}),
        ("tfm10", nn.Sequential(OrderedDict(fc=nn.Linear(1536, 384))), (1536,), {"fc": 0.1}),
    ]
    if not quick:
        vgg = nn.Sequential(
            OrderedDict(
                fc6=nn.Linear(25088, 4096),
                relu6=nn.ReLU(),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(),
                fc8=nn.Linear(4096, 1000),
            )
        )
        out.append(("vgg_fc", vgg, (25088,), {"fc6": 0.04, "fc7": 0.04, "fc8": 0.23}))
    return [(name, masked(m, kept), shape, kept) for name, m, shape, kept in out]


def onnx_bytes(model: nn.Module, shape: tuple[int, ...]) -> bytes:
    from nncompress.runtime.export import _onnx_program

    return _onnx_program(model, torch.zeros((2, *shape))).SerializeToString()


def ort_session(data: bytes, threads: int) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def memory_bandwidth_gbs() -> dict[str, float]:
    """Bytes moved per second over 256 MB tensors (median of 5 after one warm-up): a copy (read + write) and
    a sum (read only, the pattern of reading weights)."""
    src = torch.ones(64 * 1024 * 1024)
    dst = torch.empty_like(src)
    out = {}
    for name, fn, moved in (("copy", lambda: dst.copy_(src), 2 * src.nbytes), ("read", lambda: src.sum(), src.nbytes)):
        times = []
        for _ in range(6):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = moved / statistics.median(times[1:]) / 1e9
    return out


def numba_ready_s() -> dict[str, float]:
    """Seconds a fresh process takes to get the numba kernels ready: with an empty cache (compiling) and again
    with the cache the first run wrote."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        code = "from nncompress.runtime import blocked; print(blocked.warm_up())"
        for name in ("compile_s", "cached_s"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out[name] = float(res.stdout.strip().splitlines()[-1])
    return out


def kernel_of(module: nn.Module, kernel: str) -> nn.Module:
    return module.kernels[kernel.replace("/", "_")] if isinstance(module, Routed) else module


def read_bytes(dense: nn.Module, runtime: nn.Module, plan: Any, batch: int) -> int:
    """Weight bytes one call at ``batch`` reads: fp32 weights of the layers that run dense, the sparse weights
    (values or codes, indices, row pointers) of those that run sparse."""
    total = 0
    for layer in plan.layers:
        kernel = next(c.kernel for c in layer.choices if c.batch == batch)
        module = kernel_of(runtime.get_submodule(layer.name), kernel)
        total += (
            module.weight_bytes() if hasattr(module, "weight_bytes") else dense.get_submodule(layer.name).weight.nbytes
        )
    return total


def layer_kernels(layer: nn.Module, n: int) -> dict[str, nn.Module]:
    """Each sparse kernel for ``layer`` (MKL CSR at the runtime's block width for ``n`` input vectors, numba,
    and numba with a codebook where the layer has one)."""
    make = SparseLinear if isinstance(layer, nn.Linear) else SparseConv
    cols = layer.in_features if isinstance(layer, nn.Linear) else layer.weight[0].numel() * layer.groups
    out = {"csr": make(layer, block_width(cols, n), "mkl"), "numba": make(layer, engine="numba")}
    if blocked.codebook(layer.weight.detach()) is not None:
        out["numba-shared"] = make(layer, engine="numba-shared")
    return out


def int8_accuracy() -> dict[str, Any]:
    """fp32 against int8 (dynamic, per channel) on the digits MLP trained 15 epochs: accuracy and agreement."""
    from nncompress.config import TrainConfig
    from nncompress.data import load_data
    from nncompress.models import build_model
    from nncompress.train import fit, set_seed

    splits = load_data("digits")
    gen = set_seed(0)
    model = build_model("mlp", splits.input_shape, splits.num_classes)
    fit(model, splits.train_x, splits.train_y, TrainConfig(epochs=15, lr=0.05, batch_size=64), generator=gen)
    model.eval()
    quant, _ = convert_(copy.deepcopy(model), "dense", int8=True, batch_sizes=(1,))
    with torch.no_grad():
        a, b = model(splits.test_x).argmax(1), quant(splits.test_x).argmax(1)
    return {
        "examples": len(splits.test_y),
        "fp32_accuracy": float((a == splits.test_y).float().mean()),
        "int8_accuracy": float((b == splits.test_y).float().mean()),
        "agreement": float((a == b).float().mean()),
    }


def run(quick: bool, repeats: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    all_threads = torch.get_num_threads()
    rows, layer_rows = [], []
    for name, dense, shape, kept in models(quick):
        exported = onnx_bytes(dense, shape)
        for threads in sorted({1, all_threads}):
            rows += run_threads(name, dense, shape, kept, exported, threads, repeats, layer_rows)
        del exported
    torch.set_num_threads(all_threads)
    extra = {
        "memory_bandwidth_gbs": memory_bandwidth_gbs(),
        "numba_ready": numba_ready_s(),
        "int8_accuracy": int8_accuracy(),
    }
    return rows, layer_rows, extra


def run_threads(
    name: str,
    dense: nn.Module,
    shape: tuple[int, ...],
    kept: dict[str, float],
    exported: bytes,
    threads: int,
    repeats: int,
    layer_rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One model at ``threads`` threads: its rows per batch, and each pruned layer's kernels appended to
    ``layer_rows``. The converted models live only in this call, so they are freed before the next one."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    runtime, plan = convert_(copy.deepcopy(dense), "auto", batch_sizes=(1, 64), input_shape=shape)
    load_s = time.perf_counter() - start
    with without_numba():
        mkl, mkl_plan = convert_(copy.deepcopy(dense), "auto", batch_sizes=(1, 64), input_shape=shape)
    int8, _ = convert_(copy.deepcopy(dense), "dense", int8=True, batch_sizes=(1, 64), input_shape=shape)
    ort_run = ort_session(exported, threads)
    rows = []
    for batch in (1, 64):
        x = torch.randn(batch, *shape)
        t = medians(
            {
                "dense": partial(dense, x),
                "runtime": partial(runtime, x),
                "mkl": partial(mkl, x),
                "int8": partial(int8, x),
                "ort": partial(ort_run, x.numpy()),
            },
            repeats,
        )
        for layer in plan.layers:
            if layer.density >= 1.0:
                continue
            choice = next(c for c in layer.choices if c.batch == batch)
            lx = torch.randn(choice.input_shape)
            before = dense.get_submodule(layer.name)
            kernels = layer_kernels(before, choice.positions)
            lt = medians({"dense": partial(before, lx), **{k: partial(m, lx) for k, m in kernels.items()}}, repeats)
            layer_rows.append(
                {
                    "model": name,
                    "threads": threads,
                    "batch": batch,
                    "layer": layer.name,
                    "kept": layer.density,
                    "picked": choice.kernel,
                    "mkl_picked": next(c.kernel for c in mkl_plan.layer(layer.name).choices if c.batch == batch),
                    "dense_ms": lt["dense"] * 1e3,
                    "kernel_ms": {k: lt[k] * 1e3 for k in kernels},
                    "weight_bytes": {k: m.weight_bytes() for k, m in kernels.items()},
                    "dense_bytes": before.weight.nbytes,
                    "target": 0.7 / layer.density if layer.density <= 0.1 and batch == 64 else None,
                }
            )
        rows.append(
            {
                "model": name,
                "threads": threads,
                "batch": batch,
                "kept": kept,
                **{f"{k}_ms": v * 1e3 for k, v in t.items()},
                **{f"{k}_x": t["dense"] / v for k, v in t.items() if k != "dense"},
                "kernels": {c.name: next(k.kernel for k in c.choices if k.batch == batch) for c in plan.layers},
                "mkl_kernels": {c.name: next(k.kernel for k in c.choices if k.batch == batch) for c in mkl_plan.layers},
                "load_s": load_s,
                "numba_ready_s": plan.numba_ready_s,
                "dense_bytes": held_bytes(dense),
                "runtime_bytes": held_bytes(runtime),
                "int8_bytes": held_bytes(int8),
                "dense_read_bytes": sum(
                    m.weight.nbytes for m in dense.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                ),
                "runtime_read_bytes": read_bytes(dense, runtime, plan, batch),
            }
        )
        print(
            f"{name} t{threads} b{batch}: runtime {t['dense'] / t['runtime']:.2f}x mkl "
            f"{t['dense'] / t['mkl']:.2f}x int8 {t['dense'] / t['int8']:.2f}x "
            f"ort {t['dense'] / t['ort']:.2f}x",
            file=sys.stderr,
            flush=True,
        )
    return rows


def _x(dense_ms: float, ms: Any) -> str:
    return f"{dense_ms / ms:.2f}x" if ms else "-"


def markdown(
    rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]], meta: dict[str, Any], extra: dict[str, Any]
) -> str:
    bw = extra["memory_bandwidth_gbs"]
    lines = [
        "# Runtime benchmark: dense fp32 against the nncompress runtime, torch.ao int8 and onnxruntime",
        "",
        f"`{meta['command']}` on {meta['machine']} ({meta['cpu']}), torch {meta['torch']}, numba "
        f"{meta['numba']}, {meta['date']}. Random masks at the per-layer densities given, pruned layers' weights "
        f"rounded to {LEVELS} distinct values (5-bit sharing). Each cell is dense time / engine time (higher is "
        "faster); all engines of a row were called in turn, round after round, and each time is the median of "
        'its rounds. "runtime" is `runtime="auto"` with the numba kernels; "MKL only" is the same '
        "chooser with torch's CSR as its only sparse kernel (what the runtime does without numba). The machine "
        "has 2 cores shared with other jobs: rows at 2 threads wait for a descheduled thread now and then "
        "(the 10-600 ms dense times of small models), and where a row ran the very same modules for dense and "
        "runtime its distance from 1.00x is the run's noise.",
        "",
        "| model | threads | batch | dense ms | runtime | MKL only | int8 (torch.ao) | onnxruntime | runtime kernels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kernels = ", ".join(f"{k}={v}" for k, v in r["kernels"].items())
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['batch']} | {r['dense_ms']:.3f} | {r['runtime_x']:.2f}x | "
            f"{r['mkl_x']:.2f}x | {r['int8_x']:.2f}x | {r['ort_x']:.2f}x | {kernels} |"
        )
    lines += [
        "",
        "Per layer at batch 64, layers with at most 10 % kept (target: 0.7 x 1/density); each sparse kernel "
        "against the dense layer in the same rounds, and the kernel the runtime picked at load:",
        "",
        "| model | threads | layer | kept | dense ms | MKL CSR | numba | numba codebook | target | picked | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in layer_rows:
        if r["target"]:
            k = r["kernel_ms"]
            picked_x = r["dense_ms"] / k[r["picked"].split("/")[0]] if r["picked"] != "dense" else 1.0
            lines.append(
                f"| {r['model']} | {r['threads']} | {r['layer']} | {100 * r['kept']:.1f} % | "
                f"{r['dense_ms']:.3f} | {_x(r['dense_ms'], k['csr'])} | {_x(r['dense_ms'], k['numba'])} | "
                f"{_x(r['dense_ms'], k.get('numba-shared'))} | {r['target']:.1f}x | {r['picked']} | "
                f"{'yes' if picked_x >= r['target'] else 'no'} |"
            )
    lines += [
        "",
        f"Memory bandwidth on 256 MB tensors: {bw['read']:.1f} GB/s read (a sum), {bw['copy']:.1f} GB/s "
        "copy (read + write).",
        "",
        "Per pruned layer at batch 1: speed against dense, and weight bytes read per second (the layer's "
        "fp32 weights for dense; values or codes, indices and row pointers for the sparse kernels; bytes per "
        "nonzero: MKL CSR 8, numba 6, numba codebook 3):",
        "",
        "| model | threads | layer | kept | dense ms | MKL CSR | numba | numba codebook | GB/s dense / MKL / "
        "numba / codebook | picked |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in layer_rows:
        if r["batch"] == 1:
            k, b = r["kernel_ms"], r["weight_bytes"]
            gbs = [r["dense_bytes"] / r["dense_ms"] / 1e6] + [
                b[n] / k[n] / 1e6 if n in k else None for n in ("csr", "numba", "numba-shared")
            ]
            lines.append(
                f"| {r['model']} | {r['threads']} | {r['layer']} | {100 * r['kept']:.1f} % | "
                f"{r['dense_ms']:.3f} | {_x(r['dense_ms'], k['csr'])} | {_x(r['dense_ms'], k['numba'])} | "
                f"{_x(r['dense_ms'], k.get('numba-shared'))} | "
                + " / ".join(f"{g:.1f}" if g is not None else "-" for g in gbs)
                + f" | {r['picked']} |"
            )
    lines += [
        "",
        "Whole model at batch 1: weight bytes read per second (dense: fp32 weights / dense time; runtime: "
        "the sparse weights of the layers it runs sparse plus fp32 weights of the others / runtime time), "
        "the bytes each model's weights hold (the runtime keeps a layer's dense weights too where it runs "
        "dense at some batch size), and the time `convert_` took (timing every candidate kernel):",
        "",
        "| model | threads | dense GB/s | runtime GB/s | weights held dense / runtime / int8 (bytes) | load s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["batch"] == 1:
            lines.append(
                f"| {r['model']} | {r['threads']} | {r['dense_read_bytes'] / r['dense_ms'] / 1e6:.1f} | "
                f"{r['runtime_read_bytes'] / r['runtime_ms'] / 1e6:.1f} | {r['dense_bytes']:,} / "
                f"{r['runtime_bytes']:,} / {r['int8_bytes']:,} | {r['load_s']:.1f} |"
            )
    ready = extra["numba_ready"]
    lines += [
        "",
        f"numba kernels ready in a fresh process: {ready['compile_s']:.1f} s with an empty cache "
        f"(compiling), {ready['cached_s']:.2f} s from the cache that run wrote (`cache=True`; "
        "NUMBA_CACHE_DIR, else `__pycache__` beside the module, else the user's cache folder).",
    ]
    acc = extra["int8_accuracy"]
    lines += [
        "",
        f"int8 effect on accuracy (digits MLP, {acc['examples']} test images): fp32 "
        f"{100 * acc['fp32_accuracy']:.2f} %, int8 {100 * acc['int8_accuracy']:.2f} %, top-1 agreement "
        f"{100 * acc['agreement']:.2f} %.",
    ]
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the VGG-16 fc stack")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    started = time.perf_counter()
    rows, layer_rows, extra = run(args.quick, args.repeats)
    import numba

    meta = run_meta(
        "runtime_bench.py",
        cpu=cpu_name(),
        numba=numba.__version__,
        wall_s=round(time.perf_counter() - started),
        **extra,
    )
    write_results("runtime_bench", meta, rows + [{"layers": layer_rows}], markdown(rows, layer_rows, meta, extra))


if __name__ == "__main__":
    main()
