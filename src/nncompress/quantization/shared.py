"""Weight sharing on pruned layers, and centroid fine-tuning (Han et al. 2016).

Each layer's surviving weights are clustered into ``2**bits`` shared values (a
codebook) and each surviving weight keeps only an index into it. Fine-tuning
then trains the codebook, not the weights: a centroid's gradient is the sum of
the gradients of the weights that share it, the mask and the assignment stay
fixed, and the weights are rewritten from the codebook after every step, so
the model always holds exactly ``codebook[indices]`` at kept positions and
exact zeros elsewhere.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Union

import torch
from torch import nn

from nncompress.chunked import all_finite
from nncompress.coding.schema import MAX_CODEBOOK_BITS
from nncompress.errors import ConfigError, ModelError
from nncompress.progress import ProgressFn, report
from nncompress.quantization.kmeans import check_init, kmeans_1d

log = logging.getLogger(__name__)

#: a codebook with more than this share of its 2**bits entries empty is worth a warning
EMPTY_WARNING = 0.25
#: A tensor keeping at least this share of its weights nonzero is shared as unpruned: a pretrained
#: table's few exact zeros (MiniLM's word embeddings hold 3 of 11.7 M) would otherwise make it pay
#: a position stream of about 1 bit per weight; they are clustered like any other weight instead.
UNPRUNED_ABOVE = 0.99


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"layer {name!r} ({type(module).__name__}) has no weight tensor to share")
    return weight


@dataclass
class SharedLayer:
    """One layer under weight sharing.

    ``mask`` (bool, weight's shape) marks the kept positions; ``indices``
    (int64) holds one codebook index per kept position, in the row-major order
    of ``weight[mask]``; ``codebook`` (float32) holds the shared values.
    The mask, not the weight, says what is pruned: fine-tuning may move a
    centroid to exactly zero without un-keeping its members.
    """

    module: nn.Module
    mask: torch.Tensor
    indices: torch.Tensor
    codebook: torch.Tensor
    capacity: int = 0  # the codebook entries k-means was allowed (2**bits); 0 when unknown

    @property
    def weight(self) -> torch.Tensor:
        """The layer's weight tensor (``module.weight``, checked to be a tensor)."""
        return _weight(self.module, type(self.module).__name__)

    def __post_init__(self) -> None:
        # Catch a mismatched triple here, not as a silent wrong weight later.
        weight = _weight(self.module, type(self.module).__name__)
        if self.mask.dtype != torch.bool or self.mask.shape != weight.shape:
            raise ConfigError(
                f"mask must be a bool tensor of the weight's shape {tuple(weight.shape)}; "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        kept = int(torch.count_nonzero(self.mask))
        if self.indices.dtype != torch.int64 or self.indices.shape != (kept,):
            raise ConfigError(
                f"indices must be int64 with one entry per kept weight ({kept}); "
                f"got {self.indices.dtype} {tuple(self.indices.shape)}"
            )
        if self.codebook.dtype != torch.float32 or self.codebook.dim() != 1:
            raise ConfigError(
                f"codebook must be a 1-D float32 tensor; got {self.codebook.dtype} {tuple(self.codebook.shape)}"
            )
        if kept and (int(self.indices.min()) < 0 or int(self.indices.max()) >= self.codebook.numel()):
            raise ConfigError(f"indices must lie in [0, {self.codebook.numel()}) for this codebook")

    @torch.no_grad()
    def weights(self) -> torch.Tensor:
        """The dense weight this layer stands for: zeros, and codebook values at kept positions."""
        weight = self.weight
        dense = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device)
        dense[self.mask] = self.codebook[self.indices].to(weight.dtype)
        return dense

    @torch.no_grad()
    def apply_(self) -> None:
        """Write ``weights()`` into the layer's existing weight tensor (optimizers keep their handle)."""
        weight = self.weight
        weight.masked_fill_(~self.mask, 0.0)
        weight[self.mask] = self.codebook[self.indices].to(weight.dtype)


def _check_bits(layers: Mapping[str, nn.Module], bits: Mapping[str, int]) -> None:
    missing = [name for name in layers if name not in bits]
    if missing:
        raise ConfigError(f"no bit width given for layer(s) {', '.join(missing)}")
    unknown = [name for name in bits if name not in layers]
    if unknown:
        raise ConfigError(f"bit widths given for unknown layer(s) {', '.join(unknown)}; layers are {', '.join(layers)}")
    for name, b in bits.items():
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_CODEBOOK_BITS:
            raise ConfigError(f"bits for layer {name!r} must be an integer in 1..{MAX_CODEBOOK_BITS}; got {b!r}")


def tied_layers(layers: Mapping[str, nn.Module]) -> dict[str, str]:
    """Layer name -> the first layer holding the very same weight tensor (a Linear
    tied to an Embedding, as in language models): such a weight is shared once."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, module in layers.items():
        key = id(getattr(module, "weight", None))
        if key in first:
            tied[name] = first[key]
        else:
            first[key] = name
    return tied


@torch.no_grad()
def share_weights_(
    layers: Mapping[str, nn.Module],
    bits: Mapping[str, int],
    init: Union[str, Mapping[str, str]] = "linear",
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    warn: bool = True,
) -> dict[str, SharedLayer]:
    """Cluster each layer's nonzero weights into at most ``2**bits`` values, in place.

    Zeros are pruned positions and stay zero (they are not clustered, so they
    cost no centroid). Every argument and weight is checked before any layer
    is changed. ``init`` is one k-means init or one per layer. A weight tied to
    an earlier layer's (``tied_layers``) is shared once, under the earlier name;
    the result has no entry for the later one. ``warn`` logs codebooks that
    k-means left mostly empty (``warn_empty_codebooks``).


    >>> import torch
    >>> from torch import nn
    >>> import nncompress as nnc
    >>> _ = torch.manual_seed(0)
    >>> layer = nn.Linear(64, 32)
    >>> shared = nnc.share_weights_({"fc": layer}, {"fc": 3})      # 3 bits: at most 8 values
    >>> int(layer.weight.unique().numel()) <= 8, shared["fc"].codebook.numel() <= 8
    (True, True)
    """
    inits = {name: init if isinstance(init, str) else init.get(name, "linear") for name in layers}
    for chosen in [init] if isinstance(init, str) else inits.values():
        check_init(chosen)
    _check_bits(layers, bits)
    for name, module in layers.items():
        if not all_finite(_weight(module, name)):
            raise ModelError(f"layer {name!r} has NaN or Inf weights; they cannot be shared")
    tied = tied_layers(layers)
    for name, first in tied.items():
        log.info("layer %r holds the same weight as %r: it is shared once, as %r", name, first, first)

    shared: dict[str, SharedLayer] = {}
    for done, (name, module) in enumerate(layers.items(), 1):
        if name in tied:
            continue
        weight = _weight(module, name)
        mask = weight.detach() != 0
        if mask.numel() and int(torch.count_nonzero(mask)) >= UNPRUNED_ABOVE * mask.numel():
            mask = torch.ones_like(mask)  # a handful of exact zeros in a trained tensor is not pruning
        values = weight.detach()[mask].to(torch.float32).cpu().numpy()
        k = min(2 ** bits[name], values.size)
        if values.size:
            codebook_np, labels_np = kmeans_1d(values, k, inits[name], seed=seed)
        else:
            codebook_np, labels_np = values[:0], values[:0].astype("int64")
        layer = SharedLayer(
            module=module,
            mask=mask,
            indices=torch.from_numpy(labels_np).to(weight.device),
            codebook=torch.from_numpy(codebook_np).to(weight.device),
            capacity=2 ** bits[name],
        )
        layer.apply_()
        shared[name] = layer
        report(progress, "k-means", done, len(layers), layer=name, k=k)
    if warn:
        warn_empty_codebooks(shared)
    return shared


def warn_empty_codebooks(shared: Mapping[str, SharedLayer]) -> None:
    """Empty clusters cost no bytes (they are not stored), but they are resolution not used."""
    sparse_books = [
        f"{name} {layer.codebook.numel()}/{layer.capacity}"
        for name, layer in shared.items()
        if int(torch.count_nonzero(layer.mask)) > layer.capacity
        and layer.codebook.numel() < (1 - EMPTY_WARNING) * layer.capacity
    ]
    if sparse_books:
        log.warning(
            "k-means left more than %d%% of the codebook empty in %d layer(s) (%s; used/allowed): "
            "outliers stretch the range; init 'density' spreads the centroids over the weights",
            round(100 * EMPTY_WARNING),
            len(sparse_books),
            ", ".join(sparse_books[:8]) + (", ..." if len(sparse_books) > 8 else ""),
        )


def unshared_parameters(model: nn.Module, shared: Mapping[str, SharedLayer]) -> Iterator[nn.Parameter]:
    """The model's parameters minus the shared weights: what the model's optimizer may own."""
    taken = {id(layer.module.weight) for layer in shared.values()}
    return (p for p in model.parameters() if id(p) not in taken)


def _check_lr(lr: float, momentum: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"centroid learning rate must be a finite number > 0; got {lr!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ConfigError(f"centroid momentum must be in [0, 1); got {momentum!r}")


class CentroidTuner:
    """SGD on the codebooks of shared layers, from the gradients of their weights.

    After ``loss.backward()``, call ``step()`` (or ``after_step()`` as an
    argument-free training-loop hook): each centroid moves by ``-lr`` times
    the sum of its members' gradients (with optional momentum, as in
    ``torch.optim.SGD``), then the weights are rewritten from the codebooks.
    The shared weights' gradients are consumed (set to ``None``), since the
    model's optimizer does not own them and would not clear them.

    Do not give the shared weights to the model's own optimizer (see
    ``unshared_parameters``): its update would be overwritten here, and its
    weight decay or momentum would be wasted. Biases and unshared layers can
    be trained by that optimizer as usual.
    """

    def __init__(self, shared: Mapping[str, SharedLayer], lr: float = 1e-3, momentum: float = 0.0) -> None:
        _check_lr(lr, momentum)
        self.shared = dict(shared)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self._buffers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def step(self, lr: float | None = None, momentum: float | None = None) -> None:
        """One SGD step on every codebook; ``lr``/``momentum`` override the constructor's."""
        lr = self.lr if lr is None else lr
        momentum = self.momentum if momentum is None else momentum
        _check_lr(lr, momentum)
        for name, layer in self.shared.items():
            weight = layer.weight
            grad = weight.grad
            if grad is not None and grad.is_sparse:  # nn.Embedding(sparse=True)
                grad = grad.to_dense()
            if grad is not None and layer.codebook.numel():
                # Sum in float64: the sums are over many members, and index_add_ order varies on GPU.
                member = grad[layer.mask].to(torch.float64)
                cgrad = torch.zeros(layer.codebook.numel(), dtype=torch.float64, device=member.device)
                cgrad.index_add_(0, layer.indices, member)
                if momentum:
                    buf = self._buffers.get(name)
                    buf = cgrad if buf is None else buf.mul_(momentum).add_(cgrad)
                    self._buffers[name] = buf
                    cgrad = buf
                update = (lr * cgrad).to(layer.codebook.dtype)
                layer.codebook.sub_(update)
            weight.grad = None
            layer.apply_()

    def after_step(self) -> None:
        """Argument-free hook: ``step()`` with the constructor's lr and momentum."""
        self.step()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Codebooks and momentum buffers: what a resumed run needs to continue tuning."""
        state = {f"codebook.{n}": s.codebook.detach().clone() for n, s in self.shared.items()}
        state.update({f"momentum.{n}": b.clone() for n, b in self._buffers.items()})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name, layer in self.shared.items():
            layer.codebook.copy_(state[f"codebook.{name}"])
            layer.apply_()
        self._buffers = {k[len("momentum.") :]: v.clone() for k, v in state.items() if k.startswith("momentum.")}
