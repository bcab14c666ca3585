"""k-means initialisation on pruned LeNet-like layers and on heavy-tailed embedding tables.

For each tensor: the codebook entries linear init leaves used, and the squared error of
linear over density's; for the embedding tables also the mean and minimum row cosine to the
original table after sharing at 5 bits with linear, density and auto. The LeNet-like layers
come from LeNet-300-100 and LeNet-5 trained on scikit-learn's digits (LeNet-5 on inputs
resized to 16x16), pruned at q x std without fine-tuning. Writes bench/results/kmeans_init.json.

    PYTHONPATH=src python bench/kmeans_init.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nncompress.config import TrainConfig
from nncompress.data import load_data
from nncompress.models import build_model
from nncompress.pruning.masks import prunable_layers
from nncompress.quantization import share_weights_
from nncompress.quantization.kmeans import choose_init, kmeans_1d, squared_error
from nncompress.train import fit, set_seed

OUT = Path(__file__).resolve().parent / "results" / "kmeans_init.json"


def compare(values: np.ndarray, k: int) -> dict:
    linear, density = kmeans_1d(values, k, "linear"), kmeans_1d(values, k, "density")
    return {
        "n": int(values.size),
        "k": k,
        "linear_used": len(linear[0]),
        "sse_linear_over_density": round(squared_error(values, *linear) / squared_error(values, *density), 3),
        "auto_picks": choose_init(values, k),
    }


def lenet_layers() -> list[dict]:
    digits = load_data("digits")
    up = lambda x: F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
    digits16 = dataclasses.replace(
        digits, train_x=up(digits.train_x), val_x=up(digits.val_x), test_x=up(digits.test_x), input_shape=(1, 16, 16)
    )
    rows = []
    for name, splits in (("lenet300", digits), ("lenet5", digits16)):
        for seed in (0, 1):
            gen = set_seed(seed)
            model = build_model(name, splits.input_shape, splits.num_classes)
            fit(model, splits.train_x, splits.train_y, TrainConfig(epochs=30, seed=seed), generator=gen)
            for q in (1.0, 1.5):
                for layer, module in prunable_layers(model).items():
                    w = module.weight.detach().numpy().ravel()
                    kept = w[np.abs(w) >= q * w.std()].astype(np.float32)
                    bits = 8 if layer.startswith("conv") else 5
                    while bits > 1 and 2**bits * 2 > kept.size:  # ShareConfig.min_members 2
                        bits -= 1
                    rows.append({"model": name, "seed": seed, "q": q, "layer": layer, **compare(kept, 2**bits)})
                    print(rows[-1], flush=True)
    return rows


def embedding_tables(vocab: int = 30522, dim: int = 64) -> list[dict]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    gauss = torch.randn(vocab, dim)
    tables = {
        "randn**3": torch.randn(vocab, dim) ** 3,
        "student-t df=3": torch.from_numpy(rng.standard_t(3, (vocab, dim)).astype(np.float32)),
        "gauss + 0.1% outliers x20": torch.where(torch.rand(vocab, dim) < 1e-3, 20 * gauss, gauss),
    }
    rows = []
    for name, table in tables.items():
        row = {"table": name, **compare(table.numpy().ravel(), 32)}
        for init in ("linear", "density", "auto"):
            embed = nn.Embedding(vocab, dim)
            embed.weight.data.copy_(table)
            shared = share_weights_({"e": embed}, {"e": 5}, init=init)
            cos = F.cosine_similarity(embed.weight.detach(), table, dim=1)
            row[init] = {
                "used": shared["e"].codebook.numel(),
                "mean_cos": round(float(cos.mean()), 4),
                "min_cos": round(float(cos.min()), 4),
            }
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    torch.set_num_threads(1)
    result = {"embedding_tables": embedding_tables(), "lenet_like_layers": lenet_layers()}
    OUT.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
