"""Compose data, models, training and pruning into the runs the CLI offers.

Every function here returns plain results and writes files atomically; none
prints. Progress goes through the ``progress`` callback.

Under torchrun every rank runs these functions alike (training and evaluation
are spread over the ranks); rank 0 alone writes files, inside
``distributed.on_main``, and the others receive its result.

One module per stage, each importing the ones it builds on directly:
``measure`` (scores and weight counts), ``modelfiles`` (model files in and out,
models sized for the data), ``training``, ``sensitivity``, ``prune``, ``share``
(weight sharing and the bit search's budget), ``compress`` (every stage into a
``.nnc`` file) and ``recipe_run`` (a recipe's whole run in a run directory).
Everything callers use is imported here, so ``nncompress.pipeline.X`` names it.
"""

from nncompress.pipeline.compress import compress_model, run_compress
from nncompress.pipeline.measure import metrics
from nncompress.pipeline.modelfiles import (
    check_fits,
    data_kwargs,
    load_for_data,
    load_model_file,
    model_for_data,
    read_model_file,
    read_model_header,
    save_trained,
)
from nncompress.pipeline.prune import PruneRun, density_table, prune_files, prune_model, run_prune
from nncompress.pipeline.recipe_run import check_layer_names, run_recipe
from nncompress.pipeline.sensitivity import run_sensitivity, scan_sensitivity, sensitivity_files
from nncompress.pipeline.share import _codebook_bits as _codebook_bits  # the tests check its sizing
from nncompress.pipeline.share import quantized_layers, share_model
from nncompress.pipeline.training import train_model

__all__ = [
    "PruneRun",
    "check_fits",
    "check_layer_names",
    "compress_model",
    "data_kwargs",
    "density_table",
    "load_for_data",
    "load_model_file",
    "metrics",
    "model_for_data",
    "prune_files",
    "prune_model",
    "quantized_layers",
    "read_model_file",
    "read_model_header",
    "run_compress",
    "run_prune",
    "run_recipe",
    "run_sensitivity",
    "save_trained",
    "scan_sensitivity",
    "sensitivity_files",
    "share_model",
    "train_model",
]
