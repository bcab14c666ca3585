"""Turn a decoded (dense, pruned) model into one that runs each layer on its fastest kernel.

Per layer and per expected batch size the candidates are the dense layer (or its
int8 version), torch's CSR (MKL) and, with numba installed, the numba kernels
(``blocked.py``; the codebook form too where the layer has at most 256 distinct
values). ``auto`` times them on an input of the layer's real size and keeps a sparse
kernel only where it beats the dense one by ``margin`` in paired rounds
(``choose.py``), so no layer gets slower at a batch size it was asked about.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, Union, cast

import torch
from torch import nn

from nncompress.errors import ConfigError, ModelError
from nncompress.runtime import blocked
from nncompress.runtime.choose import MARGIN, choose
from nncompress.runtime.csr import block_width
from nncompress.runtime.kernels import SparseConv, SparseLinear, density, positions, sparse_conv_supported
from nncompress.runtime.plan import MODES, BatchChoice, LayerChoice, RuntimePlan
from nncompress.runtime.quant import int8_linear
from nncompress.runtime.routed import Routed
from nncompress.runtime.timing import Timer, default_timer

log = logging.getLogger(__name__)

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: The type of a layer in ``LAYERS``.
Layer = Union[nn.Linear, nn.Conv1d, nn.Conv2d]


def check_options(mode: str, batch_sizes: Sequence[int], threads: Optional[int]) -> list[int]:
    """The batch sizes as a sorted list, after refusing what cannot work."""
    if mode not in MODES:
        raise ConfigError(f"runtime must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(batch_sizes, int):
        batch_sizes = [batch_sizes]
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
        raise ConfigError(
            f"batch_sizes must be positive integers (the batch sizes the model will run at), got {batch_sizes!r}"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None (torch's setting), got {threads!r}")
    return sorted(set(sizes))


def input_shapes(
    model: nn.Module, layers: Mapping[str, nn.Module], batch_sizes: Sequence[int], input_shape: Optional[Sequence[int]]
) -> dict[str, dict[int, tuple[int, ...]]]:
    """Per layer and batch size, the shape of the input it receives: from one forward pass on zeros of
    ``(batch, *input_shape)``, else (no shape known) ``(batch, in_features)`` for Linear layers only."""
    seen: dict[str, dict[int, tuple[int, ...]]] = {name: {} for name in layers}
    if input_shape is None:
        for name, layer in layers.items():
            if isinstance(layer, nn.Linear):
                seen[name] = {b: (b, layer.in_features) for b in batch_sizes}
        return seen
    shape = tuple(int(s) for s in input_shape)

    def recorder(name: str, batch: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:  # returns None: the input is left as it is
            seen[name].setdefault(batch, tuple(args[0].shape))

        return hook

    for batch in batch_sizes:
        hooks = [layer.register_forward_pre_hook(recorder(name, batch)) for name, layer in layers.items()]
        try:
            with torch.inference_mode():
                model(torch.zeros((batch, *shape)))
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(
                f"the model does not accept inputs of shape {(batch, *shape)}: "
                f"{(str(exc).splitlines() or [type(exc).__name__])[0]}; give the input shape of one "
                "example (input_shape=, --input-shape)"
            ) from exc
        finally:
            for hook in hooks:
                hook.remove()
    return seen


def _columns(layer: Layer) -> int:
    """Columns of the layer's weight matrix as the sparse kernel multiplies it."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels * math.prod(layer.kernel_size)


def _sparse_kernel(layer: Layer, width: int, engine: str = "mkl", one_thread: bool = False) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return SparseLinear(layer, width, engine, one_thread)
    return SparseConv(layer, width, engine, one_thread)


def numba_engines(layer: Layer) -> list[str]:
    """The numba kernel for ``layer``: none without numba or for non-float32 weights; the codebook form where
    the layer has at most 256 distinct nonzero values (k-means sharing leaves that): as fast, half the bytes."""
    if layer.weight.dtype != torch.float32 or not blocked.available():
        return []
    return ["numba-shared"] if blocked.codebook(layer.weight.detach()) is not None else ["numba"]


