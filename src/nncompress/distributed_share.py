"""Rank 0 decides, the others follow: its bytes or its result (or its error) handed to every rank."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, TypeVar, cast

import torch

from nncompress.distributed_group import _comm_device, _dist, _guard, active, is_main, local
from nncompress.errors import DistributedError, NNCompressError

T = TypeVar("T")


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
