"""Running a compressed model: sparse (CSR) and int8 kernels chosen per layer, and exports.

    model, plan = convert_(dense_model, "auto", batch_sizes=(1, 64), input_shape=(1, 28, 28))
"""
from nncompress.runtime.convert import convert_
from nncompress.runtime.kernels import SparseConv, SparseLinear
from nncompress.runtime.memory import held_bytes
from nncompress.runtime.plan import BatchChoice, LayerChoice, RuntimePlan
from nncompress.runtime.routed import Routed

__all__ = ["BatchChoice", "LayerChoice", "Routed", "RuntimePlan", "SparseConv", "SparseLinear", "convert_",
           "held_bytes"]
