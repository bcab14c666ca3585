"""A model <-> the compressed ``.nnc`` file (FORMAT.md).

Shared layers go through the ``shared`` codec, every other tensor is stored
``raw``; the architecture record rides in the header so our own models come
back from the file alone. This module is where torch meets ``coding``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from nncompress.coding.container import MAGIC, read_container, write_container
from nncompress.coding.layers import (SharedTensor, decode_tensor, encode_raw, encode_shared, shared_layout,
                                      split_shared)
from nncompress.errors import FormatError
from nncompress.models import arch_record, fit_shapes_
from nncompress.models.factory import Trust
from nncompress.progress import ProgressFn, report
from nncompress.quantization import SharedLayer
from nncompress.train.checkpoint import load_state, model_for_state, nonfinite

KIND = "nncompress-model"


def is_compressed(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the container's magic bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def shared_tensor(layer: SharedLayer) -> SharedTensor:
    mask = layer.mask.detach().cpu().numpy()
    return SharedTensor(tuple(mask.shape), np.flatnonzero(mask), layer.indices.cpu().numpy(),
                        layer.codebook.detach().cpu().numpy().astype(np.float32))


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


def save_compressed(path: str | os.PathLike[str], model: nn.Module, shared: Mapping[str, SharedLayer], *,
                    meta: Optional[Mapping[str, Any]] = None, rel_bits: Any = "auto",
                    raw_dtype: str = "auto", codebook_dtype: str = "auto", layout: str = "auto",
                    progress: Optional[ProgressFn] = None) -> int:
    """Write ``model`` with its shared layers coded; return the file size. A tensor the
    model holds under several names is stored once; the other names are aliases."""
    by_weight = {f"{name}.weight": layer for name, layer in shared.items()}
    entries: list[dict[str, Any]] = []
    sections: list[tuple[str, bytes]] = []
    state = model.state_dict()
    aliases = tied_keys(model, state, by_weight)
    for done, (key, tensor) in enumerate(state.items(), 1):
        if key in aliases:
            entry, secs = {"name": key, "codec": "alias", "of": aliases[key], "shape": list(tensor.shape)}, []
        elif key in by_weight:
            layer = by_weight[key]
            bits = rel_bits.get(key[: -len(".weight")], "auto") if isinstance(rel_bits, Mapping) else rel_bits
            entry, secs = encode_shared(key, shared_tensor(layer), bits, codebook_dtype, layout)
        else:
            entry, secs = encode_raw(key, tensor.detach().cpu().numpy(), raw_dtype)
        entries.append(entry)
        sections += secs
        report(progress, "coding", done, len(state), tensor=key)
    header = {"kind": KIND, "arch": arch_record(model), "tensors": entries, "meta": dict(meta or {})}
    return write_container(path, header, sections)


@dataclass
class Compressed:
    header: dict[str, Any]
    state: dict[str, torch.Tensor]
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

    def build_model(self, model: Optional[nn.Module] = None, *, trust_factory: Trust = False) -> nn.Module:
        """The decoded weights in ``model`` or, when None, in the recorded architecture
        (a recorded factory that is not an nn.Module class runs only when
        ``trust_factory`` is True or names the same spec)."""
        if model is None:
            arch = self.header.get("arch")
            if not arch:
                raise FormatError("this file records no architecture: pass the model (or --model NAME) to load it")
            if not isinstance(arch, dict):
                raise FormatError(f"the file's architecture record is a {type(arch).__name__}, not an object: "
                                  "the file is damaged; pass the model to load it")
            model = model_for_state(arch, self.state, trust_factory=trust_factory, source="the .nnc file",
                                    error=FormatError)
        fit_shapes_(model, self.state)
        load_state(model, self.state)
        return model.eval()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def load_compressed(path: str | os.PathLike[str]) -> Compressed:
    """Read and check a ``.nnc`` file; decode every tensor (float32; integer buffers int64)."""
    box = read_container(path)
    header = box.header
    if header.get("kind") != KIND or not isinstance(header.get("tensors"), list):
        raise FormatError(f"{path}: not an nncompress model file (kind {header.get('kind')!r})")
    meta = header.get("meta", {})
    layer_sizes = meta.get("dense_weights", {}) if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not _is_count(meta.get("dense_params", 0)) \
            or not isinstance(layer_sizes, dict) or not all(_is_count(v) for v in layer_sizes.values()):
        raise FormatError(f"{path}: header 'meta' must be an object whose dense_params is an integer and whose "
                          "dense_weights maps layer names to integers")
    state: dict[str, Any] = {}
    for entry in header["tensors"]:
        if not isinstance(entry, dict):
            raise FormatError(f"{path}: a tensor entry is not an object")
        if entry.get("name") in state:
            raise FormatError(f"{path}: tensor {entry.get('name')!r} is listed twice")
        if entry.get("codec") == "alias" and box.version >= 3:
            state[entry.get("name")] = entry  # resolved once every stored tensor is decoded
        else:
            state[entry.get("name")] = torch.from_numpy(decode_tensor(entry, box.sections).copy())
    aliases = {name: value for name, value in state.items() if isinstance(value, dict)}
    for name, entry in aliases.items():
        state[name] = _alias(path, entry, state, aliases)
    unused = sorted(set(box.sections) - (set(state) - set(aliases)))
    if unused:
        raise FormatError(f"{path}: section(s) {unused} belong to no tensor")
    bad = nonfinite(state)  # checksums only prove the bytes are as written, not that they are numbers
    if bad:
        raise FormatError(f"{path}: tensor(s) {', '.join(bad[:6])} decode to NaN or Inf: the file is damaged "
                          "or was written from a broken model; compress the model again")
    sizes = {name: len(data) for name, data in box.sections.items()}
    return Compressed(header, state, sizes, os.path.getsize(path))


def _alias(path: Any, entry: Mapping[str, Any], state: Mapping[str, Any], aliases: Iterable[str]) -> torch.Tensor:
    """The stored tensor an alias names (the same tensor object: tied weights stay tied)."""
    target = state.get(entry.get("of"))
    if entry.get("of") in aliases or not isinstance(target, torch.Tensor):
        raise FormatError(f"{path}: tensor {entry.get('name')!r} is an alias of {entry.get('of')!r}, "
                          "which is not a stored tensor of the file")
    if list(target.shape) != entry.get("shape"):
        raise FormatError(f"{path}: alias {entry.get('name')!r} has shape {entry.get('shape')}, its tensor "
                          f"{entry.get('of')!r} {list(target.shape)}")
    return target


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
            rows.append({"tensor": name, "codec": "alias", "of": e["of"], "weights": 0, "bytes": 0,
                         "dense_bytes": 0, "ratio": 0.0, "kept": 1.0, "nonzero": 0})
            continue
        weights = math.prod(e["shape"])
        from_shared = e["codec"] == "shared" or "nonzero" in e
        if from_shared and name.endswith(".weight"):
            weights = max(weights, before.get(name[: -len(".weight")], 0))  # neurons removed count as pruned
        nbytes = section_bytes.get(name, 0)
        row = {"tensor": name, "codec": e["codec"], "weights": weights, "bytes": nbytes,
               "dense_bytes": 4 * weights, "ratio": 4 * weights / max(1, nbytes)}
        if e["codec"] == "shared":
            nz = max(1, e["nonzero"])
            _, positions, indices = split_shared(e, nbytes)  # one section: codebook, positions, indices
            where, coding = shared_layout(e)
            k = e["codebook_size"]
            row.update({"kept": e["nonzero"] / max(1, weights), "nonzero": e["nonzero"],
                        "layout": f"{where}/{coding}",
                        "weight_bits_fixed": max(1, math.ceil(math.log2(max(2, k)))),
                        "weight_bits_huffman": 8 * indices / nz,
                        "index_bits_fixed": e["rel_bits"] if where == "relative" else 8 * positions / nz,
                        "index_bits_huffman": 8 * positions / nz,
                        "codebook_size": k, "codebook_used": k,
                        "filler_entries": e["entries"] - e["nonzero"] if where == "relative" else 0})
        else:
            row.update({"kept": e.get("nonzero", weights) / max(1, weights), "nonzero": e.get("nonzero", weights)})
        rows.append(row)
    dense = 4 * header.get("meta", {}).get("dense_params", 0) or sum(r["dense_bytes"] for r in rows)
    return {"layers": rows, "totals": _totals(rows), "file_bytes": file_bytes, "dense_bytes": dense,
            "ratio": dense / max(1, file_bytes), "payload_bytes": sum(r["bytes"] for r in rows)}


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's totals row: bits averaged over the shared tensors' kept weights."""
    shared = [r for r in rows if r["codec"] == "shared"]
    coded = sum(r["nonzero"] for r in shared)
    weights = sum(r["weights"] for r in rows)
    out: dict[str, Any] = {"weights": weights, "nonzero": sum(r["nonzero"] for r in rows),
                           "bytes": sum(r["bytes"] for r in rows), "dense_bytes": sum(r["dense_bytes"] for r in rows)}
    out["kept"] = out["nonzero"] / max(1, weights)
    out["ratio"] = out["dense_bytes"] / max(1, out["bytes"])
    for key in ("weight_bits_fixed", "weight_bits_huffman", "index_bits_fixed", "index_bits_huffman"):
        out[key] = sum(r[key] * r["nonzero"] for r in shared) / coded if coded else None
    return out

