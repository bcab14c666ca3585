"""Median wall time of a callable: the one clock the kernel chooser and the benchmark share.

A shared 2-core machine makes single timings meaningless; medians of repeated runs
after warm-up are stable enough to rank kernels run back to back.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Protocol

import torch


class Timer(Protocol):
    """Seconds one call of ``fn`` takes; ``kernel`` names it and ``positions`` is the input size (a cost
    model or a test's fake clock answers from them)."""

    def __call__(self, fn: Callable[[], Any], *, kernel: str, positions: int) -> float: ...


def median_time(
    fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, budget_s: float = 0.05, most: int = 50
) -> float:
    """Median seconds of at least ``repeats`` calls after ``warmup`` calls; fast calls are repeated
    up to ``most`` times, as many as fit ``budget_s``, since their timings scatter the most."""
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        first = (time.perf_counter() - start) / max(1, warmup)
        n = max(repeats, min(most, int(budget_s / max(first, 1e-9))))
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def default_timer(fn: Callable[[], Any], *, kernel: str = "", positions: int = 0) -> float:
    """The real clock: ``median_time`` of a few calls (the chooser takes several such rounds)."""
    return median_time(fn, repeats=3, budget_s=0.02, most=20)
