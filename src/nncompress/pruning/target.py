"""Pure helpers for pruning to a target density: the per-step densities, and
the q whose std-threshold masks reach one of them."""

from __future__ import annotations

from typing import Mapping

import torch

from nncompress.errors import ConfigError
from nncompress.pruning.masks import count_kept


def density_steps(start: float, target: float, steps: int) -> list[float]:
    """Densities after each of ``steps`` steps, geometric from ``start`` to ``target``
    (``target ** (k / steps)`` from a dense start): each step removes the same share
    of what is left, so later steps, on a thinner net, take smaller bites."""
    if steps < 1:
        raise ConfigError(f"target_steps must be >= 1, got {steps}")
    if not 0 < target <= 1 or not 0 < start <= 1:
        raise ConfigError(f"densities must lie in (0, 1], got start {start} and target {target}")
    if target >= start:
        return []
    return [start * (target / start) ** (k / steps) for k in range(1, steps + 1)]


@torch.no_grad()
def masked_density(
    weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], scaled_std: Mapping[str, float], q: float
) -> float:
    """Fraction of all weights kept by ``mask & (|w| >= q x scaled_std)``."""
    kept = sum(count_kept(masks[n], w, q * scaled_std[n]) for n, w in weights.items())
    return kept / max(1, sum(w.numel() for w in weights.values()))


@torch.no_grad()
def q_for_density(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    scaled_std: Mapping[str, float],
    density: float,
    iterations: int = 60,
) -> float:
    """The smallest q (found by bisection) whose masks keep at most ``density`` of
    the weights; ``scaled_std`` is each layer's std times its layer scale."""
    if masked_density(weights, masks, scaled_std, 0.0) <= density:
        return 0.0
    ratios = [max(-float(w.min()), float(w.max())) / s for n, w in weights.items() if (s := scaled_std[n]) > 0]
    lo, hi = 0.0, max(ratios, default=0.0) * (1 + 1e-6) + 1e-12
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if masked_density(weights, masks, scaled_std, mid) <= density:
            hi = mid
        else:
            lo = mid
    return hi
