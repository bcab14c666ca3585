"""Plain-text tables for terminals and ``print``: the CLI and the Python results share them."""

from __future__ import annotations

from typing import Any, Sequence

from nncompress.coding.schema import SECTIONLESS

GAP = "  "  # between columns, so a long name never touches the number after it
_BITS = ("weight_bits_fixed", "weight_bits_huffman", "index_bits_fixed", "index_bits_huffman")


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """Columns as wide as their widest cell, two spaces apart; the first ``left`` columns
    left-aligned (names), the rest right-aligned (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return [
        GAP.join(
            f"{cell:<{w}}" if i < left else f"{cell:>{w}}"
            for i, (cell, w) in enumerate(zip(map(str, line), widths, strict=True))
        ).rstrip()
        for line in (header, *rows)
    ]


def _bits(r: dict[str, Any]) -> list[str]:
    if r["codec"] in ("raw", "quant", "const") or r.get("weight_bits_huffman") is None:
        label = {"raw": "raw", "const": "const", "quant": r.get("dtype", "")}.get(r["codec"], "")
        return [str(label), "", "", ""]
    return [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in _BITS]


def file_table_lines(t: dict[str, Any]) -> list[str]:
    """Deep Compression's per-layer table (Tables 2-3) for a compressed file."""
    rows = [*t["layers"], *([{**t["totals"], "tensor": "total", "codec": "total"}] if t.get("totals") else [])]
    header = ("tensor", "weights", "kept %", "w bits", "w huff", "i bits", "i huff", "bytes", "ratio")
    cells = [
        [
            str(r["tensor"]),
            f"{r['weights']:,}",
            f"{r['kept'] * 100:.2f}",
            *_bits(r),
            f"{r['bytes']:,}",
            f"{r['ratio']:.1f}x" if r["bytes"] or r["codec"] not in SECTIONLESS else "-",  # nothing stored
        ]
        for r in rows
    ]
    return [
        *text_table(header, cells),
        f"whole file {t['file_bytes']:,} bytes (headers included) vs {t['dense_bytes']:,} dense fp32 "
        f"bytes: {t['ratio']:.1f}x smaller",
    ]
