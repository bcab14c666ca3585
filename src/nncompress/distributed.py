"""Runs on several processes (``torchrun``): the process group and the few collectives the loops need.

Every rank executes the same program on the same weights: the training loop
splits each batch across the ranks and averages the gradients, evaluation
splits each split and sums the figures, so every rank takes the same
decisions from the same numbers. Rank 0 alone touches the run's files
(``on_main``) and hands what it read or decided to the others. Outside
``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment, or no process group
started) every helper here is a no-op and the code paths are those of a
single process.

A rank that dies or stops answering ends the run with ``DistributedError``
once the collective timeout passes (``NNCOMPRESS_DIST_TIMEOUT`` seconds,
default 900), not with a hang; the journal keeps the last finished epoch.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, cast

import torch
from torch import nn

from nncompress.errors import DistributedError, NNCompressError, RankMismatchError

__all__ = [
    "DEFAULT_TIMEOUT",
    "active",
    "all_sum",
    "average_gradients",
    "barrier",
    "broadcast_bytes",
    "check_identical",
    "fork_rng",
    "init_from_env",
    "is_main",
    "launched",
    "local",
    "on_main",
    "rank",
    "shard",
    "shutdown",
    "span",
    "sync_buffers",
    "sync_rng",
    "timeout_seconds",
    "world_size",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_TIMEOUT = 900.0
TIMEOUT_ENV = "NNCOMPRESS_DIST_TIMEOUT"
#: gradients are all-reduced in buckets of about this many bytes: one flat copy of the whole model is never made
BUCKET_BYTES = 25 * 2**20

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


# -- data parallel helpers -------------------------------------------------------


def span(n: int) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of n items (shares differ by at most one)."""
    if not active():
        return 0, n
    w, r = world_size(), rank()
    return n * r // w, n * (r + 1) // w


