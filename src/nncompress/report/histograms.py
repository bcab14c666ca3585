"""Weight histograms as plain numbers (numpy only).

The run directory keeps histograms as JSON rather than as pictures, so the
report can draw every stage of every layer at one scale, and a test can read
the numbers back.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

STAGES = ("dense", "pruned", "shared")


def histogram_record(weights: Mapping[str, np.ndarray], nonzero_only: bool, bins: int = 80) -> dict[str, Any]:
    """Per layer ``{"edges", "counts", "weights", "nonzero"}``.

    ``weights`` is the tensor's size and ``nonzero`` its nonzero entries. With
    ``nonzero_only`` the zeros (pruned positions) are left out, so the
    bimodal shape after pruning shows instead of one spike at zero; counts
    then sum to ``nonzero``, otherwise to ``weights``. Non-finite values
    (which no stage should produce) are left out rather than crash the
    report.
    """
    out: dict[str, Any] = {}
    for name, w in weights.items():
        values = np.asarray(w, dtype=np.float64).ravel()
        nonzero = int(np.count_nonzero(values))
        if nonzero_only:
            values = values[values != 0]
        values = values[np.isfinite(values)]
        counts, edges = np.histogram(values, bins=bins)
        out[name] = {
            "edges": [float(e) for e in edges],
            "counts": [int(c) for c in counts],
            "weights": int(np.asarray(w).size),
            "nonzero": nonzero,
        }
    return out
