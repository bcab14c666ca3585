"""run_prune end to end on digits: files, figures, and a checkpoint that stands alone."""
from __future__ import annotations

import json

import pytest
import torch

from nncompress.config import PruneConfig
from nncompress.pipeline import metrics, run_prune, save_trained
from nncompress.train.checkpoint import load_checkpoint


def test_run_prune_writes_a_smaller_self_describing_checkpoint(tmp_path, digits, trained_mlp) -> None:
    dense = trained_mlp()
    save_trained(dense, digits, tmp_path / "base.pt", {})
    cfg = PruneConfig(q0=1.0, q_step=0.5, q_max=2.0, tolerance=3.0, epochs_per_step=2, final_epochs=2,
                      recover_epochs=0, refine_steps=0, lr=0.02, batch_size=64)
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
    assert ckpt.arch["config"]["sizes"] == [64, 128 - s["removed_neurons"].get("fc1", 0),
                                            64 - s["removed_neurons"].get("fc2", 0), 10]
    assert [tuple(model.fc1.weight.shape), tuple(model.fc2.weight.shape)] == [
        (ckpt.arch["config"]["sizes"][1], 64), (ckpt.arch["config"]["sizes"][2], ckpt.arch["config"]["sizes"][1])]
    raw = torch.load(tmp_path / "pruned.pt", weights_only=True)
    assert not any("mask" in k or k.endswith("_orig") for k in list(raw["state"]) + list(raw["sparse"]))
    assert set(raw["sparse"]) == {r["layer"] + ".weight" for r in s["layers"] if r["csr_smaller"]}

    steps = [json.loads(line) for line in (tmp_path / "pruned_prune" / "steps.jsonl").read_text().splitlines()]
    assert [st["stage"] for st in steps[:2]] == ["dense", "control"] and steps[-1]["stage"] == "final"
    tried = [st["q"]["fc1"] for st in steps if st["stage"] == "step"]
    assert tried and tried == [1.0, 1.5, 2.0][:len(tried)]
    assert all({"q", "density", "val_accuracy", "seconds", "drop_points"} <= set(st) for st in steps)
    for name in ("hist_before.png", "hist_after.png", "summary.json"):
        assert (tmp_path / "pruned_prune" / name).stat().st_size > 1000
