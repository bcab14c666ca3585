"""Running a compressed model: sparse (numba or torch CSR) and int8 kernels chosen per layer, and exports.

model, plan = convert_(dense_model, "auto", batch_sizes=(1, 64), input_shape=(1, 28, 28))
"""

from nncompress.runtime.choose import Choice, choose
from nncompress.runtime.convert import convert_
from nncompress.runtime.kernels import ENGINES, SparseConv, SparseLinear
from nncompress.runtime.memory import held_bytes
from nncompress.runtime.plan import BatchChoice, LayerChoice, RuntimePlan
from nncompress.runtime.routed import Routed

__all__ = [
    "BatchChoice",
    "Choice",
    "ENGINES",
    "LayerChoice",
    "Routed",
    "RuntimePlan",
    "SparseConv",
    "SparseLinear",
    "choose",
    "convert_",
    "held_bytes",
]
