"""The process group torchrun describes, the guard that turns a failed collective into one error, and ``local``.

What the group is used for is described in ``nncompress.distributed``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Any, Iterator, Optional

import torch

from nncompress.errors import DistributedError

log = logging.getLogger("nncompress.distributed")  # the logger these records always had

DEFAULT_TIMEOUT = 900.0
TIMEOUT_ENV = "NNCOMPRESS_DIST_TIMEOUT"

_local_depth = 0  # > 0 while rank 0 runs alone inside ``on_main``: no collectives then


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def launched() -> bool:
    """Whether this process was started by torchrun (or by hand) as one of several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def timeout_seconds() -> float:
    """The collective timeout: ``NNCOMPRESS_DIST_TIMEOUT`` seconds, default 900."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def _initialized() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def active() -> bool:
    """Whether collectives run now: a process group of more than one rank, outside ``on_main``."""
    return _local_depth == 0 and _initialized() and _dist().get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if _initialized() else 0


def world_size() -> int:
    return _dist().get_world_size() if _initialized() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files, logs and progress bars."""
    return rank() == 0


def init_from_env(device: Optional[str] = None, timeout: Optional[float] = None) -> bool:
    """Start the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...):
    NCCL when CUDA is there and ``device`` is not "cpu", gloo otherwise. Returns whether it
    started one (False for a single process, or when one runs already)."""
    if not launched() or _initialized():
        return False
    dist = _dist()
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; run on one process")
    seconds = timeout if timeout is not None else timeout_seconds()
    cuda = torch.cuda.is_available() and (device is None or not str(device).startswith("cpu"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"could not start the {backend} process group (rank {os.environ.get('RANK')} of "
            f"{os.environ.get('WORLD_SIZE')}): {_first_line(exc)}; check MASTER_ADDR/"
            "MASTER_PORT or the torchrun --rdzv-endpoint"
        ) from exc
    log.info("rank %d of %d (%s, timeout %g s)", dist.get_rank(), dist.get_world_size(), backend, seconds)
    return True


def shutdown() -> None:
    """Tear the process group down (library use; the command line leaves without it, see cli.main)."""
    if _initialized():
        _dist().destroy_process_group()


def _first_line(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.split(". This is typically caused")[0]  # gloo's advice after the cause


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    """A collective that fails (a peer gone, a timeout) becomes one clear error."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
        raise DistributedError(
            f"rank {rank()} of {world_size()}: {what} failed: another rank stopped or did not answer within "
            f"{timeout_seconds():g} s ({_first_line(exc)}); a run folder keeps the state of the last finished "
            "epoch for --resume"
        ) from exc


def _comm_device() -> torch.device:
    """Where collective buffers live: the current GPU for NCCL, the CPU for gloo."""
    if _dist().get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Code that runs on one rank alone (rank 0 inside ``on_main``): collectives are off."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def barrier(what: str = "barrier") -> None:
    if active():
        with _guard(what):
            _dist().barrier()
