"""Layer selection shared by pruning and weight sharing (nncompress.layers)."""

from __future__ import annotations

import pytest
from torch import nn

from nncompress.config import PruneConfig, ShareConfig
from nncompress.errors import ConfigError
from nncompress.layers import compressible_layers, layer_kind, select_layers
from nncompress.pruning.masks import prunable_layers


class Tiny(nn.Module):
    """An embedding, an attention-like block and a conv head: every compressible kind."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.encoder = nn.ModuleDict(
            {"attention": nn.ModuleDict({"query": nn.Linear(8, 8), "key": nn.Linear(8, 8)}), "out": nn.Linear(8, 8)}
        )
        self.norm = nn.LayerNorm(8)
        self.conv = nn.Conv1d(8, 4, 3)
        self.fc = nn.Linear(4, 2)


def test_kinds_classes_globs_and_all_in_registration_order() -> None:
    m = Tiny()
    assert list(compressible_layers(m)) == [
        "embed",
        "encoder.attention.query",
        "encoder.attention.key",
        "encoder.out",
        "conv",
        "fc",
    ]
    assert [layer_kind(x) for x in compressible_layers(m).values()] == ["embedding", "fc", "fc", "fc", "conv", "fc"]
    assert list(select_layers(m, "embedding")) == ["embed"]
    assert list(select_layers(m, "conv,Embedding")) == ["embed", "conv"]
    assert list(select_layers(m, "encoder.attention.*")) == ["encoder.attention.query", "encoder.attention.key"]
    assert list(select_layers(m, "all", exclude="encoder.*, Conv1d")) == ["embed", "fc"]
    assert list(select_layers(m, "fc")) == ["encoder.attention.query", "encoder.attention.key", "encoder.out", "fc"]
    assert list(select_layers(m, "[f]c")) == ["fc"]  # a module named like a kind, alone


def test_a_name_or_class_that_matches_nothing_names_the_compressible_layers() -> None:
    m = Tiny()
    for spec in ("decoder.*", "Conv2d", "norm"):  # LayerNorm is not compressible
        with pytest.raises(ConfigError, match=r"matches no compressible layer.*embed \(Embedding\).*fc \(Linear\)"):
            select_layers(m, spec)
    with pytest.raises(ConfigError, match="exclude"):
        select_layers(m, "all", exclude="nothing_here")
    # a kind the model lacks is not an error: the default "fc,conv" fits a plain MLP
    assert list(select_layers(nn.Sequential(nn.Linear(3, 2)), "fc,conv")) == ["0"]


def test_config_defaults_keep_todays_prunable_set_and_share_embeddings() -> None:
    m = Tiny()
    assert PruneConfig().select == "fc,conv" and ShareConfig().select == "fc,conv,embedding"
    assert list(prunable_layers(m)) == ["encoder.attention.query", "encoder.attention.key", "encoder.out", "conv", "fc"]
    assert "embed" in select_layers(m, ShareConfig().select)
    for bad in ("", " , ", 3):
        with pytest.raises(ConfigError, match="select"):
            PruneConfig(select=bad)
        with pytest.raises(ConfigError, match="select"):
            ShareConfig(select=bad)
    with pytest.raises(ConfigError, match="exclude"):
        ShareConfig(exclude=None)
    with pytest.raises(ConfigError, match="embedding_bits"):
        ShareConfig(embedding_bits=16)
    with pytest.raises(ConfigError, match="layer_kind|not a compressible"):
        layer_kind(nn.LayerNorm(3))
