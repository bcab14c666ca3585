"""What keeps large models inside their memory bound: the in-place optimizer and the
rollback copy that goes to disk. Each must give exactly what the plain version gives."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from nncompress.errors import ModelError
from nncompress.train import rollback
from nncompress.train.rollback import Rollback
from nncompress.train.sgd import BackwardStep, InPlaceSGD


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("momentum, nesterov, decay", [(0.9, True, 5e-4), (0.9, False, 0.0), (0.0, False, 1e-2)])
def test_in_place_sgd_is_torch_sgd_bit_for_bit(momentum: float, nesterov: bool, decay: float) -> None:
    ours, theirs = _net(), _net()
    kwargs = {"lr": 0.05, "momentum": momentum, "nesterov": nesterov, "weight_decay": decay}
    a, b = InPlaceSGD(ours.parameters(), **kwargs), torch.optim.SGD(theirs.parameters(), **kwargs)
    _train(ours, a, 6)
    _train(theirs, b, 6)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    if momentum:  # torch's saved momentum continues ours exactly, and the other way round
        c = InPlaceSGD(theirs.parameters(), **kwargs)
        c.load_state_dict(b.state_dict())
        _train(ours, a, 3, seed=2)
        _train(theirs, c, 3, seed=2)
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(p, q)


def test_in_place_sgd_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="momentum"):
        InPlaceSGD(_net().parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        InPlaceSGD(_net().parameters(), lr=-1.0)


@pytest.mark.parametrize("spill", [False, True])
def test_rollback_restores_state_and_masks_exactly(spill: bool) -> None:
    model = _net()
    model.train()
    model(torch.randn(8, 12))  # batch-norm statistics and its step counter move off their defaults
    masks = {"0": torch.rand(16, 12) > 0.5, "3": torch.rand(3, 16) > 0.3}
    state, kept = copy.deepcopy(model.state_dict()), {k: v.clone() for k, v in masks.items()}
    saved = Rollback(model, masks, spill=spill)
    assert saved.spilled is spill
    for _ in range(2):  # a copy is restored as often as a run rolls back
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model(torch.randn(8, 12))
        masks["0"] &= torch.rand(16, 12) > 0.5
        masks["new"] = torch.ones(2, dtype=torch.bool)
        del masks["3"]
        saved.restore_(model, masks)
        assert set(masks) == set(kept) and all(torch.equal(masks[k], kept[k]) for k in kept)
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    saved.close()


def test_large_state_goes_to_an_anonymous_file_that_dies_with_the_copy(monkeypatch) -> None:
    monkeypatch.setattr(rollback, "SPILL_BYTES", 1)
    model = _net()
    saved = Rollback(model)
    assert saved.spilled
    fd = saved._file.fileno()
    if os.path.exists(f"/proc/self/fd/{fd}"):  # Linux: no name in any directory, nothing left behind on a crash
        assert os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    saved.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_rollback_refuses_a_model_that_changed_shape() -> None:
    model = _net()
    saved = Rollback(model, spill=True)
    other = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ModelError, match="roll back"):
        saved.restore_(other)


def test_stepping_in_backward_is_stepping_after_it() -> None:
    """One gradient at a time, the same weights bit for bit."""
    ours, theirs = _net(), _net()
    kwargs = {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    a, b = InPlaceSGD(ours.parameters(), **kwargs), InPlaceSGD(theirs.parameters(), **kwargs)
    handles = a.step_in_backward(BackwardStep())
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x, y = torch.randn(8, 12, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        for model in (ours, theirs):
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
        b.step()
        assert all(p.grad is None for p in ours.parameters())
    for h in handles:
        h.remove()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)


def test_packed_masks_zero_what_bool_masks_zero(monkeypatch) -> None:
    from nncompress import chunked
    from nncompress.pruning.apply import PackedMasks, apply_masks_

    monkeypatch.setattr(chunked, "CHUNK", 64)  # several chunks, and a last one that ends inside a byte
    torch.manual_seed(0)
    layers = {"a": nn.Linear(37, 11), "b": nn.Conv2d(3, 5, 3)}
    masks = {n: torch.rand_like(m.weight) > 0.6 for n, m in layers.items()}
    twins = copy.deepcopy(layers)
    packed = PackedMasks(masks)
    packed.apply_(layers)
    apply_masks_(twins, masks)
    assert all(torch.equal(layers[n].weight, twins[n].weight) for n in layers)
    back = packed.unpack({n: torch.device("cpu") for n in masks})
    assert all(torch.equal(back[n], masks[n]) for n in masks)


def _prune_twice(monkeypatch, digits, trained_mlp, module, name: str, recover_epochs: int, refine_steps: int):
    """The same pruning run with ``module.name`` at its default and at 0 (the other path taken
    for everything): its records, masks and final state, both times."""
    from nncompress.config import PruneConfig
    from nncompress.pipeline import prune_model

    cfg = PruneConfig(
        q0=0.5,
        q_step=0.75,
        q_max=2.75,
        tolerance=0.5,
        epochs_per_step=1,
        final_epochs=1,
        lr=0.02,
        batch_size=64,
        recover_epochs=recover_epochs,
        refine_steps=refine_steps,
    )
    runs = []
    for limit in (getattr(module, name), 0):
        monkeypatch.setattr(module, name, limit)
        model = trained_mlp()
        result = prune_model(model, digits, cfg)
        runs.append((result, model.state_dict()))
    (a, sa), (b, sb) = runs
    assert [(r.accepted, r.density) for r in a.steps] == [(r.accepted, r.density) for r in b.steps]
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    return a


def test_pruning_with_the_copy_on_disk_is_pruning_in_memory(monkeypatch, digits, trained_mlp) -> None:
    """The whole loop, rollbacks included, with every copy spilled: the same masks and weights."""
    result = _prune_twice(monkeypatch, digits, trained_mlp, rollback, "SPILL_BYTES", 0, 1)
    assert not all(r.accepted for r in result.steps if r.stage == "step"), "the run should roll back at least once"


def test_pruning_with_packed_masks_is_pruning_with_bool_masks(monkeypatch, digits, trained_mlp) -> None:
    from nncompress.pruning import apply

    _prune_twice(monkeypatch, digits, trained_mlp, apply, "PACK_BYTES", 1, 0)


def test_a_recorded_model_takes_the_files_tensors_without_a_second_copy(tmp_path) -> None:
    from nncompress.models import build_model
    from nncompress.pipeline import load_model_file
    from nncompress.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("lenet5")
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_model_file(tmp_path / "m.pt")
    assert all(not t.is_meta for t in loaded.state_dict().values())
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert all(p.requires_grad for p in loaded.parameters())
    ptrs = [p.untyped_storage().data_ptr() for p in loaded.parameters()]
    assert len(set(ptrs)) == len(ptrs)


def test_tensors_that_share_memory_in_a_file_are_separate_parameters(tmp_path) -> None:
    """A file may hold two views of one storage (or an expanded tensor): as parameters they
    would write each other, so each gets its own memory."""
    from nncompress.train.checkpoint import _owned

    base = torch.arange(12.0)
    state = {"a": base[:6].view(2, 3), "b": base[6:].view(2, 3), "c": torch.ones(3).expand(2, 3), "d": torch.ones(4)}
    owned = _owned(state)
    ptrs = [t.untyped_storage().data_ptr() for t in owned.values()]
    assert len(set(ptrs)) == 4 and all(t.is_contiguous() for t in owned.values())
    assert owned["d"] is state["d"] and all(torch.equal(owned[k], state[k]) for k in state)


class _Tokens(nn.Module):
    """A Linear on 3-D inputs (batch, tokens, features) and one without a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 40)
        self.down = nn.Linear(40, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x.view(len(x), 2, 6)))).mean(1)


