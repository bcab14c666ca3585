"""Codecs that store every value of a tensor: ``raw`` (float32/float16/int64) and ``quant`` (int8/int16 with
one scale per output channel), ``const`` (one value for all, no section), and the dtypes the file stores
values in."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nncompress.coding import schema
from nncompress.coding.container_format import INT_MAX, INT_MIN
from nncompress.errors import ConfigError, FormatError

DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
RAW_DTYPES: dict[str, np.dtype[Any]] = {**DTYPES, "int64": np.dtype("<i8")}
#: float16's normal range: a centroid of 0 or a magnitude in it rounds with relative error
#: <= 2**-11, far below the spread of the weights one centroid stands for.
F16_MIN_NORMAL = 6.103515625e-05
F16_MAX = 65504.0
Sections = list[tuple[str, bytes]]

#: ``raw_dtype="auto"`` halves float tensors from this many values up (weights of unshared
#: layers); smaller ones (biases, norms, batch-norm statistics) cost little and stay float32.
AUTO_F16_MIN_SIZE = 4096


def raw_storage(array: np.ndarray, dtype: str = "auto") -> str:
    """The dtype a raw tensor is stored in. Integer and bool tensors (a batch-norm step
    counter) are int64, which float16 would round past 2048; ``"auto"`` stores float
    tensors of ``AUTO_F16_MIN_SIZE`` or more values as float16 when every value is
    within float16's range, others as float32."""
    if array.dtype.kind in "iub":
        return "int64"
    if dtype == "auto":
        big = array.size >= AUTO_F16_MIN_SIZE
        fits = big and bool(np.all(np.abs(np.asarray(array, dtype=np.float64)) <= F16_MAX))
        return "float16" if fits else "float32"
    if dtype not in DTYPES:
        raise ConfigError(f"raw dtype must be 'auto', 'float32' or 'float16', not {dtype!r}")
    return dtype


def encode_raw(name: str, array: np.ndarray, dtype: str = "auto") -> tuple[dict[str, Any], Sections]:
    """``dtype`` applies to floating-point tensors (see ``raw_storage``)."""
    dtype = raw_storage(array, dtype)
    data = np.ascontiguousarray(array, dtype=RAW_DTYPES[dtype])
    return {"name": name, "codec": "raw", "shape": list(array.shape), "dtype": dtype}, [(name, data.tobytes())]


def constant_value(array: np.ndarray) -> int | float | None:
    """The one value of a tensor of one or more equal values (finite, for floats), else None: such a tensor
    is stored as that value (``const``). A BatchNorm stored as its affine map has two of them per layer; a
    single value too (a BatchNorm's batch count): its own section would cost a header entry of about 20 bytes
    (name, offset, length, CRC) besides its data, the constant a few digits."""
    if array.size < 1:
        return None
    flat = array.reshape(-1)
    first = flat[0]
    if array.dtype.kind in "iub":
        value = int(first)
        return value if INT_MIN <= value <= INT_MAX and bool(np.all(flat == first)) else None
    as32 = np.float32(first)
    same = bool(np.all(flat == first)) and bool(np.all(np.signbit(flat) == np.signbit(first)))  # -0.0 is not 0.0
    if not np.isfinite(as32) or not same or float(as32) != float(first):
        return None  # a value float32 would round is stored raw (exactly, in its own dtype)
    return float(as32)


def encode_const(name: str, array: np.ndarray, value: int | float) -> tuple[dict[str, Any], Sections]:
    dtype = "int64" if array.dtype.kind in "iub" else "float32"
    return {"name": name, "codec": "const", "shape": list(array.shape), "dtype": dtype, "value": value}, []


def encode_plain(name: str, array: np.ndarray, raw_dtype: str = "auto") -> tuple[dict[str, Any], Sections]:
    """An unshared, unquantised tensor: ``const`` when it is one repeated value, else ``raw``."""
    value = constant_value(array)
    return encode_const(name, array, value) if value is not None else encode_raw(name, array, raw_dtype)


def _decode_const(shape: tuple[int, ...], entry: Mapping[str, Any]) -> np.ndarray:
    """Checked by ``schema.check_entry`` already: dtype and value."""
    return np.full(shape, entry["value"], dtype=np.int64 if entry["dtype"] == "int64" else np.float32)


#: largest magnitude of a ``quant`` value: symmetric ranges, so zero (a pruned weight) is exact
QUANT_MAX = {"int8": 127, "int16": 32767}
QUANT_DTYPES: dict[str, np.dtype[Any]] = {"int8": np.dtype("<i1"), "int16": np.dtype("<i2")}


def encode_quant(name: str, array: np.ndarray, dtype: str = "int8") -> tuple[dict[str, Any], Sections]:
    """Uniform symmetric quantisation, one float32 scale per output channel (first axis):
    each value becomes round(w / scale) with scale = max |w| of its channel / QUANT_MAX, so a
    channel's largest weight is exact to float32 rounding and zeros stay zero."""
    if dtype not in QUANT_MAX:
        raise ConfigError(f"quantised dtype must be one of {sorted(QUANT_MAX)}, not {dtype!r}")
    values = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"tensor {name!r} holds NaN or Inf; it cannot be quantised")
    per_channel = schema.quant_scales(values.shape)[-1]
    rows = values.reshape(per_channel, -1) if values.size else values.reshape(per_channel, 0)
    peak = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(per_channel)
    scales = (peak / QUANT_MAX[dtype]).astype(np.float32)
    safe = np.where(scales > 0, scales.astype(np.float64), 1.0)
    q = np.clip(np.rint(rows / safe[:, None]), -QUANT_MAX[dtype], QUANT_MAX[dtype]).astype(QUANT_DTYPES[dtype])
    entry = {"name": name, "codec": "quant", "shape": list(values.shape), "dtype": dtype, "scales": per_channel}
    return entry, [(name, scales.astype("<f4").tobytes() + q.tobytes())]


def _decode_quant(name: str, shape: tuple[int, ...], entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    """Checked by ``schema.check_entry`` already: dtype, scale count, section length."""
    count, dtype = entry["scales"], entry["dtype"]
    scales = np.frombuffer(data, dtype="<f4", count=count)
    if not np.all(np.isfinite(scales)) or np.any(scales < 0):
        raise FormatError(f"tensor {name!r}: its scales must be finite and >= 0")
    q = np.frombuffer(data, dtype=QUANT_DTYPES[dtype], offset=4 * count).reshape(count, -1)
    if q.size and int(q.min()) < -QUANT_MAX[dtype]:  # the dtype's own range ends at +QUANT_MAX
        raise FormatError(f"tensor {name!r}: a {dtype} value is outside -{QUANT_MAX[dtype]}..{QUANT_MAX[dtype]}")
    if q.size and np.any((scales == 0)[:, None] & (q != 0)):
        raise FormatError(f"tensor {name!r}: a channel with scale 0 holds a nonzero value")
    return (q.astype(np.float32) * scales[:, None]).reshape(shape)


#: raw values checked for NaN/Inf at a time (bounds the temporary)
_FINITE_CHUNK = 1 << 22


def _decode_raw(name: str, shape: tuple[int, ...], entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    dt = RAW_DTYPES[entry["dtype"]]
    values = np.frombuffer(data, dtype=dt)
    if dt.kind == "i":
        return values.astype(np.int64).reshape(shape)
    for i in range(0, len(values), _FINITE_CHUNK):
        if not np.all(np.isfinite(values[i : i + _FINITE_CHUNK])):
            raise FormatError(f"tensor {name!r}: its values hold NaN or Inf")
    return values.astype(np.float32).reshape(shape)
