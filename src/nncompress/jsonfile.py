"""JSON from files that may come from anywhere (a run folder someone sent), read within bounds.

Arrays nested thousands deep exhaust the parser's recursion, a 400-digit
integer overflows every later float conversion, 1e400 reads as infinity, and
a huge file would be read whole. Each is refused up front as one typed error
naming the file, so no reader further on meets RecursionError or OverflowError.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from nncompress.errors import NNCompressError, ReportError
from nncompress.paths import read_bounded

MAX_JSON_BYTES = 256 << 20
"""Largest JSON file read (a run's histograms of a large model stay far below)."""
MAX_DEPTH = 32
"""Deepest nesting accepted; the files nncompress writes nest five levels at most."""
MAX_INT = 2**63 - 1
"""Largest magnitude of an integer: counts and byte sizes fit in 64 bits."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INT:
        raise ValueError(
            f"integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range (at most {MAX_INT} in magnitude)"
        )
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range for a 64-bit float")
    return value


def _check_depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    raise ValueError(f"nested more than {limit} levels deep")
                stack.append((child, depth + 1))


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with integers, floats and nesting bounded; ValueError when a bound is passed."""
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} levels deep") from None
    _check_depth(value, max_depth)
    return value


def load_json_file(
    path: str | os.PathLike[str],
    error: type[NNCompressError] = ReportError,
    limit: int = MAX_JSON_BYTES,
    what: Optional[str] = None,
) -> Any:
    """The JSON value in a regular file of at most ``limit`` bytes, or ``error`` naming the file and
    what is wrong (malformed, too deep, a number out of range, not a regular file, too large)."""
    data = read_bounded(path, limit, what or str(path), error)
    try:
        return loads(data.decode("utf-8"))
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and the bounds above
        raise error(f"{what or path}: malformed JSON ({exc})") from None
