"""What "better" means: classification, label-free distillation (KL, cosine), a user metric, and the
warning when validation cannot resolve the tolerance. Tiny seeded models, end to end."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nncompress.config import PruneConfig, ShareConfig, TrainConfig
from nncompress.data import Splits, splits_from_loaders
from nncompress.errors import ConfigError
from nncompress.modelfile import load_compressed
from nncompress.pipeline import check_fits, compress_model, metrics, prune_model, share_model, train_model
from nncompress.train import fit, set_seed
from nncompress.train.objective import Classification, UserObjective, resolution_warning, resolve_objective

FAST = dict(
    epochs_per_step=1, final_epochs=1, recover_epochs=0, q_max=0.75, batch_size=32, min_layer_share=0.0, groups="all"
)


class TokenEncoder(nn.Module):
    """A sentence encoder in miniature: token ids -> embeddings -> masked mean -> MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.fc1 = nn.Linear(16, 48)
        self.fc2 = nn.Linear(48, 12)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.dtype != torch.int64:  # token ids must reach the model as given
            raise TypeError(f"input_ids arrived as {input_ids.dtype}")
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.fc2(torch.tanh(self.fc1(pooled)))


def _token_splits(seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)

    def batches(n: int) -> list[dict[str, torch.Tensor]]:
        out = []
        for _ in range(n):
            ids = torch.randint(0, 40, (20, 7), generator=g)
            mask = (torch.rand(20, 7, generator=g) > 0.2).long()
            out.append({"input_ids": ids, "attention_mask": mask})
        return out

    return splits_from_loaders(batches(8), batches(4), batches(3), name="tokens")


def test_token_ids_without_labels_are_pruned_and_shared_by_cosine_distillation(caplog) -> None:
    torch.manual_seed(0)
    model, splits = TokenEncoder(), _token_splits()
    assert splits.train_x["input_ids"].dtype == torch.int64 and splits.train_y is None
    objective = resolve_objective(None, model, splits)
    assert objective.kind == "cosine" and objective.metric == "mean_cosine"
    check_fits(model, splits, "the encoder", objective)
    calls = []
    objective.dense.register_forward_hook(lambda *_: calls.append(1))
    first = objective.score(model, splits.val_x, splits.val_y)
    assert len(calls) == 1 and objective.score(model, splits.val_x, None) == first  # dense outputs: once per split
    assert len(calls) == 1
    with pytest.raises(ConfigError, match="carries no labels"):
        metrics(model, splits)  # no reference to compare with: never a silent accuracy 0.0
    result = prune_model(model, splits, PruneConfig(tolerance=2.0, **FAST), objective=objective)
    assert result.objective["kind"] == "cosine"
    assert result.objective["tolerance"] == "0.02 of mean cosine to the dense model's outputs"
    assert abs(result.dense_val_accuracy - 1.0) < 1e-5  # the dense model against itself
    assert float((model.fc1.weight == 0).float().mean()) > 0.2
    assert result.val_accuracy >= result.dense_val_accuracy - 0.02 - 1e-9
    shared, info = share_model(model, splits, ShareConfig(epochs=1, batch_size=32, fc_bits=4), objective=objective)
    assert set(shared) >= {"fc1", "fc2"} and info["metric"] == "mean_cosine"
    assert len(torch.unique(model.fc1.weight)) <= 2**4 + 1  # codebook entries and the pruned zeros
    m = metrics(model, splits, "test", objective)
    assert "accuracy" not in m and m["metric"] == "mean_cosine" and 0.9 < m["mean_cosine"] <= 1.0 + 1e-6
    assert m["score"] == m["mean_cosine"] and m["examples"] == 60


@dataclass
class Output:  # the shape of a Hugging Face ModelOutput: the logits are a field
    logits: torch.Tensor
    hidden: torch.Tensor


class LogitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 64)
        self.fc2 = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> Output:
        h = torch.relu(self.fc1(x))
        return Output(logits=self.fc2(h), hidden=h)


def _float_splits(n_val: int = 60) -> Splits:
    g = torch.Generator().manual_seed(1)
    make = lambda n: [torch.randn(20, 10, generator=g) for _ in range(n // 20)]  # noqa: E731
    return splits_from_loaders(make(200), make(n_val), make(60), name="points")


def test_logits_without_labels_distil_by_kl_scored_by_agreement(tmp_path, caplog) -> None:
    torch.manual_seed(0)
    model, splits = LogitNet(), _float_splits()
    objective = resolve_objective(None, model, splits)
    assert objective.kind == "kl" and objective.metric == "agreement"
    with caplog.at_level(logging.WARNING):
        summary = compress_model(
            model,
            {},
            splits,
            tmp_path / "m.nnc",
            PruneConfig(tolerance=2.0, **FAST),
            ShareConfig(epochs=1, batch_size=32),
            objective=objective,
        )
    assert summary["metric"] == "agreement" and "test_accuracy" not in summary
    assert summary["objective"]["tolerance"] == "2 points of top-1 agreement with the dense model"
    assert summary["finetune"]["probe_kl"] is not None  # the probe's KL test applies to logits
    # 60 validation examples cannot resolve 2 points (1.2 examples): said in the log and in the result
    assert summary["warnings"] and "1.2 example" in summary["warnings"][0]
    assert any("cannot resolve" in r.message for r in caplog.records)
    restored = load_compressed(tmp_path / "m.nnc").build_model(LogitNet())
    assert metrics(restored, splits, "test", objective)["agreement"] == summary["test_score"]
    assert summary["test_score"] > 0.8 and summary["dense_test_score"] == 1.0


class PairNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 32)
        self.b = nn.Linear(4, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.a(a) + self.b(b)))


