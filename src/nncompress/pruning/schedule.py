"""Pure schedule helpers: q values per step, and pruning groups."""

from __future__ import annotations

from typing import Mapping

from torch import nn

from nncompress.errors import ConfigError
from nncompress.layers import KINDS, layer_kind


def q_schedule(q0: float, step: float, q_max: float) -> list[float]:
    """q0, q0+step, ... up to q_max (inclusive, tolerant of float error)."""
    if step <= 0:
        raise ConfigError(f"q step must be > 0, got {step}")
    n = int((q_max - q0) / step + 1e-9) + 1
    return [round(q0 + i * step, 10) for i in range(max(n, 0))]


def resolve_groups(spec: str, layers: Mapping[str, nn.Module]) -> list[list[str]]:
    """Turn 'all', 'fc,conv', 'conv,fc', 'layer' or 'fc1+fc2,conv1' into ordered groups;
    the kinds fc, conv and embedding stand for every layer of that kind."""
    spec = spec.strip()
    names = list(layers)
    if spec == "all":
        return [names]
    if spec == "layer":
        return [[n] for n in names]
    groups: list[list[str]] = []
    seen: set[str] = set()
    for part in spec.split(","):
        part = part.strip()
        if part in KINDS:
            group = [n for n in names if layer_kind(layers[n]) == part]
        else:
            group = [p.strip() for p in part.split("+") if p.strip()]
            unknown = [g for g in group if g not in layers]
            if unknown:
                raise ConfigError(f"groups: unknown layer(s) {unknown}; prunable layers are {names}", field="groups")
        group = [g for g in group if g not in seen]
        seen.update(group)
        if group:
            groups.append(group)
    if not groups:
        raise ConfigError(f"groups {spec!r} selects no prunable layer; prunable layers are {names}")
    return groups


def merge_small_stages(groups: list[list[str]], sizes: Mapping[str, int], share: float) -> list[list[str]]:
    """Stages holding less than ``share`` of the weights join the stage before them (a first one, the stage
    after): the budget gives each stage a part of the tolerance, and a ResNet's classifier (1 % of its
    weights) took half of it from the convolutions, which stopped at 31 % kept on a test drop of -0.09."""
    total = sum(sizes[n] for g in groups for n in g)

    def small(group: list[str]) -> bool:
        return sum(sizes[n] for n in group) < share * total

    merged: list[list[str]] = []
    for group in groups:
        if merged and small(group):
            merged[-1] = merged[-1] + group
        else:
            merged.append(list(group))
    if len(merged) > 1 and small(merged[0]):
        merged[1] = merged[0] + merged[1]
        del merged[0]
    return merged


def kinds_only(spec: str) -> bool:
    """Whether a groups spec names only kinds (``conv,fc``), not layers a user put in stages by hand."""
    return all(part.strip() in KINDS for part in spec.split(","))


def drop_points(reference: float, accuracy: float) -> float:
    """Accuracy drop in percentage points, rounded so 0.91 - 0.89 is 2.0, not 2.0000000000000018."""
    return round((reference - accuracy) * 100, 9)
