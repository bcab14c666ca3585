"""A Hugging Face transformer built from a small config (no download), label-free, end to end."""

from __future__ import annotations

import pytest
import torch

import nncompress as nnc

transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency (pip install -e .[dev])")

QUICK_PRUNE = nnc.PruneConfig(
    q0=0.5,
    q_step=0.5,
    q_max=1.0,
    epochs_per_step=1,
    final_epochs=1,
    recover_epochs=0,
    refine_steps=0,
    tolerance=1.0,
    lr=1e-3,
    batch_size=40,
)
QUICK_SHARE = nnc.ShareConfig(epochs=1, batch_size=40, lr=1e-3)


def _config() -> "transformers.BertConfig":
    return transformers.BertConfig(
        vocab_size=200,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )


def _token_batches() -> tuple[list, list, list]:
    """Tokenised text as a user's loader yields it: dicts of int64 ids and masks, some padded."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 200, (240, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[::3, 9:] = 0
    ids[mask == 0] = 0
    batches = [{"input_ids": ids[i : i + 40], "attention_mask": mask[i : i + 40]} for i in range(0, 240, 40)]
    return batches[:4], batches[4:5], batches[5:]


def _outputs(model: torch.nn.Module, batch: dict, field: str) -> torch.Tensor:
    with torch.no_grad():
        return getattr(model.eval()(**batch), field)


def test_encoder_without_labels_is_distilled_by_cosine_and_its_embeddings_shared(tmp_path) -> None:
    torch.manual_seed(0)
    model = transformers.BertModel(_config()).eval()
    train, val, test = _token_batches()
    result = nnc.compress(
        model, (train, val, test), tmp_path / "bert.nnc", nnc.CompressConfig(prune=QUICK_PRUNE, share=QUICK_SHARE)
    )
    assert result.metric == "mean_cosine" and result.summary["objective"]["kind"] == "cosine"
    assert result.score_before == pytest.approx(1.0) and result.score_after > 0.95
    rows = {r["tensor"]: r for r in result.table.rows}
    assert rows["embeddings.word_embeddings.weight"]["codec"] == "shared"  # the biggest table is not left raw
    assert rows["encoder.layer.0.attention.self.query.weight"]["kept"] < 0.9  # Linear layers were pruned
    assert result.ratio > 3
    # back from the file into the user's own class: the same outputs as the model compress returned
    loaded = nnc.load(result.path, model=transformers.BertModel(_config()))
    torch.testing.assert_close(
        _outputs(loaded, test[0], "last_hidden_state"), _outputs(result.model, test[0], "last_hidden_state")
    )
    # the token ids were never turned into floats on the way
    assert test[0]["input_ids"].dtype == torch.int64


def test_masked_lm_with_tied_embeddings_is_distilled_by_kl(tmp_path) -> None:
    torch.manual_seed(1)
    model = transformers.BertForMaskedLM(_config()).eval()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    train, val, test = _token_batches()
    result = nnc.compress(
        model, (train, val, test), tmp_path / "mlm.nnc", nnc.CompressConfig(prune=None, share=QUICK_SHARE)
    )
    assert result.metric == "agreement"  # outputs came from .logits: KL to the dense model, top-1 agreement
    assert result.score_after > 0.5
    rows = {r["tensor"]: r for r in result.table.rows}
    assert rows["cls.predictions.decoder.weight"]["codec"] == "alias"  # the tied table is stored once
    loaded = nnc.load(result.path, model=transformers.BertForMaskedLM(_config()))
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()
    torch.testing.assert_close(_outputs(loaded, test[0], "logits"), _outputs(result.model, test[0], "logits"))
