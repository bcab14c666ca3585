"""The model file's header, checked field by field before anything is decoded or built.

A header with valid checksums can still lie: anyone can edit it and recompute the
CRCs. Every key FORMAT.md defines is checked here for type and range, every count
against the section bytes that must hold it, and the section order against the
tensor order, so the decoders downstream only ever see claims a writer could have
made. Errors are ``FormatError`` naming the field. The decoded size of every tensor
is known from its checked shape, so ``check_budget`` can refuse a file before one
byte of weights is allocated. numpy-free and torch-free on purpose: this runs for
``inspect`` too, which never decodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from nncompress.coding.container_format import INT_MAX, INT_MIN
from nncompress.errors import ConfigError, DecodeLimitError, FormatError
from nncompress.plain import is_int

KIND = "nncompress-model"
#: the model header's own keys (the container adds ``sections`` and ``data_bytes``, or ``data_crc32`` from version 7)
HEADER_KEYS = frozenset({"kind", "arch", "meta", "tensors"})
RAW_ITEMSIZE = {"float32": 4, "float16": 2, "int64": 8}
#: the ``const`` codec's value types (version 6): every value of the tensor is ``value``
CONST_DTYPES = ("float32", "int64")
F32_MAX = 3.4028234663852886e38
#: the ``quant`` codec's integer widths (version 4)
QUANT_ITEMSIZE = {"int8": 1, "int16": 2}
BOOK_ITEMSIZE = {"float32": 4, "float16": 2}
#: a Huffman alphabet ends at 2**16, and a relative layout's index alphabet is K + 1
MAX_CODEBOOK = 65535
#: the widest codebook, in bits, whose 2**bits entries fit MAX_CODEBOOK: 15
MAX_CODEBOOK_BITS = MAX_CODEBOOK.bit_length() - 1
#: a b-bit relative index is a Huffman symbol below 2**b
MAX_REL_BITS = 16
#: numpy's and torch's dimension limits are larger; no layer needs more
MAX_DIMS = 32
#: a tensor name is a state-dict key; longer is a lie that would only bloat messages
MAX_NAME = 4096
#: defaults of the decoded-size limits (float32 bytes; int64 raw tensors count 8 per value)
DEFAULT_MAX_DECODED_BYTES = 2 * 1024**3
DEFAULT_MAX_TENSOR_BYTES = 1024**3
_U64 = 2**64 - 1

_COMMON = {"name", "codec", "shape"}
_SHARED = _COMMON | {"codebook_size", "codebook_dtype", "nonzero", "positions_bytes"}
#: (positions, indices) as stored (None = key absent) -> the keys an entry of that layout has, exactly
LAYOUT_KEYS: dict[tuple[Optional[str], Optional[str]], frozenset[str]] = {
    (None, None): frozenset(_SHARED | {"rel_bits", "entries"}),
    ("all", None): frozenset(_SHARED | {"positions"}),
    ("all", "packed"): frozenset(_SHARED | {"positions", "indices"}),
    ("bitmap", "packed"): frozenset(_SHARED | {"positions", "indices"}),
}


@dataclass(frozen=True)
class TensorPlan:
    """A checked tensor entry: its shape, the bytes it decodes to, and its section's size."""

    name: str
    codec: str
    shape: tuple[int, ...]
    decoded_bytes: int
    section_bytes: int


def _where(name: Any, key: str) -> str:
    return f"tensor {str(name)[:200]!r}: field {key!r}"


