"""Pick a layer's kernel by timing the candidates against the base (dense) kernel, robustly to noise.

On cores shared with other work one timing can be off by 10-100x (a descheduled
thread waits out a time slice), and a rule that takes each kernel's best time lets one
lucky round put a 50 %-kept layer on a slower sparse kernel. Here every candidate is
timed in ``rounds`` rounds, in a rotating order, and each round compares it with the base
timed in the same round (a burst of load falls on both). A kernel replaces the base only
when the median of those paired ratios is at most ``margin`` (so it won by the margin in a
majority of the rounds) and its median time is at most ``margin`` of the base's median too;
among such kernels the lowest median wins. A candidate whose paired ratios are clearly
worse (median above ``DROP``) is not timed after the second round, which saves load time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from nncompress.errors import ConfigError
from nncompress.runtime.timing import Timer

ROUNDS = 5
MARGIN = 0.9
DROP = 1.5


@dataclass
class Choice:
    """The kernel taken, median seconds per candidate, median paired ratio to the base per candidate, and
    the rounds each candidate was timed in."""

    pick: str
    median_s: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)


def choose(
    candidates: Mapping[str, Callable[[], Any]],
    base: str,
    timer: Timer,
    positions: int,
    rounds: int = ROUNDS,
    margin: float = MARGIN,
) -> Choice:
    """The candidate to run (``base`` unless another is faster by ``margin`` on the median of paired rounds
    and on the median time)."""
    if base not in candidates:
        raise ConfigError(f"the base kernel {base!r} must be among the candidates")
    times: dict[str, list[float]] = {key: [] for key in candidates}
    ratios: dict[str, list[float]] = {key: [] for key in candidates if key != base}
    alive = list(candidates)
    for r in range(max(1, rounds)):
        shift = r % len(alive)
        measured = {
            key: timer(candidates[key], kernel=key, positions=positions) for key in alive[shift:] + alive[:shift]
        }
        for key, seconds in measured.items():
            times[key].append(seconds)
            if key != base:
                ratios[key].append(seconds / max(measured[base], 1e-12))
        if r >= 1:
            alive = [key for key in alive if key == base or statistics.median(ratios[key]) <= DROP]
    median_s = {key: statistics.median(values) for key, values in times.items()}
    ratio = {key: statistics.median(values) for key, values in ratios.items()}
    winners = [key for key in ratio if ratio[key] <= margin and median_s[key] <= margin * median_s[base]]
    pick = min(winners, key=median_s.__getitem__) if winners else base
    return Choice(pick, median_s, ratio, {key: len(values) for key, values in times.items()})
