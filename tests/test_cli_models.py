"""The command line with a user's own model (an import path), its kwargs, and the input transform."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from nncompress.modelfile import load_compressed
from test_cli import assert_one_line_error, run_main

NETS = '''
from torch import nn

def build(num_classes, in_channels, hidden=32):
    """A user's factory: the data's sizes come in by keyword."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''
QUICK = ["--q0", "1.0", "--q-max", "1.0", "--epochs-per-step", "1", "--final-epochs", "1", "--recover-epochs", "0",
         "--refine-steps", "0", "--no-probe", "--no-control", "--tolerance", "5", "--share-epochs", "1"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project folder holding ``usernets_cli.py``, as the current directory."""
    (tmp_path / "usernets_cli.py").write_text(textwrap.dedent(NETS))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("usernets_cli", None)


def test_train_compress_evaluate_a_users_factory(project: Path) -> None:
    rc, out, err = run_main(["--quiet", "train", "--model", "usernets_cli:build", "--model-kwargs", '{"hidden": 24}',
                             "--data", "digits", "--epochs", "3", "--normalize", "unit", "--out", "base.pt", "--json"])
    assert rc == 0, err
    rc, out, err = run_main(["--quiet", "compress", "base.pt", "--model", "usernets_cli:build", "--data", "digits",
                             "--normalize", "unit", "--out", "m.nnc", "--run-dir", "run", "--json", *QUICK])
    assert rc == 0, err
    summary = json.loads(out)
    header = load_compressed(project / "m.nnc").header
    assert header["arch"] == {"factory": "usernets_cli:build",
                              "kwargs": {"hidden": 24, "num_classes": 10, "in_channels": 1}}
    assert header["meta"]["transform"] == {"normalize": "unit"}
    # a fresh process would not import a module from the current folder on the file's word alone
    sys.modules.pop("usernets_cli", None)
    assert_one_line_error(*run_main(["evaluate", "m.nnc", "--data", "digits"]), "pass --model usernets_cli:build")
    rc, out, err = run_main(["evaluate", "m.nnc", "--data", "digits", "--model", "usernets_cli:build", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["transform"]["normalize"] == "unit"  # the file's transform, without --normalize
    assert result["accuracy"] == pytest.approx(summary["test_score"])  # the same inputs compress judged
    rc, out, _ = run_main(["evaluate", "m.nnc", "--data", "digits", "--model", "usernets_cli:build",
                           "--normalize", "standardize", "--json"])
    assert json.loads(out)["transform"]["normalize"] == "standardize"  # the flag still wins


def test_recipe_with_a_factory_and_a_bad_kwargs_flag(project: Path) -> None:
    (project / "r.yaml").write_text(textwrap.dedent('''
        model: usernets_cli:build
        model_kwargs: {hidden: 16}
        data: digits
        train: {epochs: 2, batch_size: 64}
        prune: {enabled: false}
        share: {epochs: 0}
    '''))
    rc, out, err = run_main(["--quiet", "compress", "--recipe", "r.yaml", "--run-dir", "run", "--json"])
    assert rc == 0, err
    assert load_compressed(project / "run" / "model.nnc").header["arch"]["kwargs"]["hidden"] == 16
    assert_one_line_error(*run_main(["train", "--model", "usernets_cli:build", "--model-kwargs", "[1]",
                                     "--data", "digits", "--out", "x.pt"]), "--model-kwargs must be a JSON object")
    assert_one_line_error(*run_main(["train", "--model", "usernets_cli:nothing", "--data", "digits", "--out", "x.pt"]),
                          "has no attribute 'nothing'")
