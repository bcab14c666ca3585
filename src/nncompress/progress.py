"""Progress reporting without printing: library code calls a callback.

The CLI turns these events into progress bars; tests can record them.
"""
from __future__ import annotations

import sys
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


class ProgressBars:
    """A progress callback that draws tqdm bars on stderr, one per task; a task restarting at 1 gets a
    fresh bar. The CLI uses it, and Python users get it with ``progress=True``."""

    POSITION = {"prune": 0, "sensitivity": 0, "train": 0, "fine-tune": 1}
    UNIT = {"train": "epoch", "fine-tune": "epoch", "probe": "epoch", "centroids": "epoch", "k-means": "layer",
            "coding": "tensor"}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        bar = self.bars.get(event.task)
        if bar is None or event.done <= bar.n or bar.total != event.total:
            if bar is not None:
                bar.close()
            nested = self.POSITION.get(event.task, 0) > 0
            bar = tqdm(total=event.total, desc=event.task, position=self.POSITION.get(event.task, 0),
                       leave=not nested, file=sys.stderr, dynamic_ncols=True,
                       unit=self.UNIT.get(event.task, "step"))
            self.bars[event.task] = bar
        bar.update(event.done - bar.n)
        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in event.info.items()}
        if shown:
            bar.set_postfix(shown, refresh=False)
        if event.done >= event.total:
            bar.close()
            del self.bars[event.task]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
