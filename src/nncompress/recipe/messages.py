"""How a recipe error words what it quotes: short values, kinds, one line, a close key."""

from __future__ import annotations

import difflib
from typing import Any, Optional

from nncompress.errors import ConfigError, RecipeError


def _expected(exc: ConfigError, path: str, source: Optional[str]) -> RecipeError:
    """config.py's "NAME must be X, got V" as a recipe says it, "SOURCE: PATH: expected X, got V";
    an error of no range check as "SOURCE: PATH: message". The error names ``path`` as its field."""
    head = f"{source}: {path}" if source else path
    if exc.expected is None:
        return RecipeError(f"{head}: {exc}", field=path)
    return RecipeError(
        f"{head}: expected {exc.expected}, got {exc.got}", field=path, expected=exc.expected, got=exc.got
    )


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (str, int, float, bool)):
        return f"the value {_show(value)}"
    return f"a {type(value).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
