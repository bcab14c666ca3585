"""What the runtime chose per layer and batch size, with the times it chose by."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

MODES = ("dense", "sparse", "auto")


@dataclass
class BatchChoice:
    """One layer at one expected batch size: the input vectors it saw, the kernel taken, the median
    milliseconds of each kernel tried (empty when nothing was timed)."""

    batch: int
    positions: int
    kernel: str
    times_ms: dict[str, float] = field(default_factory=dict)
    input_shape: list[int] = field(default_factory=list)


@dataclass
class LayerChoice:
    name: str
    kind: str
    shape: list[int]
    density: float
    choices: list[BatchChoice] = field(default_factory=list)
    note: str = ""


@dataclass
class RuntimePlan:
    """Every converted layer's choices; ``to_dict`` is what ``benchmark --json`` reports. ``numba``: whether
    the numba kernels were available; ``numba_ready_s``: seconds this conversion spent compiling them or
    loading them from numba's cache (0 once a process has them)."""

    mode: str
    int8: bool
    batch_sizes: list[int]
    threads: int
    layers: list[LayerChoice] = field(default_factory=list)
    numba: bool = False
    numba_ready_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layer(self, name: str) -> Optional[LayerChoice]:
        return next((layer for layer in self.layers if layer.name == name), None)

    def kernels(self) -> Mapping[str, list[str]]:
        return {layer.name: [c.kernel for c in layer.choices] for layer in self.layers}
