"""Checks on plain values (numbers read from JSON, YAML or a file header).

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds;
a count, a size or a seed written as ``true`` must still be refused.
"""

from __future__ import annotations

from typing import Any, TypeGuard


def is_int(value: Any) -> TypeGuard[int]:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


__all__ = ["is_int"]
