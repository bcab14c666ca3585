"""Progress reporting without printing: library code calls a callback.

The CLI turns these events into progress bars; tests can record them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Progress:
    """One tick of a long task: ``done`` of ``total`` units of ``task``."""

    task: str
    done: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]


def report(callback: Optional[ProgressFn], task: str, done: int, total: int, **info: Any) -> None:
    if callback is not None:
        callback(Progress(task, done, total, info))
