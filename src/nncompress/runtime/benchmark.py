"""Dense against runtime model, whole and per layer: the numbers ``nncompress benchmark`` prints."""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nncompress.runtime.memory import held_bytes
from nncompress.runtime.plan import RuntimePlan


def paired_medians(
    a: Callable[[], Any], b: Callable[[], Any], repeats: int = 10, warmup: int = 2
) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, called alternately so that load on a shared machine
    falls on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for _ in range(warmup):
            a()
            b()
        for _ in range(max(1, repeats)):
            for fn, out in ((a, times[0]), (b, times[1])):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _row(dense_s: float, runtime_s: float) -> dict[str, float]:
    dense_ms, runtime_ms = round(dense_s * 1e3, 5), round(runtime_s * 1e3, 5)
    return {"dense_ms": dense_ms, "runtime_ms": runtime_ms, "speedup": round(dense_ms / max(runtime_ms, 1e-9), 3)}


def benchmark(
    dense: nn.Module,
    runtime: nn.Module,
    plan: RuntimePlan,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int],
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"threads", "runtime", "int8", "batches": [{batch, dense_ms, runtime_ms, speedup}], "layers": [...],
    "dense_bytes", "runtime_bytes"}``; times are medians of ``repeats`` alternating calls after warm-up."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for batch in batch_sizes:
        x = torch.randn((batch, *input_shape), generator=generator)
        batches.append({"batch": int(batch), **_row(*paired_medians(partial(dense, x), partial(runtime, x), repeats))})
    layers = []
    for layer in plan.layers:
        before, after = dense.get_submodule(layer.name), runtime.get_submodule(layer.name)
        for choice in layer.choices:
            x = torch.randn(choice.input_shape, generator=generator)
            layers.append(
                {
                    "layer": layer.name,
                    "kind": layer.kind,
                    "shape": layer.shape,
                    "kept": round(layer.density, 5),
                    "batch": choice.batch,
                    "kernel": choice.kernel,
                    **_row(*paired_medians(partial(before, x), partial(after, x), repeats)),
                }
            )
    return {
        "threads": plan.threads,
        "runtime": plan.mode,
        "int8": plan.int8,
        "batches": batches,
        "layers": layers,
        "dense_bytes": held_bytes(dense),
        "runtime_bytes": held_bytes(runtime),
    }


def benchmark_file(
    path: str,
    batch_sizes: Sequence[int] = (1, 64),
    *,
    mode: str = "auto",
    int8: bool = False,
    threads: int | None = None,
    input_shape: Sequence[int] | None = None,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    repeats: int = 10,
) -> dict[str, Any]:
    """Decode ``path``, build its runtime model for ``batch_sizes`` and time both (``benchmark``)."""
    import copy

    from nncompress.runtime.convert import check_options, convert_
    from nncompress.runtime.source import input_shape_for, model_from_file

    sizes = check_options(mode, batch_sizes, threads)
    dense, meta = model_from_file(path, model_name, model_kwargs)
    shape = input_shape_for(meta, input_shape, "benchmark")
    runtime, plan = convert_(
        copy.deepcopy(dense), mode, batch_sizes=sizes, input_shape=shape, int8=int8, threads=threads
    )
    result = benchmark(dense.eval(), runtime, plan, shape, sizes, repeats)
    result["input_shape"] = shape
    return result