@pytest.mark.parametrize("make", [_net, _Tokens])
def test_stepping_large_linears_by_rows_is_stepping_them_whole(monkeypatch, make) -> None:
    from nncompress.config import TrainConfig
    from nncompress.train import rowstep
    from nncompress.train.loop import fit

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 12, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    cfg = TrainConfig(epochs=2, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=16)
    models = []
    calls = []
    update_rows = InPlaceSGD.update_rows
    monkeypatch.setattr(InPlaceSGD, "update_rows", lambda self, *a: calls.append(1) or update_rows(self, *a))
    for limit in (2**62, 1):
        monkeypatch.setattr(rowstep, "ROW_STEP_BYTES", limit)
        monkeypatch.setattr(rowstep, "BLOCK_BYTES", 7 * 12 * 4)  # blocks of 7 rows: several, the last one short
        torch.manual_seed(0)
        model = make()
        fit(model, x, y, cfg, generator=torch.Generator().manual_seed(1))
        models.append(model)
        assert all("forward" not in vars(m) for m in model.modules())  # the class's forward is back
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
    linears = [m for m in models[1].modules() if isinstance(m, nn.Linear)]
    blocks = sum(-(-m.out_features // max(1, rowstep.BLOCK_BYTES // (4 * m.in_features))) for m in linears)
    assert blocks > len(linears) and len(calls) == 2 * 6 * blocks  # 2 epochs of 6 batches, every block each step


def test_a_row_stepped_weight_never_holds_a_whole_gradient(monkeypatch) -> None:
    from nncompress.train import rowstep

    monkeypatch.setattr(rowstep, "ROW_STEP_BYTES", 1)
    model = _net()
    opt = InPlaceSGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    seen = []
    with rowstep.row_stepped(model, opt, BackwardStep()) as chosen:
        assert chosen == {id(model[0].weight), id(model[3].weight)}
        before = model[0].weight.detach().clone()
        loss = nn.functional.cross_entropy(model(torch.randn(8, 12)), torch.randint(0, 3, (8,)))
        loss.backward()
        seen = [model[0].weight.grad, model[3].weight.grad]
        assert not torch.equal(before, model[0].weight)  # stepped inside backward
    assert seen == [None, None] and model[0].bias.grad is not None
