"""Standard files from a decoded model: ONNX (checked in onnxruntime) and safetensors.

Both are written atomically. A pruned model can be written sparse: in safetensors
as CSR components per weight (read back by ``read_safetensors``), in ONNX as
``sparse_initializer``s, which onnxruntime turns dense when it loads the model
(standard ONNX has no sparse-weight matmul, so only the file gets smaller).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from nncompress.atomic import atomic_open
from nncompress.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}
CSR_KEY = "nncompress.csr"  # safetensors metadata: JSON {tensor name: shape} of the tensors stored as CSR
CSR_PARTS = ("csr_values", "csr_crow_indices", "csr_col_indices")
ONNX_LIMIT = 2**31 - 1  # protobuf's limit on one serialized message


@dataclass
class ExportResult:
    """What was written; ``max_abs_diff`` is onnxruntime's largest deviation from PyTorch on random inputs
    of ``checked_batches`` (ONNX only)."""

    path: Path
    format: str
    file_bytes: int
    tensors: int
    sparse_tensors: list[str] = field(default_factory=list)
    max_abs_diff: Optional[float] = None
    checked_batches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.path),
            "format": self.format,
            "file_bytes": self.file_bytes,
            "tensors": self.tensors,
            "sparse_tensors": self.sparse_tensors,
            "max_abs_diff": self.max_abs_diff,
            "checked_batches": self.checked_batches,
        }


def export_format(path: str | os.PathLike[str]) -> Optional[str]:
    """``"onnx"``/``"safetensors"`` by the file name's suffix, None for anything else."""
    return FORMATS.get(Path(path).suffix.lower())


def _need(module: str, extra: str = "export") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"writing this format needs the package {module.split('.')[0]!r}: pip install 'nncompress[{extra}]'"
        ) from None


def _csr_smaller(t: torch.Tensor) -> bool:
    """Whether CSR (float values, int32 indices) takes fewer bytes than the dense tensor."""
    if t.dim() < 2 or not t.is_floating_point():
        return False
    nnz = int(torch.count_nonzero(t))
    return nnz * (t.element_size() + 4) + 4 * (t.shape[0] + 1) < t.nbytes


