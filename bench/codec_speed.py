"""Codec speed on a VGG-16-sized model (138 M parameters, about 8 % kept,
random weights): encode and decode seconds, MB/s of dense fp32 equivalent,
peak memory (tracemalloc); beside it, zstd of the same sparse arrays (values +
int32 flat positions) in the same run. Writes bench/results/codec_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from nncompress.coding.container import dumps, loads
from nncompress.coding.layers import SharedTensor, decode_tensor, encode_raw, encode_shared

RESULTS = Path(__file__).resolve().parent / "results"
CONV = [
    (64, 3),
    (64, 64),
    (128, 64),
    (128, 128),
    (256, 128),
    (256, 256),
    (256, 256),
    (512, 256),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
]
FC = [(4096, 25088), (4096, 4096), (1000, 4096)]


def vgg16(density: float, seed: int = 0) -> list[tuple[str, SharedTensor, np.ndarray]]:
    rng = np.random.default_rng(seed)
    layers = []
    shapes = [(f"conv{i}", (o, c, 3, 3), 8) for i, (o, c) in enumerate(CONV, 1)]
    shapes += [(f"fc{i}", s, 5) for i, s in enumerate(FC, 6)]
    for name, shape, bits in shapes:
        size = int(np.prod(shape))
        keep = rng.random(size) < density
        positions = np.flatnonzero(keep)
        k = 2**bits
        # bell-shaped index use, as k-means on real weights gives
        indices = np.clip(rng.normal(k / 2, k / 6, len(positions)), 0, k - 1).astype(np.int64)
        codebook = np.sort(rng.normal(0, 0.05, k)).astype(np.float32)
        bias = rng.normal(0, 0.01, shape[0]).astype(np.float32)
        layers.append((name, SharedTensor(shape, positions, indices, codebook), bias))
    return layers


def timed(fn, repeats: int):
    """(result, median seconds over ``repeats`` plain runs, peak bytes of one more run under
    tracemalloc, which counts numpy's buffers; timing runs are untraced, as it slows them)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, statistics.median(times), peak


def encode(layers) -> bytes:
    entries, sections = [], []
    for name, t, bias in layers:
        e, s = encode_shared(f"{name}.weight", t)
        entries.append(e)
        sections += s
        e, s = encode_raw(f"{name}.bias", bias)
        entries.append(e)
        sections += s
    return dumps({"kind": "nncompress-model", "arch": None, "tensors": entries, "meta": {}}, sections)


def decode(blob: bytes) -> int:
    box = loads(blob)
    total = 0
    for entry in box.header["tensors"]:
        total += decode_tensor(entry, box.sections, box.version).size
    return total


def zstd_same(layers, repeats: int) -> tuple[int, float, float]:
    import zstandard

    raw = io.BytesIO()
    for _, t, bias in layers:
        raw.write(t.codebook[t.indices].astype(np.float32).tobytes())
        raw.write(t.positions.astype(np.int32).tobytes())
        raw.write(bias.tobytes())
    data = raw.getvalue()
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        packed = zstandard.ZstdCompressor(level=3).compress(data)
        enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        zstandard.ZstdDecompressor().decompress(packed)
        dec.append(time.perf_counter() - t0)
    return len(packed), statistics.median(enc), statistics.median(dec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each; the median is reported")
    args = parser.parse_args()
    layers = vgg16(0.08)
    params = sum(int(np.prod(t.shape)) + len(b) for _, t, b in layers)
    kept = sum(len(t.positions) for _, t, _ in layers)
    dense_mb = 4 * params / 1e6
    blob, enc_s, enc_peak = timed(lambda: encode(layers), args.repeats)
    n, dec_s, dec_peak = timed(lambda: decode(blob), args.repeats)
    if n != params:
        raise SystemExit(f"decoded {n} values, expected {params}")
    z_bytes, z_enc, z_dec = zstd_same(layers, args.repeats)
    res = {
        "params": params,
        "kept": kept,
        "dense_mb": dense_mb,
        "file_bytes": len(blob),
        "repeats": args.repeats,
        "encode_s": round(enc_s, 3),
        "decode_s": round(dec_s, 3),
        "encode_mb_s": round(dense_mb / enc_s, 1),
        "decode_mb_s": round(dense_mb / dec_s, 1),
        "encode_peak_mb": round(enc_peak / 1e6, 1),
        "decode_peak_mb": round(dec_peak / 1e6, 1),
        "encode_peak_over_model": round(enc_peak / 1e6 / dense_mb, 2),
        "decode_peak_over_model": round(dec_peak / 1e6 / dense_mb, 2),
        "zstd3_bytes": z_bytes,
        "zstd3_encode_s": round(z_enc, 3),
        "zstd3_decode_s": round(z_dec, 3),
        "machine": f"{platform.machine()}",
        "command": "python bench/codec_speed.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "codec_speed.json").write_text(json.dumps(res, indent=2))
    md = [
        "# Codec speed: VGG-16-sized model (138 M parameters, 8 % kept, random weights)",
        "",
        f"`{res['command']}`, {res['machine']}, {res['date']}. Median of {args.repeats} runs each, "
        "in one process; peak memory from one more run under tracemalloc (numpy buffers included), "
        f"beside the model's {dense_mb:,.0f} MB of dense fp32.",
        "",
        "| | bytes | encode s | decode s | encode MB/s (dense fp32) | decode MB/s | peak MB enc / dec "
        "| peak / model enc / dec |",
        "|---|---|---|---|---|---|---|---|",
        f"| nncompress .nnc | {len(blob):,} | {res['encode_s']} | {res['decode_s']} | {res['encode_mb_s']} | "
        f"{res['decode_mb_s']} | {res['encode_peak_mb']} / {res['decode_peak_mb']} | "
        f"{res['encode_peak_over_model']} / {res['decode_peak_over_model']} |",
        f"| zstd -3 of values + int32 positions | {z_bytes:,} | {res['zstd3_encode_s']} | "
        f"{res['zstd3_decode_s']} | {round(dense_mb / max(z_enc, 1e-9), 1)} | "
        f"{round(dense_mb / max(z_dec, 1e-9), 1)} | - | - |",
    ]
    (RESULTS / "codec_speed.md").write_text("\n".join(md) + "\n")
    sys.stderr.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
