"""nncompress: make trained networks small, and prove it.

import nncompress as nnc
result = nnc.compress(model, "digits", "model.nnc")   # works on a copy of model
print(result.ratio, result.table)
model = nnc.load("model.nnc", model=MyNet())
"""

__version__ = "0.1.0"

from nncompress.api import CompressConfig, CompressResult, LayerTable, compress, export, layer_table, load, prune
from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.data import Splits, load_data, splits_from_loaders
from nncompress.errors import NNCompressError
from nncompress.models import record_factory
from nncompress.pruning import prune_
from nncompress.quantization import share_weights_

__all__ = [
    "CompressConfig",
    "CompressResult",
    "LayerTable",
    "NNCompressError",
    "PruneConfig",
    "SensitivityConfig",
    "ShareConfig",
    "Splits",
    "TrainConfig",
    "__version__",
    "compress",
    "export",
    "layer_table",
    "load",
    "load_data",
    "prune",
    "prune_",
    "record_factory",
    "share_weights_",
    "splits_from_loaders",
]