def _int(entry: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = entry.get(key)
    if not is_int(v) or not lo <= v <= hi:
        shown = repr(v)[:60] if not is_int(v) or abs(v) < 10**30 else "a huge number"
        raise FormatError(f"{_where(entry.get('name'), key)} is {shown}; it must be an integer in {lo}..{hi}")
    return v


def _choice(entry: Mapping[str, Any], key: str, allowed: Sequence[str]) -> str:
    v = entry.get(key)
    if not isinstance(v, str) or v not in allowed:
        raise FormatError(
            f"{_where(entry.get('name'), key)} is {repr(v)[:60]}; it must be one of {', '.join(map(repr, allowed))}"
        )
    return v


def _keys(
    entry: Mapping[str, Any], required: frozenset[str] | set[str], optional: frozenset[str] | set[str] = frozenset()
) -> None:
    missing = sorted(set(required) - set(entry))
    extra = sorted(set(entry) - set(required) - set(optional))
    if missing or extra:
        what = [f"lacks {missing}"] * bool(missing) + [f"has unknown key(s) {[k[:40] for k in extra[:5]]}"] * bool(
            extra
        )
        raise FormatError(
            f"tensor {str(entry.get('name'))[:200]!r}: its {entry.get('codec')!r} entry {' and '.join(what)}"
        )


def check_shape(entry: Mapping[str, Any]) -> tuple[int, ...]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(is_int(d) and 0 <= d <= _U64 for d in shape):
        raise FormatError(
            f"{_where(entry.get('name'), 'shape')} is {repr(shape)[:80]}; it must be a list of at "
            f"most {MAX_DIMS} integers >= 0"
        )
    return tuple(shape)


def packed_bytes(n: int, k: int) -> int:
    """Bytes of ``n`` fixed-width indices into a codebook of ``k`` entries."""
    return (n * max(0, k - 1).bit_length() + 7) // 8


def _shared(entry: Mapping[str, Any], size: int, section: int, version: int) -> None:
    name = entry.get("name")
    positions, indices = entry.get("positions"), entry.get("indices")
    layout = (positions, indices)
    known = all(v is None or isinstance(v, str) for v in layout) and layout in LAYOUT_KEYS
    if not known or (version < 3 and layout != (None, None)):
        raise FormatError(
            f"tensor {str(name)[:200]!r}: positions={repr(positions)[:40]}, indices="
            f"{repr(indices)[:40]} is not a layout of a version {version} file"
        )
    _keys(entry, LAYOUT_KEYS[layout])
    k = _int(entry, "codebook_size", 0, MAX_CODEBOOK)
    book = k * BOOK_ITEMSIZE[_choice(entry, "codebook_dtype", tuple(BOOK_ITEMSIZE))]
    n = _int(entry, "nonzero", 0, size)
    if (k == 0) != (n == 0) or k > n:
        raise FormatError(
            f"tensor {str(name)[:200]!r}: a codebook of {k} entries for {n} kept weights; every "
            "codebook entry is used by some weight (so 1 <= codebook_size <= nonzero, or both 0)"
        )
    pos = _int(entry, "positions_bytes", 0, _U64)
    if book + pos > section:
        raise FormatError(
            f"tensor {str(name)[:200]!r}: a codebook of {k} {entry['codebook_dtype']} values "
            f"({book} bytes) and positions_bytes {pos} do not fit its section of {section} bytes"
        )
    if positions is None:
        _int(entry, "rel_bits", 1, MAX_REL_BITS)
        _int(entry, "entries", n, _U64)
        return
    if positions == "all" and n != size:
        raise FormatError(f"{_where(name, 'nonzero')} is {n}, but positions 'all' keeps every one of {size} weights")
    want = 0 if positions == "all" else (size + 7) // 8
    if pos != want:
        raise FormatError(
            f"{_where(name, 'positions_bytes')} is {pos}; positions {positions!r} of {size} weights take {want} bytes"
        )
    if indices == "packed" and section != book + pos + packed_bytes(n, k):
        raise FormatError(
            f"tensor {str(name)[:200]!r}: its section has {section} bytes; codebook, positions and "
            f"{n} packed indices take {book + pos + packed_bytes(n, k)}"
        )


def check_entry(entry: Any, section: Optional[int], version: int) -> TensorPlan:
    """One tensor entry against FORMAT.md; ``section`` is its section's length (None: an alias)."""
    if not isinstance(entry, dict):
        raise FormatError(f"a tensor entry is a {type(entry).__name__}, not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise FormatError(
            f"a tensor's field 'name' is {repr(name)[:60]}; it must be a non-empty string of at "
            f"most {MAX_NAME} characters"
        )
    codecs = (
        ("raw", "shared")
        + (("alias",) if version >= 3 else ())
        + (("quant",) if version >= 4 else ())
        + (("const",) if version >= 6 else ())
    )
    codec = _choice(entry, "codec", codecs)
    shape = check_shape(entry)
    size = math.prod(shape)
    if codec == "alias":
        _keys(entry, _COMMON | {"of"})
        if not isinstance(entry["of"], str):
            raise FormatError(f"{_where(name, 'of')} is {repr(entry['of'])[:60]}, not a tensor name")
        return TensorPlan(name, codec, shape, 0, 0)
    if codec == "const":
        dtype = _const(entry)
        return TensorPlan(name, codec, shape, size * (8 if dtype == "int64" else 4), 0)
    if section is None:
        raise FormatError(f"tensor {name[:200]!r} has no section")
    if codec == "raw":
        _keys(entry, _COMMON | {"dtype"}, {"nonzero"} if version >= 3 else set())
        dtype = _choice(entry, "dtype", tuple(RAW_ITEMSIZE))
        if "nonzero" in entry:
            _int(entry, "nonzero", 0, size)
        if section != size * RAW_ITEMSIZE[dtype]:
            raise FormatError(
                f"tensor {name[:200]!r}: its section has {section} bytes; {size} {dtype} values "
                f"(shape {list(shape)[:8]}) take {size * RAW_ITEMSIZE[dtype]}"
            )
        return TensorPlan(name, codec, shape, size * (8 if dtype == "int64" else 4), section)
    if codec == "quant":
        _quant(entry, shape, section)
        return TensorPlan(name, codec, shape, size * 4, section)
    _shared(entry, size, section, version)
    return TensorPlan(name, codec, shape, size * 4, section)


def _const(entry: Mapping[str, Any]) -> str:
    """A ``const`` entry's keys and value: an int64 tensor's an integer in int64's range, a float32 tensor's a
    finite number float32 can hold."""
    _keys(entry, _COMMON | {"dtype", "value"})
    dtype = _choice(entry, "dtype", CONST_DTYPES)
    value = entry["value"]
    ok = is_int(value) and INT_MIN <= value <= INT_MAX if dtype == "int64" else _finite(value) and abs(value) <= F32_MAX
    if not ok:
        want = "an integer in int64's range" if dtype == "int64" else "a finite number within float32's range"
        raise FormatError(f"{_where(entry.get('name'), 'value')} is {repr(value)[:60]}; a {dtype} constant is {want}")
    return dtype


#: the codecs whose entries store no section of their own
SECTIONLESS = ("alias", "const")


def sectionless(entry: Any) -> bool:
    """Whether an entry stores no section of its own (an alias, a constant)."""
    return isinstance(entry, dict) and entry.get("codec") in SECTIONLESS


def quant_scales(shape: Sequence[int]) -> tuple[int, ...]:
    """The scale counts a ``quant`` entry of ``shape`` may have: one for the tensor, or
    one per slice along the first axis (an output channel)."""
    return (1,) if len(shape) < 1 or shape[0] in (0, 1) else (1, shape[0])


def _quant(entry: Mapping[str, Any], shape: tuple[int, ...], section: int) -> None:
    name = entry.get("name")
    _keys(entry, _COMMON | {"dtype", "scales"})
    dtype = _choice(entry, "dtype", tuple(QUANT_ITEMSIZE))
    scales = entry.get("scales")
    if not is_int(scales) or scales not in quant_scales(shape):
        raise FormatError(
            f"{_where(name, 'scales')} is {repr(scales)[:60]}; for shape {list(shape)[:8]} it must be "
            f"one of {list(quant_scales(shape))}"
        )
    want = 4 * scales + math.prod(shape) * QUANT_ITEMSIZE[dtype]
    if section != want:
        raise FormatError(
            f"tensor {str(name)[:200]!r}: its section has {section} bytes; {scales} float32 scales "
            f"and {math.prod(shape)} {dtype} values take {want}"
        )


def check_meta(meta: Any) -> None:
    """``meta``: an object; the keys FORMAT.md defines have their types, the rest is free."""
    if not isinstance(meta, dict):
        raise FormatError(f"header field 'meta' is a {type(meta).__name__}, not an object")
    dense = meta.get("dense_params", 0)
    if not is_int(dense) or dense < 0:
        raise FormatError(f"header field 'meta.dense_params' is {repr(dense)[:60]}, not an integer >= 0")
    weights = meta.get("dense_weights", {})
    if not isinstance(weights, dict) or not all(is_int(v) and v >= 0 for v in weights.values()):
        raise FormatError("header field 'meta.dense_weights' must map layer names to integers >= 0")
    if "transform" in meta:
        _check_transform(meta["transform"])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_transform(t: Any) -> None:
    ok = isinstance(t, dict) and (
        (set(t) == {"normalize"} and isinstance(t["normalize"], str) and t["normalize"] != "explicit")
        or (
            set(t) == {"normalize", "mean", "std"}
            and t["normalize"] == "explicit"
            and _finite(t["mean"])
            and _finite(t["std"])
            and t["std"] > 0
        )
    )
    if not ok:
        raise FormatError(
            f"header field 'meta.transform' is {repr(t)[:120]}; it must be {{\"normalize\": name}} "
            'or {"normalize": "explicit", "mean": m, "std": s > 0}'
        )


def check_arch(arch: Any) -> None:
    """The architecture record's form: null, a built-in's or a factory's (what it builds is
    checked against the tensors later, before any memory is given to it)."""
    if arch is None:
        return
    ok = isinstance(arch, dict) and (
        (set(arch) == {"name", "config"} and isinstance(arch["name"], str) and isinstance(arch["config"], dict))
        or (
            set(arch) == {"factory", "kwargs"} and isinstance(arch["factory"], str) and isinstance(arch["kwargs"], dict)
        )
    )
    if not ok:
        raise FormatError(
            f"header field 'arch' is {repr(arch)[:120]}; it must be null, {{\"name\": str, "
            '"config": {...}} or {"factory": "module:name", "kwargs": {...}}'
        )


def check_model_header(
    header: Mapping[str, Any], sections: Sequence[tuple[str, int]], version: int
) -> list[TensorPlan]:
    """Every claim of a model file's header against FORMAT.md and its section table
    ``sections`` ((name, length) in data-area order); the checked tensors in order."""
    if header.get("kind") != KIND:
        raise FormatError(f"not an nncompress model file (header field 'kind' is {repr(header.get('kind'))[:60]})")
    extra = sorted(set(header) - HEADER_KEYS)
    missing = sorted(HEADER_KEYS - set(header))
    if extra or missing:
        raise FormatError(f"model header has unknown key(s) {[k[:40] for k in extra[:5]]} or lacks {missing}")
    tensors = header["tensors"]
    if not isinstance(tensors, list):
        raise FormatError(f"header field 'tensors' is a {type(tensors).__name__}, not a list")
    check_meta(header["meta"])
    check_arch(header["arch"])
    lengths = dict(sections)
    plans: list[TensorPlan] = []
    seen: set[str] = set()
    for entry in tensors:
        name = entry.get("name") if isinstance(entry, dict) else None
        plan = check_entry(
            entry, None if sectionless(entry) else lengths.get(name) if isinstance(name, str) else None, version
        )
        if plan.name in seen:
            raise FormatError(f"tensor {plan.name[:200]!r} is listed twice")
        seen.add(plan.name)
        plans.append(plan)
    stored = [p.name for p in plans if p.codec not in SECTIONLESS]
    if [name for name, _ in sections] != stored:
        orphans = sorted(set(lengths) - set(stored))
        what = (
            f"section(s) {[o[:60] for o in orphans[:5]]} belong to no tensor"
            if orphans
            else "the sections do not stand in the order of the tensors"
        )
        raise FormatError(f"{what}; each stored tensor has exactly one section, in 'tensors' order")
    shapes = {p.name: p.shape for p in plans if p.codec != "alias"}
    for p, entry in zip(plans, tensors, strict=True):
        if p.codec == "alias" and shapes.get(entry["of"]) != p.shape:
            raise FormatError(
                f"tensor {p.name[:200]!r} is an alias of {entry['of'][:200]!r}, which is not a stored "
                "tensor of the file with the same shape"
            )
    return plans


def check_budget(plans: Sequence[TensorPlan], max_decoded_bytes: int, max_tensor_bytes: int) -> int:
    """The bytes the tensors decode to, or DecodeLimitError before anything is allocated."""
    for name, value in (("max_decoded_bytes", max_decoded_bytes), ("max_tensor_bytes", max_tensor_bytes)):
        if not is_int(value) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, not {value!r}")
    how = (
        "if you trust the file, raise the limit: --max-decoded-mb MB on the command line, or "
        "max_decoded_bytes= / max_tensor_bytes= in Python"
    )
    for p in plans:
        if p.decoded_bytes > max_tensor_bytes:
            raise DecodeLimitError(
                f"tensor {p.name[:200]!r} (shape {list(p.shape)[:8]}) would decode to "
                f"{_mb(p.decoded_bytes)}, above the limit of {_mb(max_tensor_bytes)} per tensor; "
                f"{how}"
            )
    total = sum(p.decoded_bytes for p in plans)
    if total > max_decoded_bytes:
        raise DecodeLimitError(
            f"the file's tensors would decode to {_mb(total)}, above the limit of "
            f"{_mb(max_decoded_bytes)} in all; {how}"
        )
    return total


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 2**70 else f"about 2**{n.bit_length() - 1} bytes"
