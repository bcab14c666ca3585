"""Latency of pruned models: dense fp32, the nncompress runtime (auto), torch.ao dynamic int8, onnxruntime.

Models (random masks at the stated per-layer densities; latency depends on the
shapes and the density, not on which weights survive):
  lenet300  784-264-62-10 (the shrunk sizes of the compress benchmark, seed 0) at 7.1 / 14.5 / 20.2 % kept
  lenet5    conv 20, conv 50, fc 800-373-10 at 100 / 20.0 / 8.0 / 21.9 % kept
  vgg_fc    25088-4096-4096-1000 at 4 / 4 / 23 % kept (Deep Compression's VGG-16 fc densities)
  tfm50, tfm10  one 1536->384 Linear at 50 % and 10 % kept
Each at batch 1 and 64, with 1 thread and all threads, all four engines timed alternately in
one run (medians). Also: memory bandwidth (large copy), weight bytes read per second at batch 1,
weight bytes held, and int8's effect on accuracy (digits MLP).

    python bench/runtime_bench.py [--quick] [--repeats N]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import run_meta, write_results  # noqa: E402

from nncompress.models import LeNet5, LeNet300  # noqa: E402
from nncompress.runtime import convert_, held_bytes  # noqa: E402
from nncompress.runtime.benchmark import paired_medians  # noqa: E402
from nncompress.runtime.csr import csr_bytes  # noqa: E402

warnings.filterwarnings("ignore")


def masked(model: nn.Module, kept: dict[str, float], seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if name in kept:
            with torch.no_grad():
                module.weight.mul_((torch.rand(module.weight.shape, generator=gen) < kept[name]).float())
    return model.eval()


def models(quick: bool) -> list[tuple[str, nn.Module, tuple[int, ...], dict[str, float]]]:
    torch.manual_seed(0)
    out = [("lenet300", LeNet300([784, 264, 62, 10]), (784,), {"fc1": 0.071, "fc2": 0.145, "fc3": 0.202}),
           ("lenet5", LeNet5(hidden=373), (1, 28, 28), {"conv1": 1.0, "conv2": 0.20, "fc1": 0.08, "fc2": 0.219}),
           ("tfm50", nn.Sequential(OrderedDict(fc=nn.Linear(1536, 384))), (1536,), {"fc": 0.5}),
           ("tfm10", nn.Sequential(OrderedDict(fc=nn.Linear(1536, 384))), (1536,), {"fc": 0.1})]
    if not quick:
        vgg = nn.Sequential(OrderedDict(fc6=nn.Linear(25088, 4096), relu6=nn.ReLU(), fc7=nn.Linear(4096, 4096),
                                        relu7=nn.ReLU(), fc8=nn.Linear(4096, 1000)))
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


def memory_bandwidth_gbs() -> float:
    """Bytes read plus written per second copying a 256 MB tensor (median of 5)."""
    src = torch.ones(64 * 1024 * 1024)
    dst = torch.empty_like(src)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times[1:]) / 1e9


def read_bytes(dense: nn.Module, runtime: nn.Module, plan: Any, batch: int) -> int:
    """Weight bytes one call at ``batch`` reads: fp32 weights of the layers that run dense, CSR values and
    indices of those that run CSR."""
    from nncompress.runtime import Routed
    total = 0
    for layer in plan.layers:
        kernel = next(c.kernel for c in layer.choices if c.batch == batch)
        module = runtime.get_submodule(layer.name)
        if isinstance(module, Routed):
            module = module.kernels[kernel.replace("/", "_")]
        total += csr_bytes(module.blocks()) if hasattr(module, "blocks") else \
            dense.get_submodule(layer.name).weight.nbytes
    return total


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
    return {"examples": len(splits.test_y), "fp32_accuracy": float((a == splits.test_y).float().mean()),
            "int8_accuracy": float((b == splits.test_y).float().mean()), "agreement": float((a == b).float().mean())}


def run(quick: bool, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    all_threads = torch.get_num_threads()
    rows = []
    for name, dense, shape, kept in models(quick):
        exported = onnx_bytes(dense, shape)
        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            start = time.perf_counter()
            runtime, plan = convert_(copy.deepcopy(dense), "auto", batch_sizes=(1, 64), input_shape=shape)
            load_s = time.perf_counter() - start
            int8, _ = convert_(copy.deepcopy(dense), "dense", int8=True, batch_sizes=(1, 64), input_shape=shape)
            ort_run = ort_session(exported, threads)
            for batch in (1, 64):
                x = torch.randn(batch, *shape)
                xn = x.numpy()
                d_rt, rt = paired_medians(lambda: dense(x), lambda: runtime(x), repeats)
                d_q, q = paired_medians(lambda: dense(x), lambda: int8(x), repeats)
                d_o, o = paired_medians(lambda: dense(x), lambda: ort_run(xn), repeats)
                dense_s = statistics.median([d_rt, d_q, d_o])
                layers = []
                for layer in plan.layers:
                    choice = next(c for c in layer.choices if c.batch == batch)
                    lx = torch.randn(choice.input_shape)
                    before, after = dense.get_submodule(layer.name), runtime.get_submodule(layer.name)
                    ld, lr = paired_medians(lambda: before(lx), lambda: after(lx), repeats)
                    layers.append({"layer": layer.name, "kept": layer.density, "kernel": choice.kernel,
                                   "dense_ms": ld * 1e3, "runtime_ms": lr * 1e3, "speedup": ld / lr,
                                   "target": 0.7 / layer.density if layer.density <= 0.1 and batch == 64 else None})
                rows.append({"model": name, "threads": threads, "batch": batch, "kept": kept,
                             "dense_ms": dense_s * 1e3, "runtime_ms": rt * 1e3, "int8_ms": q * 1e3, "ort_ms": o * 1e3,
                             "runtime_x": d_rt / rt, "int8_x": d_q / q, "ort_x": d_o / o,
                             "kernels": {c.name: next(k.kernel for k in c.choices if k.batch == batch)
                                         for c in plan.layers},
                             "layers": layers, "load_s": load_s,
                             "dense_bytes": held_bytes(dense), "runtime_bytes": held_bytes(runtime),
                             "int8_bytes": held_bytes(int8),
                             "dense_read_bytes": sum(m.weight.nbytes for m in dense.modules()
                                                     if isinstance(m, (nn.Linear, nn.Conv2d))),
                             "runtime_read_bytes": read_bytes(dense, runtime, plan, batch)})
                print(f"{name} t{threads} b{batch}: runtime {d_rt / rt:.2f}x int8 {d_q / q:.2f}x "
                      f"ort {d_o / o:.2f}x", file=sys.stderr, flush=True)
            del runtime, int8, ort_run
        del exported
    torch.set_num_threads(all_threads)
    extra = {"memory_bandwidth_gbs": memory_bandwidth_gbs(), "int8_accuracy": int8_accuracy()}
    return rows, extra


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], extra: dict[str, Any]) -> str:
    lines = ["# Runtime benchmark: dense fp32 against the nncompress runtime, torch.ao int8 and onnxruntime", "",
             f"`{meta['command']}` on {meta['machine']}, torch {meta['torch']}, {meta['date']}. Random masks at the "
             "per-layer densities given; each cell is dense time / engine time (higher is faster), medians of "
             "alternating calls; dense ms is the median of the three paired dense medians. Where the runtime "
             "kept every layer dense it ran the very same modules as dense, so those rows' distance from 1.00x is "
             "the run's timing noise; on a machine whose cores are shared, calls with 2 threads also wait for a "
             "descheduled thread now and then (the 10-600 ms dense times of small models).", "",
             "| model | threads | batch | dense ms | runtime | int8 (torch.ao) | onnxruntime | runtime kernels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kernels = ", ".join(f"{k}={v}" for k, v in r["kernels"].items())
        lines.append(f"| {r['model']} | {r['threads']} | {r['batch']} | {r['dense_ms']:.3f} | {r['runtime_x']:.2f}x | "
                     f"{r['int8_x']:.2f}x | {r['ort_x']:.2f}x | {kernels} |")
    lines += ["", "Per layer at batch 64, layers with at most 10 % kept (target: 0.7 x 1/density):", "",
              "| model | threads | layer | kept | kernel | dense ms | runtime ms | speedup | target | met |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for layer in r["layers"]:
            if layer["target"]:
                lines.append(f"| {r['model']} | {r['threads']} | {layer['layer']} | {100 * layer['kept']:.1f} % | "
                             f"{layer['kernel']} | {layer['dense_ms']:.3f} | {layer['runtime_ms']:.3f} | "
                             f"{layer['speedup']:.2f}x | {layer['target']:.1f}x | "
                             f"{'yes' if layer['speedup'] >= layer['target'] else 'no'} |")
    bw = extra["memory_bandwidth_gbs"]
    lines += ["", f"Memory bandwidth (copy of 256 MB, read + write): {bw:.1f} GB/s.", "",
              "Weight bytes read per second at batch 1 (dense: fp32 weights / dense time; runtime: CSR values and "
              "indices of the layers it runs CSR plus fp32 weights of the others / runtime time), and the bytes "
              "each model's weights hold (the runtime keeps a layer's dense weights too where it runs dense at "
              "some batch size):", "",
              "| model | threads | dense GB/s | runtime GB/s | weights held dense / runtime / int8 (bytes) |",
              "|---|---|---|---|---|"]
    for r in rows:
        if r["batch"] == 1:
            lines.append(f"| {r['model']} | {r['threads']} | {r['dense_read_bytes'] / r['dense_ms'] / 1e6:.1f} | "
                         f"{r['runtime_read_bytes'] / r['runtime_ms'] / 1e6:.1f} | {r['dense_bytes']:,} / "
                         f"{r['runtime_bytes']:,} / {r['int8_bytes']:,} |")
    acc = extra["int8_accuracy"]
    lines += ["", f"int8 effect on accuracy (digits MLP, {acc['examples']} test images): fp32 "
              f"{100 * acc['fp32_accuracy']:.2f} %, int8 {100 * acc['int8_accuracy']:.2f} %, top-1 agreement "
              f"{100 * acc['agreement']:.2f} %."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the VGG-16 fc stack")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rows, extra = run(args.quick, args.repeats)
    meta = run_meta("runtime_bench.py", **extra)
    write_results("runtime_bench", meta, rows, markdown(rows, meta, extra))


if __name__ == "__main__":
    main()
