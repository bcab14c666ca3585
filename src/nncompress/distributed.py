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

The helpers live beside this module, one job each: ``distributed_group``
(the process group, ``local``, ``barrier``), ``distributed_data`` (shares,
sums, gradients, buffers, random streams), ``distributed_share`` (rank 0
decides: ``on_main``, ``broadcast_bytes``) and ``distributed_checks``
(``check_identical``); every name is importable from here, as callers do.
"""

from __future__ import annotations

from nncompress.distributed_group import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from nncompress.distributed_group import TIMEOUT_ENV as TIMEOUT_ENV
from nncompress.distributed_group import active as active
from nncompress.distributed_group import barrier as barrier
from nncompress.distributed_group import init_from_env as init_from_env
from nncompress.distributed_group import is_main as is_main
from nncompress.distributed_group import launched as launched
from nncompress.distributed_group import local as local
from nncompress.distributed_group import rank as rank
from nncompress.distributed_group import shutdown as shutdown
from nncompress.distributed_group import timeout_seconds as timeout_seconds
from nncompress.distributed_group import world_size as world_size
from nncompress.distributed_data import BUCKET_BYTES as BUCKET_BYTES
from nncompress.distributed_data import all_sum as all_sum
from nncompress.distributed_data import average_gradient as average_gradient
from nncompress.distributed_data import average_gradients as average_gradients
from nncompress.distributed_data import fork_rng as fork_rng
from nncompress.distributed_data import shard as shard
from nncompress.distributed_data import span as span
from nncompress.distributed_data import sync_buffers as sync_buffers
from nncompress.distributed_data import sync_rng as sync_rng
from nncompress.distributed_share import broadcast_bytes as broadcast_bytes
from nncompress.distributed_share import on_main as on_main
from nncompress.distributed_checks import check_identical as check_identical
from nncompress.distributed_checks import model_tensors as model_tensors

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
