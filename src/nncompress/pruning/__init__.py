"""Iterative std-threshold pruning (Han et al. 2015) and its helpers."""

from nncompress.pruning.iterative import PruneResult, StepRecord, prune_
from nncompress.pruning.masks import prunable_layers

__all__ = ["PruneResult", "StepRecord", "prune_", "prunable_layers"]
