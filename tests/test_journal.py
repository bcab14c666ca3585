"""Resumable training: an interrupted run, resumed, ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from nncompress.config import PruneConfig, ShareConfig, TrainConfig
from nncompress.models import build_model
from nncompress.pipeline import prune_model, share_model
from nncompress.progress import Progress
from nncompress.train import fit, set_seed
from nncompress.train.journal import Journal, RunStateError
from nncompress.train.loop import Teacher


class Stop(Exception):
    pass


def _stop_after(task: str, count: int):
    """A progress callback that interrupts the run after ``count`` reports of ``task``."""
    seen = {"n": 0}

    def progress(event: Progress) -> None:
        if event.task == task:
            seen["n"] += 1
            if seen["n"] == count:
                raise Stop()

    return progress


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _train(digits, journal=None, progress=None):
    gen = set_seed(3)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    cfg = TrainConfig(epochs=4, lr=0.05, batch_size=64, seed=3)
    losses = fit(model, digits.train_x, digits.train_y, cfg, generator=gen, journal=journal, progress=progress)
    return model, losses, torch.rand(3)  # the global RNG afterwards must match too


def test_fit_interrupted_and_resumed_matches_uninterrupted(digits, tmp_path):
    plain, plain_losses, plain_next = _train(digits)
    with pytest.raises(Stop):
        _train(digits, Journal(tmp_path, resume=False), _stop_after("train", 2))
    assert len(list((tmp_path / "state").glob("fit-*.pt"))) == 1
    resumed_journal = Journal(tmp_path, resume=True)
    resumed, losses, after = _train(digits, resumed_journal)
    assert resumed_journal.resumed_calls == 1
    assert _same(plain, resumed)
    assert losses == plain_losses and torch.equal(after, plain_next)


def test_a_finished_call_is_loaded_not_retrained(digits, tmp_path):
    first, losses, _ = _train(digits, Journal(tmp_path, resume=False))
    calls = []
    again, again_losses, _ = _train(digits, Journal(tmp_path, resume=True), lambda e: calls.append(e))
    assert calls == [] and again_losses == losses and _same(first, again)


def test_existing_run_needs_resume(digits, tmp_path):
    _train(digits, Journal(tmp_path, resume=False))
    with pytest.raises(RunStateError, match="--resume"):
        Journal(tmp_path, resume=False)


def test_resume_from_other_weights_is_refused(digits, tmp_path):
    _train(digits, Journal(tmp_path, resume=False))
    model = build_model("mlp", digits.input_shape, digits.num_classes)  # other initial weights (seed not reset)
    with pytest.raises(RunStateError, match="different run"):
        fit(
            model,
            digits.train_x,
            digits.train_y,
            TrainConfig(epochs=4, batch_size=64, seed=3),
            generator=torch.Generator().manual_seed(3),
            journal=Journal(tmp_path, resume=True),
        )


@pytest.mark.parametrize("change", [{"lr": 0.02}, {"teacher": 0.9}])
def test_resume_at_another_rate_or_distillation_is_refused(digits, tmp_path, change):
    """Same starting weights, other recipe: the saved call is not this call (the
    fine-tuning probe could choose differently on another machine)."""
    _train(digits, Journal(tmp_path, resume=False))
    set_seed(3)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    teacher = (
        Teacher(build_model("mlp", digits.input_shape, digits.num_classes), change["teacher"], 4.0)
        if "teacher" in change
        else None
    )
    with pytest.raises(RunStateError, match="different run"):
        fit(
            model,
            digits.train_x,
            digits.train_y,
            TrainConfig(epochs=4, lr=change.get("lr", 0.05), batch_size=64, seed=3),
            generator=torch.Generator().manual_seed(3),
            journal=Journal(tmp_path, resume=True),
            teacher=teacher,
        )


def test_damaged_entry_is_retrained(digits, tmp_path):
    plain, _, _ = _train(digits)
    with pytest.raises(Stop):
        _train(digits, Journal(tmp_path, resume=False), _stop_after("train", 2))
    (tmp_path / "state" / "fit-0000.pt").write_bytes(b"not a checkpoint")
    resumed, _, _ = _train(digits, Journal(tmp_path, resume=True))
    assert _same(plain, resumed)


def _prune_and_share(trained_mlp, digits, journal=None, progress=None):
    model = trained_mlp()
    cfg = PruneConfig(
        epochs_per_step=1, recover_epochs=1, final_epochs=1, q_max=1.0, batch_size=64, tolerance=1.0, seed=1
    )
    steps = []
    prune_model(
        model,
        digits,
        cfg,
        progress=progress,
        on_step=lambda r: steps.append((r.stage, r.q, r.accepted)),
        journal=journal,
    )
    shared, _ = share_model(model, digits, ShareConfig(epochs=2, batch_size=64, seed=1), progress, journal=journal)
    return model, steps, {n: s.codebook.clone() for n, s in shared.items()}


@pytest.mark.parametrize("task,count", [("fine-tune", 3), ("centroids", 1)])
def test_pruning_and_sharing_resume_to_the_same_model(trained_mlp, digits, tmp_path, task, count):
    plain, plain_steps, plain_books = _prune_and_share(trained_mlp, digits)
    with pytest.raises(Stop):
        _prune_and_share(trained_mlp, digits, Journal(tmp_path, resume=False), _stop_after(task, count))
    journal = Journal(tmp_path, resume=True)
    resumed, steps, books = _prune_and_share(trained_mlp, digits, journal)
    assert journal.resumed_calls >= 1
    assert steps == plain_steps
    assert _same(plain, resumed)
    assert all(torch.equal(books[n], plain_books[n]) for n in plain_books)


@pytest.mark.slow
def test_full_disk_mid_run_then_resume_gives_the_same_file(tmp_path, monkeypatch) -> None:
    import errno

    import nncompress.train.journal as journal_module
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import parse_recipe
    from nncompress.rundir import RunDir

    recipe = parse_recipe(
        {
            "model": "mlp",
            "data": "digits",
            "seed": 2,
            "train": {"epochs": 3, "batch_size": 64},
            "prune": {"epochs_per_step": 1, "recover_epochs": 1, "final_epochs": 1, "q_max": 1.0, "batch_size": 64},
            "share": {"epochs": 1, "batch_size": 64},
        }
    )
    run_recipe(recipe, RunDir(tmp_path / "plain"))
    real, writes = torch.save, {"n": 0}

    def filling_up(obj, handle, *args, **kwargs):  # the 5th journal entry: half written, then the disk is full
        if isinstance(obj, dict) and "before" in obj:  # a journal entry
            writes["n"] += 1
            if writes["n"] == 5:
                handle.write(b"\x00" * 1000)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, handle, *args, **kwargs)

    monkeypatch.setattr(journal_module.torch, "save", filling_up)
    with pytest.raises(OSError, match="No space"):
        run_recipe(recipe, RunDir(tmp_path / "full"))
    monkeypatch.setattr(journal_module.torch, "save", real)
    assert writes["n"] == 5
    assert not (tmp_path / "full" / "model.nnc").exists()
    assert not list((tmp_path / "full").rglob(".*.tmp"))
    summary = run_recipe(recipe, RunDir(tmp_path / "full", resume=True))
    assert summary["resumed_training_calls"] >= 1
    assert (tmp_path / "full" / "model.nnc").read_bytes() == (tmp_path / "plain" / "model.nnc").read_bytes()


def test_resume_removes_what_a_killed_atomic_write_left(tmp_path) -> None:
    from nncompress.rundir import RUN_FILE, RunDir

    run = tmp_path / "run"
    RunDir(run).write_json(RUN_FILE, {"command": "compress"})
    stale = run / ".steps.jsonl.abc123.tmp"
    stale.write_text('{"step": 1')  # a kill -9 between the write and the rename
    kept = run / "notes.txt"
    kept.write_text("the user's own file")
    RunDir(run, resume=True)
    assert not stale.exists() and kept.read_text() == "the user's own file"
