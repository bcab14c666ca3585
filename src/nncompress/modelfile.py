"""A model <-> the compressed ``.nnc`` file (FORMAT.md).

Shared layers go through the ``shared`` codec, every other tensor is stored
``raw``; the architecture record rides in the header so our own models come
back from the file alone. This module is where torch meets ``coding``.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, cast

import numpy as np
import torch
from torch import nn

from nncompress.coding.container import DEFAULT_WRITE_VERSION, MAGIC, read_container, read_header, write_container
from nncompress.coding.layers import (
    Sections,
    SharedTensor,
    decode_tensor,
    encode_plain,
    encode_quant,
    encode_shared,
    shared_layout,
    split_shared,
)
from nncompress.coding.schema import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_TENSOR_BYTES,
    KIND,
    check_budget,
    check_model_header,
)
from nncompress.errors import ConfigError, FormatError, ModelError
from nncompress.models import Builtin, arch_record, fit_shapes_, from_record, is_factory_record
from nncompress.models.factory import Trust
from nncompress.paths import open_input
from nncompress.progress import ProgressFn, report
from nncompress.quantization import SharedLayer
from nncompress.train.checkpoint import load_state, model_for_state, state_mismatch


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the container's magic bytes (PathError for a FIFO,
    device or folder, which no open may block on)."""
    if not os.path.lexists(path):  # whoever reads it next says what was expected there
        return False
    try:
        with open_input(path) as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def shared_tensor(layer: SharedLayer) -> SharedTensor:
    mask = layer.mask.detach().cpu().numpy()
    return SharedTensor(
        tuple(mask.shape),
        np.flatnonzero(mask),
        layer.indices.cpu().numpy(),
        layer.codebook.detach().cpu().numpy().astype(np.float32),
    )


def tied_keys(model: nn.Module, state: Mapping[str, torch.Tensor], primary: Iterable[str] = ()) -> dict[str, str]:
    """State-dict key -> the key it is stored under, for tensors the model holds under
    several names (a Linear tied to an Embedding). The stored one is the first of
    ``primary`` (the shared weights) among them, else the first in state-dict order."""
    groups: dict[int, list[str]] = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for key, tensor in named:
        if key in state:
            groups.setdefault(id(tensor), []).append(key)
    order = {key: i for i, key in enumerate(state)}
    preferred = set(primary)
    out: dict[str, str] = {}
    for keys in groups.values():
        keys = sorted(set(keys), key=order.__getitem__)
        if len(keys) > 1:
            first = next((k for k in keys if k in preferred), keys[0])
            out.update({k: first for k in keys if k != first})
    return out


def save_compressed(
    path: str | os.PathLike[str],
    model: nn.Module,
    shared: Mapping[str, SharedLayer],
    *,
    meta: Optional[Mapping[str, Any]] = None,
    rel_bits: Any = "auto",
    raw_dtype: str = "auto",
    codebook_dtype: str = "auto",
    layout: str = "auto",
    quantized: Optional[Mapping[str, str]] = None,
    progress: Optional[ProgressFn] = None,
) -> int:
    """Write ``model`` with its shared layers coded; return the file size. A tensor the
    model holds under several names is stored once; the other names are aliases.
    ``quantized`` maps state-dict keys of unshared tensors to "int8" or "int16"
    (per-channel uniform quantisation, the codec version 4 of the format added)."""
    quantized = dict(quantized or {})
    clash = sorted(set(quantized) & {f"{name}.weight" for name in shared})
    if clash:
        raise ConfigError(f"tensor(s) {clash[:5]} are both shared and quantised: choose one")
    by_weight = {f"{name}.weight": layer for name, layer in shared.items()}
    entries: list[dict[str, Any]] = []
    sections: list[tuple[str, bytes]] = []
    state = model.state_dict()
    aliases = tied_keys(model, state, by_weight)
    secs: Sections
    for done, (key, tensor) in enumerate(state.items(), 1):
        if key in aliases:
            entry, secs = {"name": key, "codec": "alias", "of": aliases[key], "shape": list(tensor.shape)}, []
        elif key in by_weight:
            layer = by_weight[key]
            bits = rel_bits.get(key[: -len(".weight")], "auto") if isinstance(rel_bits, Mapping) else rel_bits
            entry, secs = encode_shared(key, shared_tensor(layer), bits, codebook_dtype, layout, DEFAULT_WRITE_VERSION)
        elif key in quantized and tensor.is_floating_point():
            entry, secs = encode_quant(key, tensor.detach().cpu().numpy(), quantized[key])
        else:
            entry, secs = encode_plain(key, tensor.detach().cpu().numpy(), raw_dtype)
        entries.append(entry)
        sections += secs
        report(progress, "coding", done, len(state), tensor=key)
    unknown = sorted(set(quantized) - set(state))
    if unknown:
        raise ConfigError(f"quantized names tensor(s) {unknown[:5]} the model does not hold")
    header = {"kind": KIND, "arch": arch_record(model), "tensors": entries, "meta": dict(meta or {})}
    return write_container(path, header, sections, DEFAULT_WRITE_VERSION)


