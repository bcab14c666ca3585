"""Resumable runs: every training loop saves its state after each epoch.

A compression run is a chain of ``fit`` calls (training, each pruning step's
fine-tuning, centroid tuning) joined by cheap, deterministic code (masks,
evaluation, k-means, coding). The journal numbers the ``fit`` calls of a run
and, after every epoch, writes the model, the optimizer, every RNG state and
any registered extra state (codebooks) to ``DIR/state/fit-NNNN.pt``. A resumed
run executes the same code again: each ``fit`` call found complete in the
journal loads its saved end state instead of training, the one found half
done continues from its last epoch, so the run reaches the same weights — and
the same output bytes — as one that was never interrupted. Only the latest
epoch of each call is kept.

Each entry also holds a fingerprint of the weights the call started from; a
resumed run that arrives at a call with other weights (another recipe, other
data, another checkpoint) stops with an error instead of mixing two runs.

Under torchrun only rank 0 reads and writes the folder: it sends the saved
entry's bytes to every rank, so rank 0's state restores them all (the other
ranks need no copy of the folder, as on other nodes).
"""

from __future__ import annotations

import ast
import hashlib
import io
import logging
import random
from pathlib import Path
from typing import Any, Callable, Optional, cast

import numpy as np
import torch
from torch import nn

from nncompress import distributed
from nncompress.atomic import atomic_open
from nncompress.errors import CheckpointError

log = logging.getLogger(__name__)

ExtraGet = Callable[[], dict[str, torch.Tensor]]
ExtraSet = Callable[[dict[str, torch.Tensor]], None]


class RunStateError(CheckpointError):
    """The run directory's saved state does not belong to this run."""


def fingerprint(model: nn.Module) -> str:
    """sha256 over the names, shapes and bytes of the model's tensors."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    # the legacy tuple: numpy's global generator is a Mersenne Twister
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": repr(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
            "name": str(np_state[0]),
        },
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(ast.literal_eval(state["python"]))  # a tuple of ints: literal_eval, never eval
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def _read(path: Path) -> bytes:
    """A saved entry's bytes; none when it is missing or cannot be read (the call is trained again)."""
    try:
        return path.read_bytes() if path.exists() else b""
    except OSError as exc:
        log.warning("saved state %s is unreadable (%s); training that call again", path, exc)
        return b""


class Journal:
    """The saved state of one run directory (see the module docstring)."""

    def __init__(self, directory: str | Path, *, resume: bool) -> None:
        self.directory = Path(directory) / "state"
        self._next = 0
        self._extra: dict[str, tuple[ExtraGet, ExtraSet]] = {}
        self.resumed_calls = 0
        distributed.on_main(lambda: self._open(Path(directory), resume))

    def _open(self, directory: Path, resume: bool) -> None:
        self._sweep(".fit-*.tmp")  # what a kill -9 in the middle of a write left
        existing = sorted(self.directory.glob("fit-*.pt")) if self.directory.is_dir() else []
        if existing and not resume:
            raise RunStateError(
                f"{directory} already holds a run ({len(existing)} saved training calls); "
                "continue it with --resume, or give another --run-dir"
            )

    @property
    def calls(self) -> int:
        """Training calls this run has made so far."""
        return self._next

    def _sweep(self, pattern: str) -> None:
        for path in self.directory.glob(pattern) if self.directory.is_dir() else []:
            path.unlink()

    def clear(self) -> None:
        """Drop the saved state once the run has finished: it is only for resuming (rank 0)."""
        if not distributed.is_main():
            return
        self._sweep("fit-*.pt")
        self._sweep(".fit-*.tmp")
        if self.directory.is_dir() and not any(self.directory.iterdir()):
            self.directory.rmdir()

    def register(self, name: str, get: ExtraGet, set_: ExtraSet) -> None:
        """Extra state (beyond the model) that the next fit calls change, e.g. codebooks."""
        self._extra[name] = (get, set_)

    def unregister(self, name: str) -> None:
        self._extra.pop(name, None)

    def _path(self, call: int) -> Path:
        return self.directory / f"fit-{call:04d}.pt"

    def begin(
        self,
        model: nn.Module,
        opt: Optional[torch.optim.Optimizer],
        generator: torch.Generator,
        epochs: int,
        task: str,
        settings: str = "",
    ) -> tuple[int, list[float]]:
        """Start the next fit call: (epochs already done, their losses); the model,
        optimizer and RNGs are set to where the saved call stopped. ``settings``
        (the training recipe, as text) must match too: a call that starts from the
        same weights at another rate is another call."""
        call = self._next
        self._next += 1
        self._current = (call, fingerprint(model), task, epochs, settings)
        path = self._path(call)
        raw = distributed.on_main(lambda: _read(path))
        if not raw:
            return 0, []
        try:
            saved = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        except Exception as exc:
            log.warning("saved state %s is unreadable (%s); training call %d again", path, exc, call)
            return 0, []
        if (
            saved.get("before") != self._current[1]
            or saved.get("task") != task
            or saved.get("epochs") != epochs
            or saved.get("settings", "") != settings
        ):
            raise RunStateError(
                f"{path} was saved by a different run (training call {call}, '{saved.get('task')}', "
                "started from other weights or settings); resume with the same checkpoint, data and "
                "recipe, or give another --run-dir"
            )
        model.load_state_dict(saved["model"])
        if opt is not None and saved.get("opt") is not None:
            opt.load_state_dict(saved["opt"])
        generator.set_state(saved["generator"])
        _set_rng_state(saved["rng"])
        for name, (_, set_) in self._extra.items():
            if name in saved["extra"]:
                set_(saved["extra"][name])
        self.resumed_calls += 1
        log.info("resumed training call %d (%s) after epoch %d of %d", call, task, saved["epoch"], epochs)
        return int(saved["epoch"]), [float(x) for x in saved["losses"]]

    def epoch_done(
        self,
        epoch: int,
        model: nn.Module,
        opt: Optional[torch.optim.Optimizer],
        generator: torch.Generator,
        losses: list[float],
    ) -> None:
        """Write the state after ``epoch`` epochs of the current call (atomically; rank 0 only)."""
        if not distributed.is_main():
            return
        call, before, task, epochs, settings = self._current
        entry = {
            "before": before,
            "task": task,
            "epochs": epochs,
            "settings": settings,
            "epoch": epoch,
            "losses": list(losses),
            # saved before anything can change it, so no copy (a second model in memory) is needed
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            # a finished call is only ever loaded, never continued: no optimizer state needed
            "opt": opt.state_dict() if opt is not None and epoch < epochs else None,
            "generator": generator.get_state(),
            "rng": _rng_state(),
            "extra": {name: get() for name, (get, _) in self._extra.items()},
        }
        with atomic_open(self._path(call), "wb") as handle:
            torch.save(entry, handle)