def convert_layer(
    name: str,
    layer: Layer,
    shapes: dict[int, tuple[int, ...]],
    mode: str,
    int8: bool,
    timer: Timer,
    margin: float = MARGIN,
) -> tuple[Optional[nn.Module], LayerChoice]:
    """The module to put in ``layer``'s place (None: keep it) and what was chosen."""
    kept = density(layer)
    choice = LayerChoice(name, type(layer).__name__, list(layer.weight.shape), kept)
    linear = isinstance(layer, nn.Linear)
    base_name = "int8" if int8 and linear else "dense"
    base = int8_linear(layer) if base_name == "int8" and isinstance(layer, nn.Linear) else layer
    sparse_ok = mode != "dense" and kept < 1.0 and (linear or sparse_conv_supported(layer))
    notes = []
    if int8 and not linear:
        notes.append("int8 covers Linear layers only: float32")
    if mode != "dense" and kept < 1.0 and not sparse_ok:
        notes.append("no sparse kernel for this layer's padding: dense")
    if sparse_ok and not shapes:
        notes.append("input size unknown (give input_shape): dense")
    engines = numba_engines(layer) if sparse_ok and shapes else []
    if engines:
        blocked.warm_up()
    built: dict[str, nn.Module] = {base_name: base}
    routes: list[tuple[int, str]] = []
    for batch, shape in sorted(shapes.items()):
        x = torch.randn(shape)
        n = positions(x, layer)
        candidates = {base_name: base}
        preferred = base_name
        if sparse_ok:
            cols = _columns(layer)
            width = block_width(cols, n)
            keys = [("csr" if width == cols else f"csr/{width}", "mkl")] + [(engine, engine) for engine in engines]
            if torch.get_num_threads() > 1:  # where waking threads does not pay, one thread may win
                keys += [(f"{engine}/1t", engine) for engine in engines]
            for key, engine in keys:
                if key not in built:
                    built[key] = _sparse_kernel(layer, width, engine, one_thread=key.endswith("/1t"))
                candidates[key] = built[key]
                if not key.endswith("/1t"):
                    preferred = key  # the last: the numba kernel, else the fitted CSR blocks
        times: dict[str, float] = {}
        if mode == "sparse" or len(candidates) == 1:
            pick = preferred
        else:
            result = choose(
                {key: partial(kernel, x) for key, kernel in candidates.items()}, base_name, timer, n, margin=margin
            )
            pick, times = result.pick, result.median_s
        routes.append((n, pick))
        choice.choices.append(
            BatchChoice(batch, n, pick, {k: round(v * 1e3, 4) for k, v in times.items()}, list(shape))
        )
    choice.note = "; ".join(notes)
    picked = {pick for _, pick in routes} or {base_name}
    if picked == {"dense"}:
        return None, choice
    if len(picked) == 1:
        return built[picked.pop()], choice
    in_features = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    return Routed({k: built[k] for k in picked}, routes, in_features), choice


def convert_(
    model: nn.Module,
    mode: str = "auto",
    *,
    batch_sizes: Sequence[int] = (1, 64),
    input_shape: Optional[Sequence[int]] = None,
    int8: bool = False,
    threads: Optional[int] = None,
    timer: Optional[Timer] = None,
    margin: float = MARGIN,
) -> tuple[nn.Module, RuntimePlan]:
    """Replace ``model``'s Linear/Conv1d/Conv2d layers by their chosen kernels, in place; returns the model
    (a new object only when the model itself is one such layer) and the plan. ``threads`` sets torch's
    (process-wide) thread count first, so the timings are those the model will run with."""
    sizes = check_options(mode, batch_sizes, threads)
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    plan = RuntimePlan(mode, bool(int8), sizes, torch.get_num_threads())
    if mode != "dense":
        plan.numba = blocked.available()
        plan.numba_ready_s = round(blocked.warm_up(), 3)
    if mode == "dense" and not int8:
        return model, plan
    layers = {name: cast(Layer, m) for name, m in model.named_modules() if type(m) in LAYERS}
    shapes = input_shapes(model, layers, sizes, input_shape)
    clock: Timer = timer or default_timer
    for name, layer in layers.items():
        new, choice = convert_layer(name, layer, shapes[name], mode, int8, clock, margin)
        plan.layers.append(choice)
        log.info(
            "%s (%.1f %% kept): %s %s",
            name,
            100 * choice.density,
            ", ".join(f"batch {c.batch} -> {c.kernel}" for c in choice.choices),
            choice.note,
        )
        if new is None:
            continue
        if not name:
            model = new
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model, plan