@dataclass
class CompressedHeader:
    """A model file's checked header and section sizes, its weights not read (``inspect``)."""

    header: dict[str, Any]
    section_bytes: dict[str, int]
    file_bytes: int

    @property
    def arch(self) -> Any:
        """The architecture record, as ``Checkpoint.arch``."""
        return self.header.get("arch")

    @property
    def meta(self) -> dict[str, Any]:
        """The header's free-form metadata, as ``Checkpoint.meta``."""
        return dict(self.header.get("meta") or {})


@dataclass
class Compressed(CompressedHeader):
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def build_model(self, model: Optional[nn.Module] = None, *, trust_factory: Trust = False) -> nn.Module:
        """The decoded weights in ``model`` or, when None, in the recorded architecture
        (a recorded factory that is not an nn.Module class runs only when
        ``trust_factory`` is True or names the same spec). The record is checked against
        the decoded shapes on the meta device before a model is allocated."""
        if model is None:
            arch = self.header.get("arch")
            if not arch:
                raise FormatError("this file records no architecture: pass the model (or --model NAME) to load it")
            if not is_factory_record(arch):
                _check_builtin_record(arch, self.state)
            model = model_for_state(
                arch, self.state, trust_factory=trust_factory, source="the .nnc file", error=FormatError
            )
        fit_shapes_(model, self.state)
        load_state(model, self.state)
        return model.eval()