def shard(items: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a 1-D tensor (e.g. one batch's example indices)."""
    lo, hi = span(len(items))
    return items[lo:hi]


def all_sum(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks, in rank order and in float64, so every rank gets the same bits."""
    if not active():
        return [float(v) for v in values]
    mine = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    with _guard("summing figures over the ranks"):
        _dist().all_gather(parts, mine)
    total = parts[0].clone()
    for part in parts[1:]:
        total += part
    return [float(v) for v in total.cpu()]


def _buckets(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (
            size + t.numel() * t.element_size() > BUCKET_BYTES
            or t.dtype != bucket[0].dtype
            or t.device != bucket[0].device
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel() * t.element_size()
    if bucket:
        yield bucket


def _sum_in_place(tensors: Sequence[torch.Tensor], what: str) -> None:
    """All-reduce (sum) ``tensors`` in place, a bucket of them at a time."""
    dist, device = _dist(), _comm_device()
    for bucket in _buckets(tensors):
        if len(bucket) == 1 and bucket[0].is_contiguous() and bucket[0].device == device:
            with _guard(what):  # a tensor of a bucket's size or more: reduced where it lies, not copied
                dist.all_reduce(bucket[0])
            continue
        flat = torch.cat([t.reshape(-1) for t in bucket]).to(device)
        with _guard(what):
            dist.all_reduce(flat)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


@torch.no_grad()
def average_gradient(grad: torch.Tensor, weight: float) -> None:
    """One gradient (or a block of one) replaced by the sum over the ranks of ``weight`` x its
    local value, where it lies: for steps taken inside backward, one layer at a time, every
    rank reducing the same tensors in the same order."""
    if not active():
        return
    grad.mul_(weight)
    _sum_in_place([grad], "averaging gradients")


@torch.no_grad()
def average_gradients(params: Sequence[nn.Parameter], weight: float, uneven: bool = False) -> None:
    """Replace each gradient by the sum over the ranks of ``weight`` x its local value: with
    ``weight`` = local examples / batch examples this is the gradient of the whole batch's mean
    loss. ``uneven``: some rank had no examples, so gradients that exist anywhere are made to
    exist everywhere first (a parameter no rank touched keeps ``None``)."""
    if not active():
        return
    if uneven:
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=_comm_device())
        with _guard("averaging gradients"):
            _dist().all_reduce(flags)
        for p, flag in zip(params, flags.tolist(), strict=True):
            if flag and p.grad is None:
                p.grad = torch.zeros_like(p)
    grads = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.to_dense()
        p.grad.mul_(weight)
        grads.append(p.grad)
    _sum_in_place(grads, "averaging gradients")


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Average the floating buffers (BatchNorm running statistics): each rank saw its own examples."""
    if not active():
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    _sum_in_place(buffers, "averaging BatchNorm statistics")
    for b in buffers:
        b.div_(world_size())


def sync_rng() -> None:
    """Every rank takes rank 0's global RNG state: what it saves is then what every rank holds."""
    if not active():
        return
    dist, device = _dist(), _comm_device()
    state = torch.get_rng_state().to(device)
    with _guard("sharing the random state"):
        dist.broadcast(state, 0)
    torch.set_rng_state(state.cpu())
    if device.type == "cuda":
        cuda_state = torch.cuda.get_rng_state().to(device)
        with _guard("sharing the random state"):
            dist.broadcast(cuda_state, 0)
        torch.cuda.set_rng_state(cuda_state.cpu())


def fork_rng() -> None:
    """Ranks other than 0 leave the common random stream for one of their own (dropout masks differ
    between the ranks' examples), derived from the common state and the rank, so a resumed run draws
    the same. Rank 0 keeps the common stream, which ``sync_rng`` hands back to all."""
    if not active() or is_main():
        return
    digest = hashlib.blake2b(
        torch.get_rng_state().numpy().tobytes() + rank().to_bytes(4, "little"), digest_size=8
    ).digest()
    torch.manual_seed(int.from_bytes(digest, "little") >> 1)


# -- rank 0 decides, the others follow ---------------------------------------------


def broadcast_bytes(data: Optional[bytes]) -> bytes:
    """Rank 0's ``data`` on every rank (the others pass None)."""
    if not active():
        return data or b""
    dist, device = _dist(), _comm_device()
    size = torch.tensor([len(data) if is_main() and data is not None else 0], dtype=torch.int64, device=device)
    with _guard("receiving rank 0's data"):
        dist.broadcast(size, 0)
    n = int(size.item())
    if is_main():
        buf = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8) if n else torch.empty(0, dtype=torch.uint8)
        buf = buf.to(device)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=device)
    if n:
        with _guard("receiving rank 0's data"):
            dist.broadcast(buf, 0)
    return bytes(buf.cpu().numpy().tobytes()) if n else b""


def _error_types() -> dict[str, type]:
    """Our own exception classes by name: a failure on rank 0 is raised as the same type elsewhere."""
    found: dict[str, type] = {}
    todo: list[type] = [NNCompressError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 alone (files: checks, reads, writes) and give every rank its result.

    The result must be JSON (or bytes, or None); the other ranks get a JSON copy. An
    ``NNCompressError`` raised on rank 0 is raised on every rank with the same type and
    message, so no rank waits for one that has stopped. Single process: ``fn()``."""
    if not active():
        return fn()
    header: dict[str, Any] = {}
    payload = b""
    result: Any = None
    failure: Optional[BaseException] = None
    if is_main():
        try:
            with local():
                result = fn()
            if isinstance(result, (bytes, bytearray)):
                header, payload = {"kind": "bytes"}, bytes(result)
            else:
                header, payload = {"kind": "json"}, json.dumps(result).encode()
        except Exception as exc:
            failure = exc
            header = {
                "kind": "error",
                "type": type(exc).__name__,
                "message": str(exc),
                "ours": isinstance(exc, NNCompressError),
            }
    head = json.loads(broadcast_bytes(json.dumps(header).encode() if is_main() else None).decode())
    if head["kind"] == "error":
        if failure is not None:
            raise failure
        cls = _error_types().get(head["type"]) if head["ours"] else None
        if cls is None:
            raise DistributedError(f"rank 0 stopped: {head['type']}: {head['message']}")
        raise cls(head["message"])
    data = broadcast_bytes(payload if is_main() else None)
    if is_main():
        return result
    return cast(T, data) if head["kind"] == "bytes" else json.loads(data.decode())  # bytes: rank 0's T was bytes


# -- checks ----------------------------------------------------------------------


def _digest(t: torch.Tensor) -> int:
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    raw = flat.view(torch.uint8).numpy().data if flat.numel() else b""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little", signed=True)


def check_identical(tensors: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """Raise ``RankMismatchError`` unless every rank holds the very same bytes in ``tensors``
    (a checksum per tensor, gathered from every rank). One pass over the bytes, no copies kept."""
    if not active():
        return
    names, sums = [], []
    for name, t in tensors:
        names.append(name)
        sums.append(_digest(t))
    mine = torch.tensor(sums + [len(sums)], dtype=torch.int64, device=_comm_device())
    count = torch.tensor([mine.numel()], dtype=torch.int64, device=_comm_device())
    counts = [torch.empty_like(count) for _ in range(world_size())]
    with _guard(f"checking {what}"):
        _dist().all_gather(counts, count)
    if len({int(c.item()) for c in counts}) != 1:
        raise RankMismatchError(
            f"{what}: the ranks hold different numbers of tensors ({[int(c.item()) - 1 for c in counts]})"
        )
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    with _guard(f"checking {what}"):
        _dist().all_gather(parts, mine)
    differ = sorted({names[i] for part in parts[1:] for i in range(len(names)) if int(part[i]) != int(parts[0][i])})
    if differ:
        raise RankMismatchError(
            f"{what} differ between the ranks in {len(differ)} tensor(s) "
            f"({', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''}); the ranks did "
            "not compute the same thing (different data, code or library versions on the "
            "nodes?)"
        )


def model_tensors(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """The model's parameters and buffers, named, for ``check_identical``."""
    for name, t in model.state_dict(keep_vars=False).items():
        yield prefix + name, t
