"""One-dimensional k-means, the clustering behind Deep Compression's weight sharing.

In one dimension the clusters of a Lloyd iteration are contiguous runs of the
sorted values, cut at the midpoints between neighbouring centroids. So the
values are sorted once, and each iteration finds the cuts with
``np.searchsorted`` (O(k log n)) and each cluster's sum from a prefix sum
(O(k)): a hundred iterations over ten million values cost less than one pass
over them. The final assignment in the caller's order is one
``np.searchsorted`` of the values on the midpoints (O(n log k)) and the final
centroids one ``np.bincount``, so the codebook returned is exactly the mean of
the values labelled with it.

Memory stays bounded on layers of a hundred million weights: the sorted copy is
float32, and the float64 prefix sums and the final assignment are made a chunk
at a time (each running sum carried into the next chunk, so the result is the
same bit for bit as one pass); no per-value temporary is wider than a chunk.
"""

from __future__ import annotations

import numpy as np

from nncompress.chunked import chunks
from nncompress.config import SHARE_INITS  # one list: the config checks what k-means accepts
from nncompress.errors import ConfigError, ModelError

#: ``auto`` keeps linear (Deep Compression's choice for accuracy: it keeps centroids on the
#: rare large weights) unless linear leaves more than ``AUTO_EMPTY`` of the centroids empty
#: or its squared error is more than ``AUTO_ERROR_RATIO`` times density's (and density's is
#: lower). Moderately pruned LeNet layers stay under both (at most 48% empty, 2.2x); see
#: bench/results/kmeans_init.md for where it does and does not switch.
AUTO_EMPTY = 0.5
AUTO_ERROR_RATIO = 4.0


def check_init(init: str) -> None:
    """Refuse an unknown initialisation before any work (or any layer) is touched."""
    if init not in SHARE_INITS:
        raise ConfigError(f"k-means init must be one of {', '.join(SHARE_INITS)}; got {init!r}")


def _as_values(values: np.ndarray) -> np.ndarray:
    """Flatten to float32 (the codebook's type), refusing NaN/Inf and overflow."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiub":
        raise ModelError(f"k-means needs real numbers; got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ModelError("k-means values contain NaN or Inf; the weights cannot be clustered")
    v32 = arr.astype(np.float32, copy=False)
    if not np.isfinite(v32).all():
        raise ModelError("k-means values overflow float32; the weights cannot be clustered")
    return v32


def _initial_centroids(sorted_vals: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """Starting centroids (float64, ascending) from the sorted values."""
    n = sorted_vals.size
    lo, hi = float(sorted_vals[0]), float(sorted_vals[-1])
    if init == "linear":
        # Han et al. found this best: it keeps a few centroids on the rare large weights.
        return np.linspace(lo, hi, k)
    if init == "density":
        # Evenly spaced points of the empirical CDF: the (i + 1/2)/k quantiles.
        pos = ((np.arange(k) + 0.5) * (n / k)).astype(np.int64)
        return sorted_vals[np.minimum(pos, n - 1)].astype(np.float64)
    if init != "random":
        raise ConfigError(f"k-means init {init!r} has no starting centroids of its own")
    distinct = sorted_vals[np.concatenate(([True], sorted_vals[1:] != sorted_vals[:-1]))]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(distinct, size=k, replace=False)).astype(np.float64)


#: values per chunk of the passes that need a float64 or int64 temporary (32 MB each)
CHUNK = 1 << 22


def _centred_prefix(s: np.ndarray, centre: float) -> np.ndarray:
    """``[0, cumsum(s - centre)]`` in float64, a chunk at a time: each chunk's sum starts from
    the last one's total (cumsum adds in order), so it equals one whole-array cumsum."""
    prefix = np.empty(s.size + 1, dtype=np.float64)
    prefix[0] = 0.0
    for run in chunks(s.size, CHUNK):
        part = prefix[run.start : run.stop + 1]  # starts at the running total
        part[1:] = s[run]
        part[1:] -= centre
        np.cumsum(part, out=part)
    return prefix