def _check_builtin_record(arch: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> None:
    """A built-in model's record, built on the meta device (no memory) and compared with
    the decoded tensors, so sizes the weights do not bear out never reach an allocator."""
    try:
        with torch.device("meta"):
            probe = cast(Builtin, from_record(dict(arch)))  # not a factory record: one of MODELS
    except ModelError as exc:
        raise FormatError(f"the file's architecture record ('arch') is invalid: {exc}") from None
    if probe.config() != arch["config"]:  # exactly what a writer records: no "300" for 300
        raise FormatError(
            f"the file's architecture record ('arch') is invalid: its config {str(arch['config'])[:300]} "
            f"is not the model's own record {str(probe.config())[:300]}"
        )
    problem = state_mismatch(probe, state)
    if problem:
        raise FormatError(
            f"the file's architecture record ('arch': {arch.get('name')!r} with "
            f"{str(arch.get('config'))[:200]}) does not match its tensors ({problem[:300]}): "
            "the file is damaged; pass the model to load it"
        )


def _section_sizes(box: Any) -> list[tuple[str, int]]:
    return [(e.name, e.length) for e in box.entries]


def read_compressed_header(path: str | os.PathLike[str]) -> CompressedHeader:
    """A ``.nnc`` file's header and section sizes, every field checked against FORMAT.md;
    no weight is read or decoded, so any file is described in bounded time and memory
    (section checksums are checked only by ``load_compressed``)."""
    box = read_header(path)
    try:
        check_model_header(box.header, _section_sizes(box), box.version)
    except FormatError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    return CompressedHeader(box.header, {e.name: e.length for e in box.entries}, os.path.getsize(path))


_LIMITS: ContextVar[tuple[int, int]] = ContextVar(
    "nncompress_decode_limits", default=(DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_TENSOR_BYTES)
)


@contextmanager
def decode_limits(max_decoded_bytes: int, max_tensor_bytes: Optional[int] = None) -> Iterator[None]:
    """Within the block, ``load_compressed`` calls that name no limit use these (the
    command line's ``--max-decoded-mb``); ``max_tensor_bytes`` defaults to the total."""
    tensor = max_decoded_bytes if max_tensor_bytes is None else max_tensor_bytes
    check_budget([], max_decoded_bytes, tensor)  # the limits' own types
    token = _LIMITS.set((max_decoded_bytes, tensor))
    try:
        yield
    finally:
        _LIMITS.reset(token)


def load_compressed(
    path: str | os.PathLike[str], *, max_decoded_bytes: Optional[int] = None, max_tensor_bytes: Optional[int] = None
) -> Compressed:
    """Read and check a ``.nnc`` file; decode every tensor (float32; integer buffers int64).

    Every header claim is checked before anything is decoded, and the tensors' decoded
    size (4 bytes a value, 8 for int64) against ``max_tensor_bytes`` per tensor (default
    1 GiB) and ``max_decoded_bytes`` in all (default 2 GiB; None: the ``decode_limits``
    in force): a ``DecodeLimitError`` says how to raise them."""
    total, tensor = _LIMITS.get()
    box = read_container(path)
    try:
        plans = check_model_header(box.header, _section_sizes(box), box.version)
        check_budget(
            plans,
            total if max_decoded_bytes is None else max_decoded_bytes,
            tensor if max_tensor_bytes is None else max_tensor_bytes,
        )
        state: dict[str, torch.Tensor] = {}
        for entry, plan in zip(box.header["tensors"], plans, strict=True):
            if plan.codec != "alias":
                array = np.require(decode_tensor(entry, box.sections, box.version), requirements=["C", "W"])
                state[plan.name] = torch.from_numpy(array)
        for entry, plan in zip(box.header["tensors"], plans, strict=True):
            if plan.codec == "alias":
                state[plan.name] = state[entry["of"]]  # the same tensor object: tied weights stay tied
        state = {plan.name: state[plan.name] for plan in plans}  # in the file's order
    except FormatError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    sizes = {name: len(data) for name, data in box.sections.items()}
    return Compressed(box.header, sizes, os.path.getsize(path), state)


def layer_table(header: Mapping[str, Any], section_bytes: Mapping[str, int], file_bytes: int) -> dict[str, Any]:
    """Deep Compression's Tables 2-3 from the file: per tensor, kept %, weight
    and index bits (fixed width / after Huffman), bytes and ratio; for a shared
    tensor also its layout and the codebook entries used (``codebook_used``;
    the run's summary has how many k-means was allowed). The whole
    file is compared with the fp32 bytes of the model before pruning (from the
    header's ``meta.dense_params`` when present: dead neurons may be gone)."""
    rows = []
    before = header.get("meta", {}).get("dense_weights") or {}
    for e in header["tensors"]:
        name = e["name"]
        if e["codec"] == "alias":  # a tied tensor: its weights and bytes are counted where it is stored
            rows.append(
                {
                    "tensor": name,
                    "codec": "alias",
                    "of": e["of"],
                    "weights": 0,
                    "bytes": 0,
                    "dense_bytes": 0,
                    "ratio": 0.0,
                    "kept": 1.0,
                    "nonzero": 0,
                }
            )
            continue
        weights = math.prod(e["shape"])
        from_shared = e["codec"] == "shared" or "nonzero" in e
        if from_shared and name.endswith(".weight"):
            weights = max(weights, before.get(name[: -len(".weight")], 0))  # neurons removed count as pruned
        nbytes = section_bytes.get(name, 0)
        row = {
            "tensor": name,
            "codec": e["codec"],
            "weights": weights,
            "bytes": nbytes,
            "dense_bytes": 4 * weights,
            "ratio": 4 * weights / max(1, nbytes),
        }
        if e["codec"] == "shared":
            nz = max(1, e["nonzero"])
            _, positions, indices = split_shared(e, nbytes)  # one section: codebook, positions, indices
            where, coding = shared_layout(e)
            k = e["codebook_size"]
            row.update(
                {
                    "kept": e["nonzero"] / max(1, weights),
                    "nonzero": e["nonzero"],
                    "layout": f"{where}/{coding}",
                    "weight_bits_fixed": max(1, math.ceil(math.log2(max(2, k)))),
                    "weight_bits_huffman": 8 * indices / nz,
                    "index_bits_fixed": e["rel_bits"] if where == "relative" else 8 * positions / nz,
                    "index_bits_huffman": 8 * positions / nz,
                    "codebook_size": k,
                    "codebook_used": k,
                    "filler_entries": e["entries"] - e["nonzero"] if where == "relative" else 0,
                }
            )
        else:
            row.update(
                {
                    "kept": e.get("nonzero", weights) / max(1, weights),
                    "nonzero": e.get("nonzero", weights),
                    "dtype": e["dtype"],
                }
            )
        rows.append(row)
    dense = 4 * header.get("meta", {}).get("dense_params", 0) or sum(r["dense_bytes"] for r in rows)
    return {
        "layers": rows,
        "totals": _totals(rows),
        "file_bytes": file_bytes,
        "dense_bytes": dense,
        "ratio": dense / max(1, file_bytes),
        "payload_bytes": sum(r["bytes"] for r in rows),
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's totals row: bits averaged over the shared tensors' kept weights."""
    shared = [r for r in rows if r["codec"] == "shared"]
    coded = sum(r["nonzero"] for r in shared)
    weights = sum(r["weights"] for r in rows)
    out: dict[str, Any] = {
        "weights": weights,
        "nonzero": sum(r["nonzero"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "dense_bytes": sum(r["dense_bytes"] for r in rows),
    }
    out["kept"] = out["nonzero"] / max(1, weights)
    out["ratio"] = out["dense_bytes"] / max(1, out["bytes"])
    for key in ("weight_bits_fixed", "weight_bits_huffman", "index_bits_fixed", "index_bits_huffman"):
        out[key] = sum(r[key] * r["nonzero"] for r in shared) / coded if coded else None
    return out
