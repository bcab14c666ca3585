"""Progress reporting without printing: library code calls a callback.

The CLI turns these events into progress bars on a terminal, or into occasional plain
lines when stderr is a file or a pipe (a log must not fill with carriage returns and
cursor codes); tests can record them.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TextIO

log = logging.getLogger(__name__)


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


UNIT = {
    "train": "epoch",
    "fine-tune": "epoch",
    "probe": "epoch",
    "centroids": "epoch",
    "k-means": "layer",
    "coding": "tensor",
}


def _shown(info: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in info.items()}


def _tqdm() -> Any:
    """tqdm's bar class, or None: tqdm is the optional ``progress`` extra."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@dataclass
class _Task:
    """What a line-mode task has shown so far."""

    total: int
    done: int
    first: int  # done at the first event (which comes when a unit has finished, not before)
    started: float
    shown_at: float
    decile: int


class ProgressLines:
    """A progress callback that writes plain lines: one when a task starts, one when it ends,
    and between them at most one per ``interval`` seconds and per tenth of the task. For logs,
    pipes and terminals without tqdm."""

    def __init__(
        self, stream: Optional[TextIO] = None, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.tasks: dict[str, _Task] = {}

    def __call__(self, event: Progress) -> None:
        now = self.clock()
        total = max(1, event.total)
        decile = min(10, 10 * max(0, event.done) // total)
        task = self.tasks.get(event.task)
        fresh = task is None or event.done < task.done or task.total != event.total
        if task is None or fresh:
            task = self.tasks[event.task] = _Task(event.total, event.done, event.done, now, now, decile)
        finished = event.done >= event.total
        due = now - task.shown_at >= self.interval and decile > task.decile
        task.done = event.done
        if fresh or finished or due:
            task.shown_at, task.decile = now, decile
            self._line(event, now - task.started, event.done - task.first)
        if finished:
            del self.tasks[event.task]

    def _line(self, event: Progress, elapsed: float, units: int) -> None:
        """``elapsed`` seconds since the task's first event, ``units`` done since then."""
        unit = UNIT.get(event.task, "step") + ("" if event.total == 1 else "s")
        pct = 100 * max(0, event.done) / max(1, event.total)
        text = f"{event.task}: {event.done}/{event.total} {unit} ({pct:.0f} %)"
        if units > 0:
            text += f", {elapsed:.1f} s"
            if event.done < event.total:
                text += f", about {elapsed / units * (event.total - event.done):.0f} s left"
        shown = _shown(event.info)
        if shown:
            text += " " + " ".join(f"{k}={v}" for k, v in shown.items())
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def close(self) -> None:
        self.tasks.clear()


class ProgressBars:
    """A progress callback for people: tqdm bars on stderr, one per task, when stderr is a terminal
    and tqdm is installed; otherwise ``ProgressLines``. A task restarting at 1 gets a fresh bar.
    The CLI uses it (``--quiet``: ``enabled=False``), and Python users get it with ``progress=True``."""

    POSITION = {"prune": 0, "sensitivity": 0, "train": 0, "fine-tune": 1}
    UNIT = UNIT

    def __init__(self, enabled: bool, stream: Optional[TextIO] = None, *, interval: float = 10.0) -> None:
        self.enabled = enabled
        self.stream = stream
        self.interval = interval
        self.bars: dict[str, Any] = {}
        self.lines: Optional[ProgressLines] = None
        self.tqdm: Any = None
        self.decided = False

    def _decide(self) -> None:
        """Bars or lines, chosen at the first event (by then the CLI's stderr is the one in use)."""
        self.decided = True
        stream = self.stream or sys.stderr
        self.tqdm = _tqdm() if _is_terminal(stream) else None
        if self.tqdm is None:
            if _is_terminal(stream):
                log.info("tqdm is not installed: progress as plain lines (pip install 'nncompress[progress]' for bars)")
            self.lines = ProgressLines(self.stream, interval=self.interval)

    def __call__(self, event: Progress) -> None:
        if not self.enabled:
            return
        if not self.decided:
            self._decide()
        if self.lines is not None:
            self.lines(event)
            return
        bar = self.bars.get(event.task)
        if bar is None or event.done <= bar.n or bar.total != event.total:
            if bar is not None:
                bar.close()
            nested = self.POSITION.get(event.task, 0) > 0
            bar = self.tqdm(
                total=event.total,
                desc=event.task,
                position=self.POSITION.get(event.task, 0),
                leave=not nested,
                file=self.stream or sys.stderr,
                dynamic_ncols=True,
                unit=self.UNIT.get(event.task, "step"),
            )
            self.bars[event.task] = bar
        bar.update(event.done - bar.n)
        shown = _shown(event.info)
        if shown:
            bar.set_postfix(shown, refresh=False)
        if event.done >= event.total:
            bar.close()
            del self.bars[event.task]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        if self.lines is not None:
            self.lines.close()