def test_tuple_inputs_with_labels_train_and_prune_as_classification() -> None:
    g = torch.Generator().manual_seed(2)

    def batches(n: int) -> list:
        out = []
        for _ in range(n):
            a, b = torch.randn(25, 4, generator=g), torch.randn(25, 4, generator=g)
            out.append(((a, b), (a[:, :3] - b[:, :3]).argmax(1)))
        return out

    splits = splits_from_loaders(batches(8), batches(4), batches(2))
    set_seed(0)
    model = PairNet()
    info = train_model(model, splits, TrainConfig(epochs=10, lr=0.2, batch_size=64))
    assert info["val"]["accuracy"] > 0.7 and info["val"]["metric"] == "accuracy"
    result = prune_model(model, splits, PruneConfig(tolerance=3.0, **FAST))
    assert result.objective["kind"] == "classification"
    assert result.objective["tolerance"] == "3 points of accuracy"
    assert float((model.a.weight == 0).float().mean()) > 0.2


def test_a_user_metric_lower_is_better_drives_the_pruner() -> None:
    torch.manual_seed(0)
    model, splits = LogitNet(), _float_splits(n_val=100)

    def mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # per example
        return ((out - target) ** 2).mean(1)

    user = UserObjective(metric=mse, name="logit_mse", higher_is_better=False, base="kl")
    objective = resolve_objective(user, model, splits)
    assert objective.metric == "logit_mse" and objective.kl_probe and not objective.counts_examples
    assert objective.tolerance_text(1.0) == "0.01 of logit_mse (lower is better)"
    result = prune_model(model, splits, PruneConfig(tolerance=1.0, **FAST), objective=objective)
    assert result.dense_val_accuracy == 0.0  # the dense model's error against itself, negated
    assert result.val_accuracy <= 0.0 and result.val_accuracy >= -0.01 - 1e-9
    assert all(step.val_accuracy <= 1e-12 for step in result.steps)  # negated errors: never above zero
    assert result.warnings == []  # a continuous metric: no example counting
    direct = metrics(model, splits, "val", objective)["logit_mse"]
    assert direct == pytest.approx(-result.val_accuracy)


def test_a_user_loss_replaces_cross_entropy(digits, trained_mlp) -> None:
    calls = []

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(target.dtype)
        return nn.functional.nll_loss(torch.log_softmax(out, 1), target)

    objective = resolve_objective(UserObjective(loss=loss), trained_mlp(), digits)
    assert objective.metric == "accuracy" and objective.base.kind == "classification"
    model = trained_mlp()
    fit(model, digits.train_x, digits.train_y, TrainConfig(epochs=1, batch_size=256), objective=objective)
    assert calls and calls[0] == torch.int64  # the labels were the target


def test_classification_is_the_default_with_labels_and_refused_without(digits, trained_mlp) -> None:
    assert isinstance(resolve_objective(None, trained_mlp(), digits), Classification)
    with pytest.raises(ConfigError, match="needs labels"):
        resolve_objective("classification", TokenEncoder(), _token_splits())
    with pytest.raises(ConfigError, match="unknown objective"):
        resolve_objective("accuracy", trained_mlp(), digits)
    with pytest.raises(ConfigError, match="training from scratch needs labels"):
        train_model(TokenEncoder(), _token_splits(), TrainConfig(epochs=1))
    m = metrics(trained_mlp(), digits, "test")
    assert m["accuracy"] == m["score"] and m["metric"] == "accuracy" and "objective" not in m


@pytest.mark.parametrize(
    "tolerance, n, p, fragment",
    [
        (0.3, 1000, 0.9, "is 3 example(s)"),
        (0.3, 100_000, 0.999, None),
        (1.0, 1000, 0.999, "leaves 1 wrong example"),
        (0.3, 10_000, 0.5, "below one standard error"),
    ],
)
def test_the_resolution_warning(tolerance: float, n: int, p: float, fragment) -> None:
    text = resolution_warning(Classification(), tolerance, n, p)
    if fragment is None:
        assert text is None
    else:
        assert fragment in text and "standard error" in text and f"{tolerance:g} points of accuracy" in text
