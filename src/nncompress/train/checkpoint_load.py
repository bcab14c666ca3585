"""Reading a checkpoint: ours or a plain state dict from the wild, every value checked before use.

Nothing is unpickled (``torch.load(weights_only=True)``); files holding Python
objects, damaged fields, newer versions, exotic tensor kinds and CSR weights
whose claimed shapes pass the bound are refused with what to do.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from nncompress.coding.csr import CSR, from_csr
from nncompress.errors import CheckpointError, FormatError
from nncompress.paths import open_input
from nncompress.train.checkpoint_record import (
    CHECKPOINT_KEY,
    CHECKPOINT_VERSION,
    Checkpoint,
    _fold_pruning_masks,
    check_finite,
)

MAX_CSR_ELEMENTS = 2**30
"""Default bound on the dense elements all CSR weights of one checkpoint decode to (4 GiB of float32): a
shape is a claim a few bytes can make, so it is checked before anything is allocated. ``load_checkpoint``'s
``max_elements`` raises it."""
PLAIN_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
    }
)
WIDENED_DTYPES = frozenset(
    getattr(torch, n) for n in dir(torch) if n.startswith("float8_") and isinstance(getattr(torch, n), torch.dtype)
)
"""8-bit floats load widened to float32, which holds each of their values exactly (and which every
operation supports)."""


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop DataParallel/DistributedDataParallel 'module.' prefixes."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _names_python_objects(exc: pickle.UnpicklingError) -> bool:
    """torch's weights-only loader refuses objects it could build unsafely with
    these words; for bytes that are no pickle at all it says neither."""
    text = str(exc).lower()
    return "can still be loaded" in text or "unsupported global" in text


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    if path.suffix == ".nnc":  # a compressed file whose magic is damaged lands here
        return CheckpointError(
            f"{path} is neither an nncompress file (its first bytes are not the file magic; "
            "damaged?) nor a PyTorch checkpoint"
        )
    message = f"{path} is not a readable PyTorch checkpoint, corrupt or not a torch.save file"
    # torch's own text may advise weights_only=False, i.e. running the file's code: never pass that on
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        return CheckpointError(message)
    detail = text.splitlines()[0] if text.strip() else "no detail"
    return CheckpointError(f"{message} ({exc.__class__.__name__}: {detail})")


def _read(path: Path) -> Any:
    with open_input(path, f"checkpoint {path}", CheckpointError) as handle:  # a FIFO or device is refused, not read
        if os.fstat(handle.fileno()).st_size == 0 and path.suffix != ".nnc":
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint: the file is empty (0 bytes; an "
                "interrupted save or copy?): point to the file torch.save wrote"
            )
        return _torch_load(path, handle)


def _torch_load(path: Path, handle: Any) -> Any:
    try:
        # torch warns about pickle protocols it did not write; our one error line says enough
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _names_python_objects(exc):
            raise _unreadable(path, exc) from exc
        raise CheckpointError(
            f"{path} holds pickled Python objects (e.g. a whole model saved with torch.save(model)); "
            "nncompress never unpickles code from a file: re-save it with torch.save(model.state_dict(), path)"
        ) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _check_fields(raw: Mapping[str, Any], path: Path) -> None:
    """Our own dict's fields have fixed types; a damaged or hand-made one must
    fail with the field's name, not with a TypeError deep in the loader."""
    for key in ("state", "sparse", "meta"):
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise CheckpointError(
                f"{path}: checkpoint field {key!r} must be a dict, not a {type(value).__name__}; "
                "the file is damaged or was not written by nncompress: save the model again"
            )
    arch = raw.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise CheckpointError(
            f"{path}: checkpoint field 'arch' must be a dict or absent, not a "
            f"{type(arch).__name__}; the file is damaged or was not written by nncompress"
        )
    bad = [
        repr(k) for k, v in raw.get("state", {}).items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    bad += [repr(k) for k in raw.get("sparse", {}) if not isinstance(k, str)]
    if bad:
        raise CheckpointError(
            f"{path}: checkpoint fields 'state'/'sparse' must map tensor names to tensors; "
            f"bad entries {', '.join(bad[:6])}: the file is damaged, save the model again"
        )


def load_checkpoint(path: str | os.PathLike[str], *, max_elements: int = MAX_CSR_ELEMENTS) -> Checkpoint:
    """Read a checkpoint of ours or a plain state dict from the wild, on the CPU. Every value is checked
    before use: tensor kinds (see ``plain_tensor``), the version, and each CSR weight's structure, whose
    dense size (all of them together) may not pass ``max_elements``."""
    path = Path(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict")
    if CHECKPOINT_KEY in raw:
        _check_version(raw[CHECKPOINT_KEY], path)
        _check_fields(raw, path)
        state = {k: plain_tensor(k, v, path) for k, v in raw.get("state", {}).items()}
        budget = max_elements
        for name, parts in raw.get("sparse", {}).items():
            dense = _sparse_weight(name, parts, path, budget)
            budget -= dense.numel()
            state[name] = dense
        ckpt = Checkpoint(state=_strip_prefix(state), arch=raw.get("arch"), meta=dict(raw.get("meta", {})))
    else:
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
        tensors = {
            k: plain_tensor(k, v, path) for k, v in raw.items() if isinstance(k, str) and isinstance(v, torch.Tensor)
        }
        if not tensors:
            raise CheckpointError(f"{path} holds no tensors: expected a state dict")
        ckpt = Checkpoint(state=_strip_prefix(tensors))
    ckpt.state = _fold_pruning_masks(ckpt.state, path)
    check_finite(ckpt.state)
    return ckpt


def _check_version(version: Any, path: Path) -> None:
    """The version is a plain integer: ``true`` is no version (bool is an int to Python), nor is ``"1"``."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint version must be an integer >= 1, got {version!r} "
            f"({type(version).__name__}): the file is damaged or was not written by nncompress"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer nncompress (checkpoint version {version}; this one "
            f"reads up to {CHECKPOINT_VERSION}); upgrade nncompress to read it"
        )


def plain_tensor(name: str, tensor: torch.Tensor, source: Path | str) -> torch.Tensor:
    """``tensor`` as a dense CPU tensor of a dtype the rest of nncompress handles, or a CheckpointError
    saying what it is and how to re-save it: sparse layouts, meta-device (data-less), quantized, complex
    and packed/sub-byte tensors are refused; 8-bit floats are widened to float32 (exactly)."""
    if tensor.layout != torch.strided:
        layout = str(tensor.layout).replace("torch.", "")
        raise CheckpointError(
            f"{source}: tensor {name} is stored in the {layout} layout; nncompress loads dense "
            "tensors: save it with .to_dense() (nncompress writes its own CSR for pruned weights)"
        )
    if tensor.device.type == "meta":
        raise CheckpointError(
            f"{source}: tensor {name} is a meta-device tensor and holds no values (saved from a "
            "model that was never materialised?): save the model's real weights"
        )
    if tensor.is_quantized:
        raise CheckpointError(
            f"{source}: tensor {name} is quantized ({tensor.dtype}); nncompress does not "
            "dequantize: save tensor.dequantize() (or the float weights) and load again"
        )
    if tensor.is_complex():
        raise CheckpointError(
            f"{source}: tensor {name} is complex ({tensor.dtype}); nncompress compresses real-valued networks only"
        )
    if tensor.dtype in WIDENED_DTYPES:
        return tensor.to(torch.float32)
    if tensor.dtype not in PLAIN_DTYPES:
        raise CheckpointError(
            f"{source}: tensor {name} has dtype {str(tensor.dtype).replace('torch.', '')}, "
            "which nncompress does not load: save it as float32 (or float16/bfloat16)"
        )
    return tensor


def _sparse_weight(name: str, parts: Any, path: Path, budget: int) -> torch.Tensor:
    """One CSR weight of ours, checked field by field and then structurally (``csr.check_csr``) before
    its dense tensor is allocated."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: sparse weight {name} is malformed: {why}; the file is damaged or was "
            "not written by nncompress: save the model again"
        )

    keys = ("values", "col_indices", "crow_indices", "shape")
    if not isinstance(parts, dict) or set(parts) != set(keys):
        got = sorted(map(str, parts)) if isinstance(parts, dict) else type(parts).__name__
        raise bad(f"expected an object with {', '.join(keys)}, got {got}")
    arrays = {}
    for key in keys[:3]:
        t = parts[key]
        if not isinstance(t, torch.Tensor):
            raise bad(f"{key} is a {type(t).__name__}, not a tensor")
        t = plain_tensor(f"{name}.{key}", t, path)
        if t.dim() != 1:
            raise bad(f"{key} must be one-dimensional, got shape {tuple(t.shape)}")
        if key == "values" and not t.is_floating_point():
            raise bad(f"values must be floating point, got {t.dtype}")
        if key != "values" and (t.is_floating_point() or t.dtype == torch.bool):
            raise bad(f"{key} must be integers, got {t.dtype}")
        arrays[key] = t.numpy()
    shape = parts["shape"]
    if (
        not isinstance(shape, (list, tuple))
        or not 1 <= len(shape) <= 8
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise bad(f"shape must be a list of 1 to 8 non-negative integers, got {shape!r}")
    if math.prod(shape) > budget:
        raise bad(
            f"shape {list(shape)} asks for {math.prod(shape):,} elements, more than the {max(budget, 0):,} "
            "left of the bound on dense weights decoded from CSR (load_checkpoint's max_elements raises it)"
        )
    try:
        csr = CSR(arrays["values"], arrays["col_indices"], arrays["crow_indices"], tuple(shape))
        return torch.from_numpy(from_csr(csr))
    except FormatError as exc:
        raise bad(str(exc)) from None