def _count_at_most(s: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How many of the float32 values ``s`` (ascending) are <= each float64 point. Each point
    is first taken down to the float32 at or below it, which keeps every count exact and lets
    numpy search ``s`` as it is (float64 points would have it copy ``s`` to float64)."""
    p32 = points.astype(np.float32)
    over = p32.astype(np.float64) > points
    p32[over] = np.nextafter(p32[over], np.float32(-np.inf))
    return np.searchsorted(s, p32, side="right")


def _distinct(s: np.ndarray, limit: int) -> tuple[int, np.ndarray | None]:
    """The number of distinct values of ascending ``s`` and, when at most ``limit``, the values."""
    count, found = 0, []
    for run in chunks(s.size, CHUNK):
        a = run.start
        part = s[a : run.stop + 1]  # one value of overlap: a run across chunks counts once
        new = np.flatnonzero(part[1:] != part[:-1]) + 1
        if a == 0:
            new = np.concatenate(([0], new))
        count += len(new)
        if count <= limit:
            found.append(part[new])
    return count, (np.concatenate(found) if count <= limit else None)


def _lloyd_sorted(s: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Lloyd iterations on ascending float32 values ``s``; returns ascending centroids."""
    n = s.size
    centre = float(s[n // 2])  # prefix sums of centred values lose less precision
    prefix = _centred_prefix(s, centre)
    span = float(s[-1]) - float(s[0])
    c = centroids
    prev: np.ndarray | None = None
    for _ in range(max_iter):
        mids = 0.5 * (c[:-1] + c[1:])
        # A value on a midpoint goes to the lower cluster, as in the final assignment.
        bounds = np.concatenate(([0], _count_at_most(s, mids), [n]))
        if prev is not None and np.array_equal(bounds, prev):
            break  # same clusters as last time: the centroids cannot move
        counts = bounds[1:] - bounds[:-1]
        full = counts > 0
        lo, hi = bounds[:-1][full], bounds[1:][full]
        means = (prefix[hi] - prefix[lo]) / counts[full] + centre
        new = c.copy()  # an empty cluster keeps its place until the end
        new[full] = np.clip(means, s[lo], s[hi - 1])
        new.sort()
        shift = float(np.max(np.abs(new - c)))
        c, prev = new, bounds
        if shift <= tol * span:
            break
    return c


def kmeans_1d(
    values: np.ndarray,
    k: int,
    init: str = "linear",
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster scalars into at most ``k`` centroids.

    Returns ``(codebook, labels)``: the codebook float32, ascending, with no
    unused entry (empty clusters are dropped, so it may hold fewer than ``k``);
    ``labels`` int64, one per value, indexing the codebook. With at most ``k``
    distinct values the codebook is exactly those values. ``tol`` is relative
    to the range of the values. The result depends only on the input and
    ``seed``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k-means k must be an integer >= 1; got {k!r}")
    check_init(init)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ConfigError(f"k-means max_iter must be an integer >= 0; got {max_iter!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ConfigError(f"k-means tol must be finite and >= 0; got {tol!r}")
    v32 = _as_values(values)
    k = int(k)
    if v32.size == 0:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)

    s = np.sort(v32)
    distinct = _distinct(s, k)[1]
    if distinct is not None:
        labels = np.empty(v32.size, dtype=np.int64)
        for run in chunks(v32.size, CHUNK):
            labels[run] = np.searchsorted(distinct, v32[run])
        return distinct, labels

    if init == "auto":
        codebook, labels, _ = _auto(v32, s, k, seed, int(max_iter), float(tol))
        return codebook, labels
    return _assign(v32, _lloyd_sorted(s, _initial_centroids(s, k, init, seed), int(max_iter), float(tol)))


def squared_error(values: np.ndarray, codebook: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared quantisation errors, in float64."""
    v = np.asarray(values).reshape(-1)
    book = np.asarray(codebook, dtype=np.float64)
    if v.size <= CHUNK:  # one pass (numpy's pairwise sum), as it always was for layers this size
        return float(np.sum((v.astype(np.float64) - book[labels]) ** 2))
    total = 0.0
    for run in chunks(v.size, CHUNK):
        err = v[run].astype(np.float64) - book[labels[run]]
        total += float(np.sum(err * err))
    return total


def _auto(
    v32: np.ndarray, s: np.ndarray, k: int, seed: int, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, str]:
    """Both inits, measured: linear unless it leaves most centroids empty or its error
    exceeds ``AUTO_ERROR_RATIO`` x density's."""
    runs = {}
    for init in ("linear", "density"):
        codebook, labels = _assign(v32, _lloyd_sorted(s, _initial_centroids(s, k, init, seed), max_iter, tol))
        runs[init] = (codebook, labels, squared_error(v32, codebook, labels))
    linear, density = runs["linear"], runs["density"]
    empty = 1 - len(linear[0]) / k
    worse = empty > AUTO_EMPTY or linear[2] > AUTO_ERROR_RATIO * density[2]
    pick = "density" if worse and density[2] < linear[2] else "linear"
    return runs[pick][0], runs[pick][1], pick


def choose_init(values: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 100, tol: float = 1e-7) -> str:
    """The init ``auto`` takes for these values ("linear" or "density")."""
    v32 = _as_values(values)
    s = np.sort(v32)
    if v32.size == 0 or _distinct(s, k)[1] is not None:
        return "linear"
    return _auto(v32, s, int(k), seed, int(max_iter), float(tol))[2]


def _assign(v32: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Final labels in the caller's order, and the codebook as the exact means, empty clusters dropped."""
    mids = 0.5 * (c[:-1] + c[1:])
    labels = np.empty(v32.size, dtype=np.int64)
    counts = np.zeros(c.size, dtype=np.int64)
    sums = np.zeros(c.size, dtype=np.float64)
    for run in chunks(v32.size, CHUNK):
        v64 = v32[run].astype(np.float64)
        part = labels[run]
        part[:] = np.searchsorted(mids, v64, side="left")
        counts += np.bincount(part, minlength=c.size)
        sums += np.bincount(part, weights=v64, minlength=c.size)
    used = counts > 0
    codebook = (sums[used] / counts[used]).astype(np.float32)
    remap = np.cumsum(used) - 1
    # Two float64 centroids may round to one float32 value: merge them.
    if codebook.size > 1 and np.any(codebook[1:] <= codebook[:-1]):
        codebook, inverse = np.unique(codebook, return_inverse=True)
        remap = inverse.reshape(-1)[remap]
    for run in chunks(v32.size, CHUNK):
        labels[run] = remap[labels[run]]
    return codebook, labels
