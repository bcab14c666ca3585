"""The front door: `import nncompress as nnc`, keyword options, dataclass results, no mutation."""

from __future__ import annotations

import copy

import pytest
import torch

import nncompress as nnc
from nncompress.errors import ConfigError
from nncompress.progress import Progress

QUICK = nnc.PruneConfig(
    q0=1.0,
    q_step=0.5,
    q_max=1.5,
    tolerance=3.0,
    epochs_per_step=1,
    final_epochs=1,
    recover_epochs=0,
    refine_steps=0,
    lr=0.02,
    batch_size=64,
    probe=False,
)


def test_compress_leaves_the_callers_model_alone_and_returns_a_table(tmp_path, digits, trained_mlp) -> None:
    model = trained_mlp()
    before = copy.deepcopy(model.state_dict())
    events: list[Progress] = []
    result = nnc.compress(
        model,
        digits,
        tmp_path / "m.nnc",
        nnc.CompressConfig(prune=QUICK, share=nnc.ShareConfig(epochs=1, batch_size=64)),
        progress=events.append,
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not mutated
    assert result.path.stat().st_size == result.file_bytes
    assert result.ratio == pytest.approx(result.table.dense_bytes / result.file_bytes)
    assert result.ratio > 5
    text = str(result.table)
    assert "fc1.weight" in text and "whole file" in text
    assert {e.task for e in events} >= {"prune", "k-means", "coding"}
    # the returned model is the file's: its test accuracy is the one reported
    from nncompress.pipeline import metrics

    assert metrics(result.model, digits)["accuracy"] == pytest.approx(result.score_after)
    reloaded = nnc.load(result.path)  # a built-in model comes back from the file alone
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in result.model.state_dict().items())
    assert nnc.layer_table(result.path).rows == result.table.rows


def test_inplace_prune_changes_the_model(digits, trained_mlp) -> None:
    model = trained_mlp()
    pruned, res = nnc.prune(model, digits, QUICK, inplace=True)
    assert pruned is model and res.val_accuracy > 0.5
    assert int((model.fc1.weight == 0).sum()) > 0


def test_bad_arguments_are_config_errors(digits, trained_mlp) -> None:
    with pytest.raises(ConfigError, match="data must be"):
        nnc.prune(trained_mlp(), 42, QUICK)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="progress must be"):
        nnc.prune(trained_mlp(), digits, QUICK, progress="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CompressConfig.share"):
        nnc.CompressConfig(share=None)  # type: ignore[arg-type]


def test_run_recipe_takes_a_model_in_memory_and_resume_checks_it(tmp_path, digits, trained_mlp) -> None:
    from nncompress.pipeline import run_recipe
    from nncompress.recipe import parse_recipe
    from nncompress.rundir import RunDir
    from nncompress.train.journal import RunStateError
    from nncompress.pipeline import metrics

    recipe = parse_recipe(
        {
            "data": "digits",
            "prune": {
                "q0": 1.0,
                "q_max": 1.0,
                "epochs_per_step": 1,
                "final_epochs": 1,
                "recover_epochs": 0,
                "refine_steps": 0,
                "probe": False,
                "tolerance": 5.0,
                "batch_size": 64,
            },
            "share": {"epochs": 0},
        }
    )
    summary = run_recipe(recipe, RunDir(tmp_path / "run"), model=trained_mlp(), splits=digits)
    assert (tmp_path / "run" / "model.nnc").is_file() and not (tmp_path / "run" / "base.pt").exists()  # not trained
    assert summary["dense_test_score"] == pytest.approx(metrics(trained_mlp(), digits)["accuracy"])
    (tmp_path / "run" / "summary.json").unlink()  # as if it had been interrupted
    other = trained_mlp()
    with torch.no_grad():
        other.fc1.weight[0, 0] += 1.0
    with pytest.raises(RunStateError, match="model_weights_sha256"):
        run_recipe(recipe, RunDir(tmp_path / "run", resume=True), model=other, splits=digits)


class TinyNet(torch.nn.Sequential):
    """A user's model class (not a built-in): 8x8 digits in, 10 classes out."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def test_compress_keeps_the_factory_record_of_the_callers_model(tmp_path, digits) -> None:
    """The copy compress works on still records how to rebuild the model, so the file does too."""
    model = nnc.record_factory(TinyNet(hidden=12), "test_api:TinyNet", {"hidden": 12})
    result = nnc.compress(
        model, digits, tmp_path / "m.nnc", nnc.CompressConfig(prune=None, share=nnc.ShareConfig(epochs=0))
    )
    from nncompress.modelfile import load_compressed

    assert load_compressed(result.path).header["arch"] == {"factory": "test_api:TinyNet", "kwargs": {"hidden": 12}}
    assert isinstance(nnc.load(result.path), TinyNet)  # an installed nn.Module class: rebuilt from the file alone


def test_load_refuses_a_fifo_instead_of_blocking(tmp_path) -> None:
    import os
    from nncompress.errors import PathError

    fifo = tmp_path / "m.nnc"
    os.mkfifo(fifo)
    with pytest.raises(PathError, match="FIFO"):  # an open of a FIFO would wait for a writer forever
        nnc.load(fifo)
    with pytest.raises(PathError, match="FIFO"):
        nnc.layer_table(fifo)


def test_the_public_verbs_examples_run(tmp_path) -> None:
    """Every function ``nnc`` exports has an example in its docstring, run as written
    (``path``: a file compress wrote)."""
    import doctest
    import inspect

    import nncompress as nnc
    from nncompress.models import build_model

    torch.manual_seed(0)
    data = nnc.load_data("digits")
    quick = nnc.CompressConfig(
        prune=nnc.PruneConfig(q_max=1.0, epochs_per_step=1, final_epochs=0, probe=False),
        share=nnc.ShareConfig(epochs=0),
    )
    nnc.compress(build_model("mlp", data.input_shape, data.num_classes), data, tmp_path / "m.nnc", quick)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    verbs = [name for name in nnc.__all__ if inspect.isfunction(getattr(nnc, name))]
    assert {"compress", "prune", "load", "export", "layer_table", "load_data", "prune_", "share_weights_"} <= set(verbs)
    for name in verbs:
        tests = finder.find(getattr(nnc, name), name, globs={"path": tmp_path / "m.nnc"})
        assert tests and tests[0].examples, f"nnc.{name} has no example"
        for test in tests:
            runner.run(test)
    assert runner.failures == 0
