"""The checkpoint record and what saving and loading both check: finite weights, no pruning masks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nncompress.chunked import all_finite
from nncompress.errors import CheckpointError, ModelError
from nncompress.models import fit_shapes_
from nncompress.models.factory import Trust
from nncompress.train.model_state import load_state, model_for_state

CHECKPOINT_KEY = "nncompress_checkpoint"
CHECKPOINT_VERSION = 1

log = logging.getLogger("nncompress.train.checkpoint")  # the logger these records always had


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]
    arch: Optional[dict[str, Any]] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def build_model(self, model: Optional[nn.Module] = None, *, trust_factory: Trust = False) -> nn.Module:
        """Load the weights into ``model`` or, when None, into the recorded architecture.
        A recorded factory that is not an nn.Module class is called only when
        ``trust_factory`` is True or names the same spec (see ``models.factory``)."""
        if model is None:
            if self.arch is None:
                raise CheckpointError(
                    "this checkpoint records no architecture: pass --model NAME "
                    "(or a model instance in Python) to load it"
                )
            model = model_for_state(
                self.arch, self.state, trust_factory=trust_factory, source="the checkpoint", error=CheckpointError
            )
        fit_shapes_(model, self.state)
        load_state(model, self.state)
        model.eval()
        return model


def nonfinite(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf (each caller picks its error type)."""
    return [str(k) for k, v in state.items() if not all_finite(v)]


def check_finite(state: Mapping[str, torch.Tensor]) -> None:
    bad = nonfinite(state)
    if bad:
        raise ModelError(
            f"weights contain NaN or Inf in {', '.join(bad)}: the model cannot be compressed; "
            "retrain it or restore an earlier checkpoint"
        )


def _fold_pruning_masks(state: dict[str, torch.Tensor], source: Path | str) -> dict[str, torch.Tensor]:
    """A model (or a state dict saved) with torch.nn.utils.prune still attached
    holds ``w_orig`` and ``w_mask`` instead of ``w``: keep ``w = w_orig * w_mask``,
    so no mask or dense copy reaches our files. Only complete pairs are folded;
    a lone half is left for load_state to report."""
    folded: list[str] = []
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base + "_mask" not in state or base in state:
            continue
        orig, mask = state[key], state[base + "_mask"]
        if orig.shape != mask.shape:
            raise CheckpointError(
                f"{source}: pruning mask {base}_mask has shape {tuple(mask.shape)} but "
                f"{key} has {tuple(orig.shape)}: the file is damaged; save the model again "
                "after torch.nn.utils.prune.remove"
            )
        state[base] = (orig * mask).to(orig.dtype)
        del state[key], state[base + "_mask"]
        folded.append(base)
    if folded:
        log.info("%s: folded torch.nn.utils.prune masks into %s", source, ", ".join(folded))
    return state
