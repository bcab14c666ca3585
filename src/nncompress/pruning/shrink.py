"""Physically remove dead neurons from a sequential model, only where that is exact.

Between two consecutive layers ``a`` and ``b`` of an ``nn.Sequential``, a unit
(output feature or channel) of ``a`` is removed when

- all its outgoing weights in ``b`` are pruned: nothing it outputs reaches
  ``b``, whatever sits between them, as long as every module between acts on
  each unit separately (elementwise activations, dropout, per-channel
  BatchNorm, pooling over space, a Flatten); or
- all its incoming weights are pruned: it then outputs a constant (its
  activated bias), which is folded into ``b``'s bias. That is exact only when
  the constant stays one constant on its way to ``b``: not through an average
  pool that counts zero padding, and not into a convolution that pads with
  zeros (a constant channel convolved with zero padding differs at the borders).

Exactness is about eval mode (BatchNorm with its running statistics, dropout
off). Where a rule does not hold the units stay, and the report says where and
why. Models that are not plain ``nn.Sequential`` (residual nets, anything with
its own ``forward``) are left alone: without the call graph nothing can be
proven exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from torch import nn

log = logging.getLogger(__name__)

_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear, *_CONV)
_BN: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
}
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_MAX_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_BatchNorm = Union[nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]
_Conv = Union[nn.Conv1d, nn.Conv2d, nn.Conv3d]
_Layer = Union[nn.Linear, _Conv]
_AvgPool = Union[nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d]


@dataclass(frozen=True)
class ShrinkReport:
    removed: dict[str, int]  # layer name -> output units removed
    sizes: dict[str, tuple[int, int]]  # layer name -> (in, out) units after removal
    applicable: bool = True
    reason: str = ""  # where and why removal did not apply (all of ``kept``, joined)
    kept: dict[str, str] = field(default_factory=dict)  # layer name -> why its dead units (if any) stay


@dataclass
class _Link:
    """Two consecutive layers and what lies between them."""

    a: str
    b: str
    between: list[tuple[str, nn.Module]]
    unit_major: bool  # after a Flatten, a conv's units own contiguous runs of b's inputs; a Linear's interleave
    flattened: bool
    pool_note: str = ""  # an average pool between that does not keep a constant channel constant
    pad_note: str = ""  # b pads with zeros, so only a zero channel folds into its bias


def _units(m: _Layer) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _fan_in(m: _Layer) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _zero_padded(m: _Conv) -> bool:
    """Whether convolution ``m`` pads its input with zeros somewhere."""
    if m.padding_mode != "zeros":
        return False  # reflect/replicate/circular padding of a constant map is that constant
    if isinstance(m.padding, str):
        return m.padding == "same" and any(k > 1 for k in m.kernel_size)
    return any(p != 0 for p in m.padding)


def _avg_pool_keeps_constants(m: _AvgPool) -> bool:
    padding = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    return m.divisor_override is None and (not m.count_include_pad or all(p == 0 for p in padding))


def _link(items: list[tuple[str, nn.Module]], ia: int, ib: int) -> Union[_Link, str]:
    """How units of layer ``ia`` reach layer ``ib``, or why that cannot be followed exactly."""
    (a, la), (b, lb) = items[ia], items[ib]
    assert isinstance(la, _LAYERS) and isinstance(lb, _LAYERS)  # _links passes the indices of layers only
    for name, layer in ((a, la), (b, lb)):
        if isinstance(layer, _CONV) and layer.groups != 1:
            return (
                f"{name} is a grouped convolution (groups={layer.groups}): removing channels of {a} would "
                "unbalance its groups"
            )
    conv_a = isinstance(la, _CONV)
    flattened, pool_note, pad_note = False, "", ""
    between = items[ia + 1 : ib]
    for name, m in between:
        kind = f"{name} ({type(m).__name__})"
        if isinstance(m, _ELEMENTWISE + _DROPOUT) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
            continue
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            flattened = True
            continue
        if not conv_a and not flattened and isinstance(m, nn.BatchNorm1d) and m.num_features == _units(la):
            continue  # Linear outputs (batch, features): BatchNorm1d normalises each feature
        if conv_a and not flattened:
            if type(m) is _BN[type(la)] and m.num_features == _units(la):
                continue
            if isinstance(m, _MAX_POOLS + _ADAPTIVE_AVG) and not getattr(m, "return_indices", False):
                continue
            if isinstance(m, _AVG_POOLS):
                if not _avg_pool_keeps_constants(m):
                    pool_note = pool_note or (
                        f"{kind} averages zero padding (or a fixed divisor) into its border "
                        f"windows, so a constant channel of {a} is not constant after it"
                    )
                continue
        where = "after the Flatten" if flattened else f"on {a}'s output"
        return f"{kind} between {a} and {b} does not act on each unit of {a} separately ({where})"
    if isinstance(lb, nn.Linear):
        if conv_a and not flattened:
            return f"{b} (Linear) acts on the last dimension of {a}'s output, not on its channels"
    else:
        if flattened or not conv_a:
            return f"{b}'s input channels are not {a}'s units ({type(la).__name__} into {type(lb).__name__})"
        if _zero_padded(lb):
            pad_note = (
                f"{b} pads its input with zeros, so a constant channel of {a} does not add a constant at the borders"
            )
    fan, units = _fan_in(lb), _units(la)
    if fan % units or (not flattened and fan != units):
        return f"{b} takes {fan} inputs, which do not map onto the {units} units of {a}"
    return _Link(a, b, between, unit_major=conv_a, flattened=flattened, pool_note=pool_note, pad_note=pad_note)


def _links(model: nn.Sequential) -> tuple[list[_Link], dict[str, str]]:
    items = list(model.named_children())
    idx = [i for i, (_, m) in enumerate(items) if isinstance(m, _LAYERS)]
    links, declined = [], {}
    for ia, ib in zip(idx[:-1], idx[1:], strict=True):
        link = _link(items, ia, ib)
        if isinstance(link, str):
            declined[items[ia][0]] = link
        else:
            links.append(link)
    return links, declined


def _batchnorm_constant(m: _BatchNorm, v: torch.Tensor) -> torch.Tensor:
    if m.running_mean is not None and m.running_var is not None:  # both or neither (track_running_stats)
        v = (v - m.running_mean) / torch.sqrt(m.running_var + m.eps)
    else:
        v = torch.zeros_like(v)  # batch statistics: a constant channel is its own mean
    if m.affine:
        v = v * m.weight + m.bias
    return v


@torch.no_grad()
def _constants(link: _Link, la: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """What each unit of ``a`` outputs when it has no inputs, as it reaches ``b``,
    and whether that output is still one constant there."""
    units = _units(la)
    v = la.bias.detach().clone() if la.bias is not None else torch.zeros(units, dtype=la.weight.dtype)
    constant = torch.ones(units, dtype=torch.bool)
    for _, m in link.between:
        if isinstance(m, _ELEMENTWISE + (nn.PReLU,)):
            v = m(v.clone())
        elif isinstance(m, _BNS):
            v = _batchnorm_constant(m, v)
        elif isinstance(m, _AVG_POOLS) and not _avg_pool_keeps_constants(m):
            constant &= v == 0  # only a zero channel stays uniform when zeros are averaged in
    return v, constant  # dropout (eval), max/adaptive pooling and Flatten leave a constant as it is


def _columns(units: int, block: int, unit_major: bool) -> torch.Tensor:
    """(units, block) indices of the inputs of ``b`` fed by each unit of ``a``."""
    grid = torch.arange(units * block)
    return grid.reshape(units, block) if unit_major else grid.reshape(block, units).t()


@torch.no_grad()
def _slice_batchnorm_(m: _BatchNorm, keep: torch.Tensor) -> None:
    for key in ("weight", "bias"):
        p = getattr(m, key)
        if p is not None:
            setattr(m, key, nn.Parameter(p.detach()[keep].clone(), requires_grad=p.requires_grad))
    for key in ("running_mean", "running_var"):
        if getattr(m, key) is not None:
            setattr(m, key, getattr(m, key)[keep].clone())
    m.num_features = int(keep.sum())


def _slice_out(m: _Layer, keep: torch.Tensor) -> _Layer:
    w = m.weight.detach()[keep]
    b = m.bias.detach()[keep] if m.bias is not None else None
    return _rebuild(m, w, b)


def _slice_in(m: _Layer, keep_cols: torch.Tensor) -> _Layer:
    return _rebuild(m, m.weight.detach()[:, keep_cols], m.bias.detach() if m.bias is not None else None)


def _rebuild(m: _Layer, w: torch.Tensor, b: Optional[torch.Tensor]) -> _Layer:
    if isinstance(m, nn.Linear):
        new: _Layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    else:
        conv: Callable[..., _Conv] = type(m)  # takes back the tuples it stores (kernel_size, stride...)
        new = conv(
            w.shape[1],
            w.shape[0],
            m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=1,
            bias=b is not None,
            padding_mode=m.padding_mode,
        )
    new = new.to(device=w.device, dtype=w.dtype)
    new.train(m.training)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None and new.bias is not None:  # new has a bias exactly when b is given
            new.bias.copy_(b)
    return new


def _shrink_link(model: nn.Sequential, link: _Link, notes: dict[str, str]) -> int:
    """Remove the dead units of ``link.a`` once; return how many went."""
    la, lb = getattr(model, link.a), getattr(model, link.b)
    units = _units(la)
    cols = _columns(units, _fan_in(lb) // units, link.unit_major)
    wb = lb.weight.detach()
    feeds = wb[:, cols].transpose(0, 1).reshape(units, -1)  # unit -> every weight it feeds in b
    no_out = (feeds != 0).sum(1) == 0
    no_in = (la.weight.detach().reshape(units, -1) != 0).sum(1) == 0
    const, constant = _constants(link, la)
    silent = const == 0
    foldable = constant & (silent | torch.tensor(not link.pad_note and lb.bias is not None))
    dead = no_out | (no_in & foldable)
    stuck = no_in & ~dead
    if dead.all():
        dead[0] = False  # a layer keeps at least one unit
    if stuck.any():
        why = (
            link.pool_note
            if (stuck & ~constant).any()
            else link.pad_note or f"{link.b} has no bias to take their constant output"
        )
        notes[link.a] = f"{int(stuck.sum())} unit(s) of {link.a} without inputs kept: {why}"
    if not dead.any():
        return 0
    fold = no_in & ~no_out & dead & ~silent
    if fold.any():
        per_unit = wb[:, cols[fold]].flatten(2).sum(2)  # out of b, folded unit
        with torch.no_grad():
            lb.bias.add_((per_unit * const[fold]).sum(1))
    keep = ~dead
    keep_cols = torch.zeros(lb.weight.shape[1], dtype=torch.bool)
    keep_cols[cols[keep].flatten()] = True
    for _, m in link.between:
        if isinstance(m, _BNS):  # only ever before a Flatten: see _link
            _slice_batchnorm_(m, keep)
    setattr(model, link.a, _slice_out(la, keep))
    setattr(model, link.b, _slice_in(lb, keep_cols))
    return int(dead.sum())


def remove_dead_neurons_(model: nn.Module) -> ShrinkReport:
    """Shrink a sequential ``model`` in place where that is exact; report what was
    removed, and where and why removal did not apply."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        why = (
            f"model is a {type(model).__name__}, not a plain nn.Sequential: its forward may add, concatenate "
            "or reuse outputs (residual connections), so removing a unit cannot be proven exact; dead "
            "neurons are left in place (their weights stay zero)"
        )
        return ShrinkReport({}, {}, False, why)
    links, declined = _links(model)
    removed: dict[str, int] = {}
    notes: dict[str, str] = {}
    changed = True
    while changed:
        changed, notes = False, {}
        for link in links:
            n = _shrink_link(model, link, notes)
            if n:
                removed[link.a] = removed.get(link.a, 0) + n
                changed = True
    kept = {**declined, **notes}
    sizes = {name: (_fan_in(m), _units(m)) for name, m in model.named_children() if isinstance(m, _LAYERS)}
    if removed:
        log.info("dead neurons removed: %s", removed)
    if kept:
        log.info("dead-neuron removal did not apply everywhere: %s", "; ".join(kept.values()))
    applicable = bool(links) or not declined
    reason = "; ".join(f"{name}: {why}" if not why.startswith(name) else why for name, why in kept.items())
    return ShrinkReport(removed, sizes, applicable, reason, kept)
