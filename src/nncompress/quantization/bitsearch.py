"""Codebook widths chosen by measurement: raise bits where they buy back the most.

Fixed widths (Deep Compression's 8 bits for convolutions, 5 for fully connected
layers) were chosen for ImageNet CNNs; a transformer's Linear layers lose far
more at 5 bits than its word table does. ``fit_bits_`` starts from the
configured widths and, while the shared model's validation drop exceeds the
tolerance, measures each layer's part in the drop (the model with that one layer
restored to its unshared weights) and gives one more bit to the layers that
cost the most drop per stored weight, until the drop fits or no layer can grow.
Each extra bit cuts a layer's k-means error about fourfold, so about three
quarters of its part of the drop is expected back; layers are raised until the
expected gain covers the excess.

With ``tune`` (centroid fine-tuning) every width is judged after tuning, on the
model as it will be stored: k-means alone read a drop of 0.9-1.2 points on a
pruned ResNet at 4-5 bits that tuning won back (to -0.1 and +0.0 on test), so a
search judged before tuning bought bits the stored model did not need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

import torch

from nncompress.layers import Compressible
from nncompress.progress import ProgressFn, report
from nncompress.quantization.shared import SharedLayer, share_weights_, warn_empty_codebooks

log = logging.getLogger(__name__)

#: share of a layer's part in the drop that one more bit is expected to win back (error / 4 per bit)
GAIN_PER_BIT = 0.75
MAX_ROUNDS = 8


@dataclass
class BitSearch:
    """What the search did: widths per layer and the validation drop after each round."""

    bits: dict[str, int]
    rounds: list[dict] = field(default_factory=list)
    met: bool = True
    stalled: bool = False  # a round's wider codebooks did not lower the drop: the search stopped there

    def to_dict(self) -> dict:
        return {"bits": dict(self.bits), "rounds": list(self.rounds), "met": self.met, "stalled": self.stalled}


def _drop_without(name: str, layer: SharedLayer, original: torch.Tensor, drop: Callable[[], float]) -> float:
    """The drop with ``name`` restored to its unshared weights (the shared values are put back after)."""
    weight = layer.weight
    with torch.no_grad():
        weight.copy_(original)
    try:
        return drop()
    finally:
        layer.apply_()


def choose_raises(parts: Mapping[str, float], sizes: Mapping[str, int], excess: float) -> list[str]:
    """Layers to give one more bit: the largest part of the drop per stored weight first,
    until the expected gain (``GAIN_PER_BIT`` of each part) covers ``excess``. When the
    parts cannot cover it (the drop is not additive), every layer that costs drop grows;
    when none measurably does, all of them do."""
    costly = sorted((n for n, p in parts.items() if p > 0), key=lambda n: parts[n] / max(1, sizes[n]), reverse=True)
    chosen: list[str] = []
    gain = 0.0
    for name in costly:
        chosen.append(name)
        gain += GAIN_PER_BIT * parts[name]
        if gain >= excess:
            return chosen
    return chosen or list(parts)


def fit_bits_(
    layers: Mapping[str, Compressible],
    bits: Mapping[str, int],
    init: Union[str, Mapping[str, str]],
    drop: Callable[[], float],
    tolerance: float,
    *,
    max_bits: Union[int, Mapping[str, int]] = 10,
    seed: int = 0,
    progress: Optional[ProgressFn] = None,
    noise: Optional[Callable[[], float]] = None,
    tune: Optional[Callable[[dict[str, SharedLayer]], bool]] = None,
) -> tuple[dict[str, SharedLayer], BitSearch]:
    """Share ``layers`` in place at ``bits``, then raise widths until ``drop()`` (the
    model's validation drop in points, as it stands) is at most ``tolerance``.
    Returns the shared layers and what the search did; ``met`` is False when the
    drop still exceeds the tolerance with every layer that can grow grown.
    ``max_bits`` caps the widths, one cap for all or one per layer. With
    ``noise`` (the standard error of the last ``drop()``) a drop counts as over
    the tolerance only by more than that: a wider codebook is not bought to
    chase a difference the reading cannot tell from zero. ``tune(shared)``, when
    given, runs after every sharing, before the drop is read, and says whether
    validation kept the tuning; once it does not (LeNet-5's centroids often gain
    nothing), later rounds are read as shared and the final widths tuned once,
    since each round's tuning is the search's main cost. A round whose
    wider codebooks leave the drop no lower ends the search (``stalled``): what
    is left is not quantisation error one more bit wins back, but the reading's
    noise or the tuning's, and every further round would cost a tuning."""

    def fits(value: float) -> bool:
        return value - (noise() if noise is not None else 0.0) <= tolerance

    caps = {name: max_bits if isinstance(max_bits, int) else max_bits.get(name, bits[name]) for name in layers}
    originals = {name: module.weight.detach().clone() for name, module in layers.items()}
    widths = dict(bits)
    tuning = tune is not None  # while validation keeps what tuning does
    tuned = False  # whether the sharing as it stands was tuned

    def settle(current: dict[str, SharedLayer]) -> None:
        nonlocal tuning, tuned
        tuned = tuning
        if tune is not None and tuning:
            tuning = tune(current)

    shared = share_weights_(layers, widths, init, seed, progress=progress, warn=False)
    settle(shared)
    current = drop()
    search = BitSearch(widths, [{"round": 0, "drop": round(current, 4), "raised": []}])
    for round_no in range(1, MAX_ROUNDS + 1):
        if fits(current):
            break
        # a layer with no more weights than entries is exact already (an empty cluster is not:
        # linear init leaves some on heavy-tailed weights, which need the width most)
        growable = {
            n: s for n, s in shared.items() if widths[n] < caps[n] and int(torch.count_nonzero(s.mask)) > 2 ** widths[n]
        }
        if not growable:
            break
        parts = {}
        for done, (name, layer) in enumerate(growable.items(), 1):
            parts[name] = current - _drop_without(name, layer, originals[name], drop)
            report(progress, "bit search", done, len(growable), round=round_no, layer=name)
        sizes = {n: int(torch.count_nonzero(s.mask)) for n, s in growable.items()}
        raised = choose_raises(parts, sizes, current - tolerance)
        with torch.no_grad():
            for name in raised:
                widths[name] += 1
                layers[name].weight.copy_(originals[name])
        inits = init if isinstance(init, str) else {n: init[n] for n in raised if n in init}
        shared.update(
            share_weights_({n: layers[n] for n in raised}, {n: widths[n] for n in raised}, inits, seed, warn=False)
        )
        settle(shared)
        previous, current = current, drop()
        search.rounds.append({"round": round_no, "drop": round(current, 4), "raised": [[n, widths[n]] for n in raised]})
        log.info(
            "bit search round %d: %d layer(s) one bit wider, validation drop %.3f points",
            round_no,
            len(raised),
            current,
        )
        if current >= previous:
            search.stalled = True
            break
    search.met = fits(current)
    if tune is not None and not tuned:
        tune(shared)
    warn_empty_codebooks(shared)
    if not search.met and search.stalled:
        log.warning(
            "weight sharing leaves a validation drop of %.3f points, over its tolerance of %g; one bit more "
            "did not lower it (%.3f before), so the search stopped: the rest is noise or tuning, not width",
            current,
            tolerance,
            search.rounds[-2]["drop"],
        )
    elif not search.met:
        log.warning(
            "weight sharing leaves a validation drop of %.3f points, over its tolerance of %g, with "
            "every layer that could grow grown (at most %d bits); raise max_bits or the tolerance",
            current,
            tolerance,
            max(caps.values(), default=0),
        )
    return shared, search