def safetensors_dict(state: Mapping[str, torch.Tensor], sparse: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors to write (each its own contiguous copy: tied weights are written twice) and the names
    stored as CSR."""
    out: dict[str, torch.Tensor] = {}
    csr: list[str] = []
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        if sparse and _csr_smaller(t):
            matrix = t.reshape(t.shape[0], -1).to_sparse_csr()
            out[f"{name}.csr_values"] = matrix.values().contiguous().clone()
            out[f"{name}.csr_crow_indices"] = matrix.crow_indices().to(torch.int32)
            out[f"{name}.csr_col_indices"] = matrix.col_indices().to(torch.int32)
            csr.append(name)
        else:
            out[name] = t.contiguous().clone()
    clash = sorted(
        set(out) & {f"{n}.{p}" for n in state for p in CSR_PARTS} - {f"{n}.{p}" for n in csr for p in CSR_PARTS}
    )
    if clash:
        raise ModelError(
            f"tensor name(s) {clash} collide with the CSR parts of another tensor; export with sparse=False"
        )
    return out, csr


def export_safetensors(
    state: Mapping[str, torch.Tensor],
    out: str | os.PathLike[str],
    *,
    sparse: bool = False,
    metadata: Optional[Mapping[str, str]] = None,
) -> ExportResult:
    """Write a state dict with the safetensors library; ``sparse`` stores each weight that is smaller as
    CSR as three tensors (``NAME.csr_values``, ``.csr_crow_indices``, ``.csr_col_indices``, int32 indices)
    listed with their shapes under the metadata key ``nncompress.csr``."""
    st = _need("safetensors.torch")
    tensors, csr = safetensors_dict(state, sparse)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    if csr:
        meta[CSR_KEY] = json.dumps({name: list(state[name].shape) for name in csr})
    data = st.save(tensors, metadata=meta or None)
    with atomic_open(out, "wb") as handle:
        handle.write(data)
    return ExportResult(Path(out), "safetensors", len(data), len(state), csr)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, CSR-stored weights made dense again."""
    st = _need("safetensors.torch")
    safe_open = _need("safetensors").safe_open
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    tensors = st.load_file(str(path))
    try:
        shapes = json.loads(meta.get(CSR_KEY, "{}"))
    except ValueError as exc:
        raise ModelError(f"{path}: metadata {CSR_KEY} is not JSON: {exc}") from None
    for name, shape in shapes.items():
        parts = [tensors.pop(f"{name}.{p}", None) for p in CSR_PARTS]
        if any(p is None for p in parts):
            raise ModelError(f"{path}: {name} is listed as CSR but its {', '.join(CSR_PARTS)} are not all there")
        values, crow, col = parts
        rows = int(shape[0])
        dense = torch.sparse_csr_tensor(
            crow.long(), col.long(), values, size=(rows, int(np.prod(shape[1:])) if len(shape) > 1 else 1)
        ).to_dense()
        tensors[name] = dense.reshape(shape)
    return tensors


def _onnx_program(model: nn.Module, example: torch.Tensor) -> Any:
    """The ONNX model proto with a dynamic batch axis: torch's dynamo exporter, else the TorchScript one."""
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # warns of absent torchvision ops
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _export_proto(model, example)
    finally:
        quiet.setLevel(level)


def _export_proto(model: nn.Module, example: torch.Tensor) -> Any:
    try:
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_shapes=({0: batch},),
        )
        assert program is not None  # the dynamo exporter returns its program
        return program.model_proto
    except Exception as exc:  # the dynamo exporter fails on some models the TorchScript exporter takes
        log.info("dynamo ONNX export failed (%s); trying the TorchScript exporter", exc)
        import io
        import onnx

        buffer = io.BytesIO()
        try:
            # the TorchScript exporter writes to a file object too; torch annotates the argument as a path
            torch.onnx.export(
                model,
                (example,),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        except Exception as second:
            raise ModelError(
                f"torch.onnx.export cannot export this model: {exc}; the TorchScript exporter: {second}"
            ) from second
        return onnx.load_from_string(buffer.getvalue())


def _sparsify_initializers(proto: Any) -> list[str]:
    """Move each 2-D+ initializer whose nonzeros fit in under a third of it to ``sparse_initializer``."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    keep, moved = [], []
    for init in list(graph.initializer):
        array = numpy_helper.to_array(init)
        if array.ndim >= 2 and array.dtype == np.float32 and np.count_nonzero(array) * 3 < array.size:
            flat = array.reshape(-1)
            index = np.flatnonzero(flat).astype(np.int64)
            graph.sparse_initializer.append(
                helper.make_sparse_tensor(
                    numpy_helper.from_array(flat[index], init.name),
                    numpy_helper.from_array(index, f"{init.name}_indices"),
                    list(array.shape),
                )
            )
            moved.append(init.name)
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return moved


def onnx_max_abs_diff(
    data: bytes, model: nn.Module, input_shape: Sequence[int], batches: Sequence[int], seed: int = 0
) -> float:
    """Largest |onnxruntime - PyTorch| over the outputs for random normal inputs of each batch size."""
    ort = _need("onnxruntime")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in batches:
        x = torch.randn((batch, *input_shape), generator=generator)
        with torch.inference_mode():
            expected = model(x)
        got = session.run(None, {name: x.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    return worst


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike[str],
    input_shape: Sequence[int],
    *,
    sparse: bool = False,
    check_batches: Sequence[int] = (1, 3),
) -> ExportResult:
    """Export ``model`` (inputs ``(batch, *input_shape)``, batch dynamic) to ONNX, run it in onnxruntime on
    ``check_batches`` and report the largest difference from PyTorch's outputs."""
    _need("onnx")
    _need("onnxscript")
    model = model.eval()
    shape = [int(s) for s in input_shape]
    proto = _onnx_program(model, torch.zeros((2, *shape)))
    moved = _sparsify_initializers(proto) if sparse else []
    if proto.ByteSize() > ONNX_LIMIT:
        raise ModelError(
            f"the ONNX model would take {proto.ByteSize():,} bytes, over protobuf's 2 GB limit on "
            "one file; export to .safetensors instead"
        )
    data = proto.SerializeToString()
    diff = onnx_max_abs_diff(data, model, shape, check_batches) if check_batches else None
    with atomic_open(out, "wb") as handle:
        handle.write(data)
    return ExportResult(
        Path(out), "onnx", len(data), len(proto.graph.initializer) + len(moved), moved, diff, list(check_batches)
    )
