"""Plain-text tables for terminals and ``print``: the CLI and the Python results share them."""
from __future__ import annotations

from typing import Any


def file_table_lines(t: dict[str, Any]) -> list[str]:
    """Deep Compression's per-layer table (Tables 2-3) for a compressed file."""
    rows = [*t["layers"], *([{**t["totals"], "tensor": "total", "codec": "total"}] if t.get("totals") else [])]
    width = max([12, *(len(str(r["tensor"])) + 1 for r in rows)])
    head = (f"{'tensor':<{width}}{'weights':>9}{'kept %':>8}{'w bits':>7}{'w huff':>7}{'i bits':>7}{'i huff':>7}"
            f"{'bytes':>9}{'ratio':>8}")
    lines = [head]
    for r in rows:
        if r["codec"] in ("raw", "quant") or r.get("weight_bits_huffman") is None:
            label = {"raw": "raw", "quant": r.get("dtype", "")}.get(r["codec"], "")
            bits = f"{label:>7}{'':>21}"
        else:
            bits = "".join(f"{r[k]:>7.2f}" if isinstance(r[k], float) else f"{r[k]:>7}" for k in
                           ("weight_bits_fixed", "weight_bits_huffman", "index_bits_fixed", "index_bits_huffman"))
        lines.append(f"{r['tensor']:<{width}}{r['weights']:>9,}{r['kept'] * 100:>7.2f}%{bits}{r['bytes']:>9,}"
                     f"{r['ratio']:>7.1f}x")
    lines.append(f"whole file {t['file_bytes']:,} bytes (headers included) vs {t['dense_bytes']:,} dense fp32 "
                 f"bytes: {t['ratio']:.1f}x smaller")
    return lines
