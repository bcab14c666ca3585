"""Inference modules that compute a pruned Linear or convolution from sparse weights.

Each is built from the dense (pruned) layer and gives its outputs within float
rounding; they are inference-only (no gradients through the sparse weights). The
weights are held by one of three engines: ``"mkl"`` (torch's sparse CSR, multiplied by
MKL), ``"numba"`` (column-blocked CSR with 16-bit indices, ``blocked.py``) and
``"numba-shared"`` (the same with 8-bit codebook indices, for weight-shared layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, TypeGuard, Union

import torch
import torch.nn.functional as F
from torch import nn

from nncompress.errors import ConfigError
from nncompress.runtime import blocked
from nncompress.runtime.csr import csr_blocks, csr_bytes, csr_matmul

if TYPE_CHECKING:
    from nncompress.runtime.routed import Routed

ENGINES = ("mkl", "numba", "numba-shared")


class _CsrHolder(nn.Module):
    """Registers the sparse weights as non-persistent buffers: they follow the module, stay out of state
    dicts."""

    engine = "mkl"
    one_thread = False  # the numba engines: never use more than one thread (a candidate the chooser may take)
    n_blocks = 0
    part_names: list[str]  # set with the numba engines
    bias_col: Optional[torch.Tensor]  # a buffer, registered by the subclasses

    def _set_matrix(self, matrix: torch.Tensor, width: int, engine: str) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        if engine == "mkl":
            self._set_blocks(csr_blocks(matrix, width))
            return
        parts = blocked.build(matrix, shared=engine == "numba-shared")
        self.part_names = sorted(parts)
        self.n_blocks = int(parts["indptr"].shape[0])
        for name, tensor in parts.items():
            self.register_buffer(f"nb_{name}", tensor, persistent=False)

    def _set_blocks(self, blocks: list[torch.Tensor]) -> None:
        self.n_blocks = len(blocks)
        for i, block in enumerate(blocks):
            self.register_buffer(f"block{i}", block, persistent=False)

    def blocks(self) -> list[torch.Tensor]:
        """The torch CSR blocks (engine "mkl"; empty for the numba engines)."""
        if self.engine != "mkl":
            return []
        return [getattr(self, f"block{i}") for i in range(self.n_blocks)]

    def parts(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"nb_{name}") for name in self.part_names}

    def prepared(self) -> blocked.Prepared:
        """The numba kernels' arguments, made on first use and again after the buffers were replaced."""
        cached = self.__dict__.get("_prepared")  # read directly: a module attribute look-up costs 0.3 us
        if cached is None:
            cached = self.__dict__["_prepared"] = blocked.prepare(self.parts(), self.bias_col)
        return cached

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``to``, ``cpu``, ``share_memory`` and the like replace the buffers: the arguments are views of them."""
        self.__dict__.pop("_prepared", None)
        return super()._apply(fn, recurse)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__.pop("_prepared", None)  # a buffer set by hand
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_prepared", None)  # views of the buffers: remade after unpickling, never saved
        return state

    def _matmul(self, xt: torch.Tensor) -> torch.Tensor:
        if self.engine == "mkl":
            return csr_matmul(self.blocks(), xt, self.bias_col)
        return blocked.matmul(self.prepared(), xt, self.one_thread)

    def weight_bytes(self) -> int:
        """Bytes of sparse weights (values or codes and codebook, indices, row pointers): what one call reads."""
        return csr_bytes(self.blocks()) if self.engine == "mkl" else blocked.part_bytes(self.parts())

    def held_bytes(self) -> int:
        bias = getattr(self, "bias_col", None)
        return self.weight_bytes() + (bias.nbytes if bias is not None else 0)


class SparseLinear(_CsrHolder):
    """``nn.Linear`` from sparse weights: y = x W^T + b as (W @ x^T)^T; ``width`` columns per CSR block (engine
    "mkl"; the numba engines block by ``blocked.BLOCK_COLS``)."""

    def __init__(self, linear: nn.Linear, width: int = 0, engine: str = "mkl", one_thread: bool = False) -> None:
        super().__init__()
        self.one_thread = one_thread
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.width = (width or linear.in_features) if engine == "mkl" else min(linear.in_features, blocked.BLOCK_COLS)
        weight = linear.weight.detach()
        self._set_matrix(weight, self.width, engine)
        bias = linear.bias.detach()[:, None].contiguous() if linear.bias is not None else None
        self.register_buffer("bias_col", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine == "mkl" or x.dtype != torch.float32:
            xt = x.reshape(-1, self.in_features).t().contiguous()
            return self._matmul(xt).t().contiguous().reshape(*x.shape[:-1], self.out_features)
        if x.dim() == 2:  # no reshapes: a microsecond each, at batch 64 a thirtieth of a LeNet layer
            return blocked.linear(self.prepared(), x, self.one_thread)
        y = blocked.linear(self.prepared(), x.reshape(-1, self.in_features), self.one_thread)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}, "
            f"width={self.width}"
        )


def sparse_conv_supported(conv: nn.Module) -> TypeGuard[Union[nn.Conv1d, nn.Conv2d]]:
    """Conv1d/Conv2d with zero padding given as numbers: what unfold (im2col) computes exactly."""
    return type(conv) in (nn.Conv1d, nn.Conv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _pair(conv: nn.Module, name: str) -> tuple[int, int]:
    value = tuple(getattr(conv, name))
    return (1 if name != "padding" else 0, value[0]) if len(value) == 1 else (value[0], value[1])


class SparseConv(_CsrHolder):
    """Conv1d/Conv2d as im2col (``F.unfold``) times a CSR matrix. Groups become one block-diagonal
    matrix over the unfolded channels, so grouped and depthwise convolutions take a single product."""

    def __init__(self, conv: nn.Module, width: int = 0, engine: str = "mkl", one_thread: bool = False) -> None:
        super().__init__()
        self.one_thread = one_thread
        if not sparse_conv_supported(conv):
            raise TypeError(
                f"{type(conv).__name__} with padding_mode={conv.padding_mode!r}, "
                f"padding={conv.padding!r} has no sparse kernel"
            )
        self.one_d = isinstance(conv, nn.Conv1d)
        self.kernel, self.stride = _pair(conv, "kernel_size"), _pair(conv, "stride")
        self.padding, self.dilation = _pair(conv, "padding"), _pair(conv, "dilation")
        self.in_channels, self.out_channels, self.groups = conv.in_channels, conv.out_channels, conv.groups
        weight = conv.weight.detach().reshape(conv.out_channels, -1)
        cols = weight.shape[1] * conv.groups
        self.width = (width or cols) if engine == "mkl" else min(cols, blocked.BLOCK_COLS)
        per_group = weight.shape[1]
        if conv.groups == 1:
            matrix = weight
        else:  # block-diagonal: output group g reads the unfolded columns of input group g
            matrix = torch.zeros(conv.out_channels, per_group * conv.groups, dtype=weight.dtype)
            rows_per = conv.out_channels // conv.groups
            for g in range(conv.groups):
                rows = slice(g * rows_per, (g + 1) * rows_per)
                matrix[rows, g * per_group : (g + 1) * per_group] = weight[rows]
        self._set_matrix(matrix, self.width, engine)
        bias = conv.bias.detach()[:, None].contiguous() if conv.bias is not None else None
        self.register_buffer("bias_col", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == (2 if self.one_d else 3)
        if unbatched:
            x = x.unsqueeze(0)
        if self.one_d:
            x = x.unsqueeze(2)
        n, _, h, w = x.shape
        cols = F.unfold(x, self.kernel, dilation=self.dilation, padding=self.padding, stride=self.stride)
        positions = cols.shape[2]
        xt = cols.transpose(0, 1).reshape(cols.shape[1], n * positions)
        y = self._matmul(xt)
        oh = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1
        ow = positions // max(1, oh)
        out = y.reshape(self.out_channels, n, oh, ow).transpose(0, 1).contiguous()
        if self.one_d:
            out = out.squeeze(2)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, engine={self.engine}, "
            f"width={self.width}"
        )


def positions(x: torch.Tensor, layer: Union[nn.Linear, nn.Conv1d, nn.Conv2d, Routed]) -> int:
    """How many input vectors a call multiplies (rows of a Linear, pixels x batch of a conv): what a
    kernel's speed depends on, and what a routed layer picks its kernel by."""
    channels = layer.in_channels if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else layer.in_features
    return max(1, x.numel() // max(1, channels))


def density(layer: Union[nn.Linear, nn.Conv1d, nn.Conv2d]) -> float:
    """Fraction of a layer's weights that are nonzero."""
    weight = layer.weight.detach()
    return float(torch.count_nonzero(weight)) / max(1, weight.numel())
