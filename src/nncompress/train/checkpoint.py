"""Checkpoints that hold plain tensors and plain values only.

They load with ``torch.load(weights_only=True)``: no code is ever unpickled.
Pruned weights may be stored as CSR (values, indices, shape) where that is
smaller than dense; masks and ``*_orig`` copies are never written. Files
from elsewhere (bare state dicts, GPU-saved, DataParallel-wrapped) load too.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from nncompress.atomic import atomic_open
from nncompress.chunked import all_finite
from nncompress.coding.csr import CSR, csr_bytes, from_csr, to_csr
from nncompress.errors import CheckpointError, FormatError, ModelError
from nncompress.models import arch_record, fit_shapes_, from_record, is_factory_record, remember, trusted_factory
from nncompress.models.factory import Trust
from nncompress.paths import open_input

CHECKPOINT_KEY = "nncompress_checkpoint"
CHECKPOINT_VERSION = 1
STORAGES = ("auto", "dense", "csr")
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

log = logging.getLogger(__name__)


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


def _materialises_from_state(model: nn.Module) -> bool:
    """Whether every tensor of a meta-device ``model`` is in its state dict, so
    allocating it empty and loading the state leaves nothing uninitialised."""
    in_state = {id(t) for t in model.state_dict(keep_vars=True).values()}
    tensors = [t for m in model.modules() for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    loose = [v for m in model.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    return all(id(t) in in_state for t in tensors) and not loose


def model_for_state(
    arch: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    trust_factory: Trust = False,
    source: str = "the file",
    error: type[Exception] = CheckpointError,
) -> nn.Module:
    """A model of the recorded architecture, shaped to take ``state`` (load it next, with
    ``load_state``: the model may still be on the meta device, to take the state's tensors).

    A factory runs on the meta device first (no memory) and what it builds is
    checked against the stored tensors, so a record that does not describe
    these weights is refused before anything is allocated. When the state
    covers every tensor, the model is then allocated at the stored (possibly
    shrunk) sizes only: kwargs asking for a giant model cost nothing. A model
    with tensors outside its state dict (non-persistent buffers) is built
    again for real, at the factory's sizes, and fitted."""
    if not is_factory_record(arch):
        return _builtin_for_state(arch, state, source, error)
    factory, spec, kwargs = trusted_factory(arch, trust_factory, source, error)
    try:
        with torch.device("meta"):
            probe: Optional[nn.Module] = factory(**kwargs)
    except (ModelError, NotImplementedError, RuntimeError) as exc:  # e.g. a factory that reads its own files
        log.info("model factory %s cannot run on the meta device (%s); building it directly", spec, exc)
        probe = None
    if probe is not None:
        built = _from_probe(
            probe,
            state,
            error,
            f"{source} records the model factory {spec} with kwargs {kwargs}, "
            "but what it builds does not match the stored weights ({problem}): the file is damaged "
            "or the factory has changed since it was written; pass a matching model to load it",
        )
        if built is not None:
            return remember(built, spec, kwargs)
    model = factory(**kwargs)
    fit_shapes_(model, state)
    return remember(model, spec, kwargs)


def _from_probe(
    probe: nn.Module, state: Mapping[str, torch.Tensor], error: type[Exception], message: str
) -> Optional[nn.Module]:
    """A meta-device ``probe`` fitted to ``state`` and checked against it (``message``, with
    ``{problem}`` filled in, when it does not match), when the state covers every tensor it
    holds (load the state next), else None (it must be built for real)."""
    fit_shapes_(probe, state)
    problem = state_mismatch(probe, state)
    if problem:
        raise error(message.replace("{problem}", problem))
    if not _materialises_from_state(probe):
        return None
    tied = len(list(probe.named_parameters(remove_duplicate=False))) != len(list(probe.named_parameters()))
    # untied, it stays on the meta device: ``load_state`` then hands it the state's own tensors (no second
    # copy of the weights while loading); tied weights are allocated, so they stay one parameter
    return probe.to_empty(device="cpu") if tied else probe


def _builtin_for_state(
    arch: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: str, error: type[Exception]
) -> nn.Module:
    """A built-in model of the record, built on the meta device first and checked against ``state``: a
    record asking for huge sizes costs nothing unless the stored tensors have them too."""
    with torch.device("meta"):
        probe = from_record(dict(arch))  # from_record takes a dict; a Mapping is copied into one
    built = _from_probe(
        probe,
        state,
        error,
        f"{source} records the model {arch.get('name')!r} with config "
        f"{arch.get('config')}, but it does not match the stored weights ({{problem}}): the file is "
        "damaged; pass a matching model to load it",
    )
    if built is not None:
        return built
    model = from_record(dict(arch))
    fit_shapes_(model, state)
    return model


def _is_sparse_weight(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith("weight") and tensor.dim() >= 2 and tensor.is_floating_point()


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, *, meta: Optional[Mapping[str, Any]] = None, storage: str = "auto"
) -> dict[str, str]:
    """Write ``model`` atomically; return how each weight was stored ('dense'/'csr')."""
    if storage not in STORAGES:
        raise CheckpointError(f"storage must be one of {STORAGES}, got {storage!r}")
    # no copy: nothing below writes into these tensors (a copy would double a VGG-16's 528 MB while saving)
    state = _fold_pruning_masks({k: v.detach().cpu() for k, v in model.state_dict().items()}, "the model")
    check_finite(state)
    dense: dict[str, torch.Tensor] = {}
    sparse: dict[str, dict[str, Any]] = {}
    layout: dict[str, str] = {}
    for name, tensor in state.items():
        arr = tensor.numpy()
        use_csr = _is_sparse_weight(name, tensor) and (
            storage == "csr" or (storage == "auto" and csr_bytes(arr) < arr.nbytes)
        )
        if use_csr:
            csr = to_csr(arr)
            sparse[name] = {
                "values": torch.from_numpy(csr.values),
                "col_indices": torch.from_numpy(csr.col_indices),
                "crow_indices": torch.from_numpy(csr.crow_indices),
                "shape": list(csr.shape),
            }
            layout[name] = "csr"
        else:
            dense[name] = tensor
            layout[name] = "dense"
    payload = {
        CHECKPOINT_KEY: CHECKPOINT_VERSION,
        "arch": arch_record(model),
        "state": dense,
        "sparse": sparse,
        "meta": dict(meta or {}),
    }
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)
    return layout


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


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into ``model`` strictly ('' when nothing)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:6])}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:6])}")
    if shapes:
        parts.append("; ".join(shapes[:4]))
    return "; ".join(parts)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load with a message that names every mismatch."""
    problem = state_mismatch(model, state)
    if problem:
        raise CheckpointError("checkpoint does not match the model: " + problem)
    own = model.state_dict()
    # casting int8/bool weights to float would load garbage without a word
    cast = [f"{k} ({state[k].dtype})" for k in own if own[k].is_floating_point() and not state[k].is_floating_point()]
    if cast:
        raise CheckpointError(
            f"checkpoint tensor(s) {', '.join(cast[:6])} are not floating point but the model's "
            "are: nncompress does not dequantize; dequantize them (or save the float weights) "
            "and load again"
        )
    # a model on the meta device (``model_for_state``) takes the state's tensors themselves
    assign = any(t.is_meta for t in own.values())
    converted = {k: v.to(own[k].dtype) for k, v in state.items()}
    if assign:
        converted = _owned(converted)
    model.load_state_dict(converted, assign=assign)


def _owned(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every tensor made the sole, contiguous user of its memory: a model that
    takes them as its parameters must not find two sharing bytes (a file may store views of
    one storage, or an expanded tensor), or training one would write the other."""
    out, seen = {}, set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        alone = (
            v.is_contiguous()
            and v.storage_offset() == 0
            and ptr not in seen
            and v.untyped_storage().nbytes() == v.numel() * v.element_size()
        )
        out[k] = v if alone else v.clone(memory_format=torch.contiguous_format)
        seen.add(out[k].untyped_storage().data_ptr())
    return out
