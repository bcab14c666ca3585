"""The run directory: everything one compression run leaves behind.

Layout (each file written atomically, so an interrupted run leaves only
complete files; ``nncompress report DIR`` reads them):

    run.json          how the run was started: command, checkpoint, output file, resolved recipe
    recipe.yaml       the resolved recipe, every key explicit
    environment.json  versions, platform, threads, command line
    sensitivity.csv   per-layer validation accuracy against q (and .png)
    steps.jsonl       one line per pruning step
    histograms.json   weight histograms per layer: dense, pruned, shared
    summary.json      the compressed file's table and the accuracies
    state/            the journal: training state after every epoch (for --resume; dropped when the run ends)

Under torchrun rank 0 alone checks, reads and writes the folder; the other
ranks get what it read (``distributed.on_main``) and write nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from nncompress import __version__, distributed
from nncompress.atomic import write_text
from nncompress.errors import ConfigError
from nncompress.jsonfile import load_json_file
from nncompress.train.journal import Journal, RunStateError

RUN_FILE = "run.json"
#: Every name a run writes in its folder (pipeline.run_recipe and compress_model); "state" is the
#: journal's folder. The CLI refuses outputs (a report, --out) that would land on one of them.
RUN_FILES = (
    RUN_FILE,
    "recipe.yaml",
    "environment.json",
    "sensitivity.csv",
    "sensitivity.png",
    "steps.jsonl",
    "histograms.json",
    "summary.json",
    "base.pt",
    "state",
)


def new_run_dir(root: str | Path = "runs") -> Path:
    """A fresh timestamped folder under ``root`` (suffixed when two runs start in the same second);
    made by rank 0 under torchrun, and the same path on every rank."""
    return Path(distributed.on_main(lambda: str(_new_run_dir(root))))


def _new_run_dir(root: str | Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    for n in range(1000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not make a fresh run folder under {root}; give --run-dir")


def environment(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """What a reader needs to repeat the run: versions, machine, threads, command line."""
    return {
        "nncompress": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }


class RunDir:
    """Paths and writers of one run directory, and its journal."""

    def __init__(self, path: str | Path, *, resume: bool = False) -> None:
        self.path = Path(path)
        distributed.on_main(lambda: self._open(resume))
        self.resume = resume
        self.journal = Journal(self.path, resume=resume)
        self._steps: list[str] = []

    def _open(self, resume: bool) -> None:
        """The checks and the folder: rank 0's job."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--run-dir {self.path} is a file, not a folder")
        if resume and not (self.path / RUN_FILE).is_file():
            raise RunStateError(f"{self.path} holds no run to resume (no {RUN_FILE}); start it without --resume")
        if resume and (self.path / "summary.json").is_file() and not (self.path / "state").is_dir():
            raise RunStateError(
                f"the run in {self.path} has finished; nothing to resume "
                f"(`nncompress report {self.path} --out REPORT.html` writes its report)"
            )
        if not resume and (self.path / RUN_FILE).is_file():
            raise RunStateError(
                f"{self.path} already holds a run; continue it with --resume, or give another --run-dir"
            )
        if not resume and self.path.is_dir() and any(self.path.iterdir()):
            raise ConfigError(
                f"--run-dir {self.path} is not empty and holds no run: give a new or empty folder "
                "(a run writes summary.json, model.nnc, ... there)"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        if resume:
            for stale in self.path.glob(".*.tmp"):  # an atomic write that a kill -9 cut short
                if stale.is_file():
                    stale.unlink()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """Write one file of the run atomically (rank 0 only under torchrun)."""
        if distributed.is_main():
            write_text(self.file(name), text)

    def read_run(self) -> dict[str, Any]:
        return distributed.on_main(self._read_run)

    def _read_run(self) -> dict[str, Any]:
        try:
            data = load_json_file(self.file(RUN_FILE), RunStateError)
        except RunStateError as exc:
            raise RunStateError(f"cannot read {self.file(RUN_FILE)}: {exc}") from None
        if not isinstance(data, dict):
            raise RunStateError(f"{self.file(RUN_FILE)} is not a JSON object")
        return data

    def check_same_run(self, started: Mapping[str, Any]) -> None:
        """A resumed run must be the run that was started here: same inputs, same recipe."""
        saved = self.read_run()
        differ = sorted(k for k in started if saved.get(k) != started[k])
        if differ:
            raise RunStateError(
                f"{self.path} was started with other {', '.join(differ)} ({RUN_FILE}); resume it "
                "with the same settings, or give another --run-dir"
            )
        threads = saved.get("torch_threads")
        if isinstance(threads, int) and threads > 0 and threads != torch.get_num_threads():
            torch.set_num_threads(threads)  # results depend on the thread count: keep the run's

    def on_step(self, record: Mapping[str, Any]) -> None:
        """Append one pruning step; the file is rewritten whole so it is never half a line."""
        self._steps.append(json.dumps(dict(record)))
        self.write_text("steps.jsonl", "\n".join(self._steps) + "\n")
