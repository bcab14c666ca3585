"""Per-tensor codecs of the compressed file: ``raw``, ``quant``, ``const`` and ``shared``, and decoding any tensor.

The codecs live beside this module: ``shared_codec`` (Deep Compression's
pruned, weight-shared layout), ``dense_codecs`` (``raw`` and ``quant``) and
``packed`` (fixed-width indices); their public names are all importable from
here. numpy only.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nncompress.coding import schema
from nncompress.coding.container_format import DEFAULT_WRITE_VERSION
from nncompress.coding.dense_codecs import _decode_const, _decode_quant, _decode_raw
from nncompress.coding.shared_codec import _decode_shared, _field
from nncompress.errors import FormatError

# Defined beside their kin, imported from here by the model file, the tools and the tests.
from nncompress.coding.dense_codecs import AUTO_F16_MIN_SIZE as AUTO_F16_MIN_SIZE
from nncompress.coding.dense_codecs import DTYPES as DTYPES
from nncompress.coding.dense_codecs import F16_MAX as F16_MAX
from nncompress.coding.dense_codecs import F16_MIN_NORMAL as F16_MIN_NORMAL
from nncompress.coding.dense_codecs import QUANT_DTYPES as QUANT_DTYPES
from nncompress.coding.dense_codecs import QUANT_MAX as QUANT_MAX
from nncompress.coding.dense_codecs import RAW_DTYPES as RAW_DTYPES
from nncompress.coding.dense_codecs import Sections as Sections
from nncompress.coding.dense_codecs import constant_value as constant_value
from nncompress.coding.dense_codecs import encode_const as encode_const
from nncompress.coding.dense_codecs import encode_plain as encode_plain
from nncompress.coding.dense_codecs import encode_quant as encode_quant
from nncompress.coding.dense_codecs import encode_raw as encode_raw
from nncompress.coding.dense_codecs import raw_storage as raw_storage
from nncompress.coding.packed import index_width as index_width
from nncompress.coding.shared_codec import ESTIMATE_SLACK as ESTIMATE_SLACK
from nncompress.coding.shared_codec import INDICES as INDICES
from nncompress.coding.shared_codec import LAYOUTS as LAYOUTS
from nncompress.coding.shared_codec import POSITIONS as POSITIONS
from nncompress.coding.shared_codec import REL_BITS_CANDIDATES as REL_BITS_CANDIDATES
from nncompress.coding.shared_codec import SharedTensor as SharedTensor
from nncompress.coding.shared_codec import StreamSizes as StreamSizes
from nncompress.coding.shared_codec import _entry_bytes as _entry_bytes
from nncompress.coding.shared_codec import _streams as _streams
from nncompress.coding.shared_codec import codebook_storage as codebook_storage
from nncompress.coding.shared_codec import encode_shared as encode_shared
from nncompress.coding.shared_codec import shared_layout as shared_layout
from nncompress.coding.shared_codec import split_shared as split_shared
from nncompress.coding.shared_codec import used_entries_only as used_entries_only


def decode_tensor(
    entry: Mapping[str, Any], sections: Mapping[str, bytes], version: int = DEFAULT_WRITE_VERSION
) -> np.ndarray:
    """Rebuild one tensor (float32, or int64 for an int64 raw one) from its section in a file of ``version``,
    checking every claim the header makes (a float tensor holding NaN or Inf is a FormatError)."""
    name = _field(entry, "name", str)
    data = None if schema.sectionless(entry) else sections.get(name)
    if data is None and entry.get("codec") in ("raw", "shared", "quant"):
        raise FormatError(f"tensor {name!r}: section {name!r} is missing")
    plan = schema.check_entry(entry, None if data is None else len(data), version)
    if plan.codec == "alias":
        raise FormatError(f"tensor {name!r} is an alias: it decodes to the tensor it names")
    if plan.codec == "const":
        return _decode_const(plan.shape, entry)
    if data is None:  # check_entry refuses it first; kept so the flow is explicit
        raise FormatError(f"tensor {name!r}: section {name!r} is missing")
    try:
        if plan.codec == "raw":
            return _decode_raw(name, plan.shape, entry, data)
        if plan.codec == "quant":
            return _decode_quant(name, plan.shape, entry, data)
        return _decode_shared(name, plan.shape, entry, data, version)
    except ValueError as exc:
        raise FormatError(f"tensor {name!r}: {exc}") from exc
