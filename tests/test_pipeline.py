"""run_prune end to end on digits: files, figures, and a checkpoint that stands alone."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nncompress.config import PruneConfig, ShareConfig
from nncompress.errors import ConfigError
from nncompress.pipeline import metrics, run_prune, save_trained, share_model
from nncompress.train.checkpoint import load_checkpoint


def test_run_prune_writes_a_smaller_self_describing_checkpoint(tmp_path, digits, trained_mlp) -> None:
    dense = trained_mlp()
    save_trained(dense, digits, tmp_path / "base.pt", {})
    cfg = PruneConfig(
        q0=1.0,
        q_step=0.5,
        q_max=2.0,
        tolerance=3.0,
        epochs_per_step=2,
        final_epochs=2,
        recover_epochs=0,
        refine_steps=0,
        lr=0.02,
        batch_size=64,
    )
    run = run_prune(tmp_path / "base.pt", "digits", tmp_path / "pruned.pt", cfg, splits=digits)
    s = run.summary
    assert s["weights"] == 64 * 128 + 128 * 64 + 64 * 10  # against the dense layers, not the shrunk ones
    assert s["kept_weights"] == sum(r["nonzero"] for r in s["layers"])
    assert s["compression"] == pytest.approx(s["weights"] / s["kept_weights"])
    assert s["file_bytes"] < s["input_file_bytes"]

    ckpt = load_checkpoint(tmp_path / "pruned.pt")
    model = ckpt.build_model()  # from the file alone
    assert ckpt.meta["pruned"] is True and ckpt.meta["data"] == "digits"
    assert ckpt.meta["dense_weights"] == {"fc1": 64 * 128, "fc2": 128 * 64, "fc3": 64 * 10}  # for the .nnc table
    assert metrics(model, digits)["accuracy"] == pytest.approx(s["pruned"]["test_accuracy"])
    assert metrics(model, digits)["nonzero"] == s["pruned"]["nonzero"]
    assert ckpt.arch["config"]["sizes"] == [
        64,
        128 - s["removed_neurons"].get("fc1", 0),
        64 - s["removed_neurons"].get("fc2", 0),
        10,
    ]
    assert [tuple(model.fc1.weight.shape), tuple(model.fc2.weight.shape)] == [
        (ckpt.arch["config"]["sizes"][1], 64),
        (ckpt.arch["config"]["sizes"][2], ckpt.arch["config"]["sizes"][1]),
    ]
    raw = torch.load(tmp_path / "pruned.pt", weights_only=True)
    assert not any("mask" in k or k.endswith("_orig") for k in list(raw["state"]) + list(raw["sparse"]))
    assert set(raw["sparse"]) == {r["layer"] + ".weight" for r in s["layers"] if r["csr_smaller"]}

    steps = [json.loads(line) for line in (tmp_path / "pruned_prune" / "steps.jsonl").read_text().splitlines()]
    assert [st["stage"] for st in steps[:2]] == ["dense", "control"] and steps[-1]["stage"] == "final"
    tried = [st["q"]["fc1"] for st in steps if st["stage"] == "step"]
    assert tried and tried == [1.0, 1.5, 2.0][: len(tried)]
    assert all({"q", "density", "val_accuracy", "seconds", "drop_points"} <= set(st) for st in steps)
    assert json.loads((tmp_path / "pruned_prune" / "summary.json").read_text()) == json.loads(json.dumps(s))
    import matplotlib.image

    before, after = (
        matplotlib.image.imread(tmp_path / "pruned_prune" / name) for name in ("hist_before.png", "hist_after.png")
    )
    for image in (before, after):  # one panel per layer, side by side, with something drawn in them
        assert image.ndim == 3 and image.shape[1] > 2.5 * image.shape[0] and float(image.std()) > 0.05
    assert before.shape != after.shape or not (before == after).all()  # the pruned weights drew another picture


class _BagOfWords(nn.Module):
    """Token ids (as floats, the way Splits holds inputs) -> mean embedding -> a Linear tied to it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 8)
        self.mix = nn.Linear(8, 8)
        self.out = nn.Linear(8, 64, bias=False)
        self.out.weight = self.embed.weight
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(torch.tanh(self.mix(self.embed(x.long()).mean(1)))))


def test_share_model_shares_embeddings_with_their_own_init_and_the_file_restores_them(tmp_path) -> None:
    from nncompress.data import Splits
    from nncompress.modelfile import layer_table, load_compressed, save_compressed
    from nncompress.quantization import kmeans_1d
    from nncompress.train.checkpoint import load_state

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 64, (160, 5), generator=gen).float()
    y = (x[:, 0] % 3).long()
    splits = Splits("tokens", x[:96], y[:96], x[96:128], y[96:128], x[128:], y[128:], (5,), 3)
    torch.manual_seed(0)
    model = _BagOfWords()
    table = model.embed.weight.detach().clone()
    shared, info = share_model(model, splits, ShareConfig(epochs=0, batch_size=32, embedding_init="density"))
    assert list(shared) == ["embed", "mix", "head"] and info["bits"]["embed"] == 5  # out: tied to embed
    expected, _ = kmeans_1d(table.numpy().ravel(), 32, "density")
    assert shared["embed"].codebook.numpy().tobytes() == expected.tobytes()
    with pytest.raises(ConfigError, match="matches no compressible layer"):
        share_model(_BagOfWords(), splits, ShareConfig(epochs=0, select="fc,decoder.*"))
    save_compressed(tmp_path / "m.nnc", model, shared, codebook_dtype="float32")
    box = load_compressed(tmp_path / "m.nnc")
    fresh = _BagOfWords()
    load_state(fresh, box.state)
    for key, value in model.state_dict().items():
        assert fresh.state_dict()[key].numpy().tobytes() == value.numpy().tobytes(), key
    assert fresh.out.weight is fresh.embed.weight
    rows = {r["tensor"]: r for r in layer_table(box.header, box.section_bytes, box.file_bytes)["layers"]}
    assert rows["embed.weight"]["layout"].startswith("all/") and rows["out.weight"]["codec"] == "alias"
    assert rows["embed.weight"]["codebook_used"] == 32
