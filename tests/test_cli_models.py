"""The command line with a user's own model (an import path), its kwargs, and the input transform."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from nncompress.cli import main
from nncompress.modelfile import load_compressed
from test_cli import assert_one_line_error, run_main

NETS = '''
from torch import nn

def build(num_classes, in_channels, hidden=32):
    """A user's factory: the data's sizes come in by keyword."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
'''
QUICK = [
    "--q0",
    "1.0",
    "--q-max",
    "1.0",
    "--epochs-per-step",
    "1",
    "--final-epochs",
    "1",
    "--recover-epochs",
    "0",
    "--refine-steps",
    "0",
    "--no-probe",
    "--no-control",
    "--tolerance",
    "5",
    "--share-epochs",
    "1",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project folder holding ``usernets_cli.py``, as the current directory."""
    (tmp_path / "usernets_cli.py").write_text(textwrap.dedent(NETS))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("usernets_cli", None)


def test_train_compress_evaluate_a_users_factory(project: Path) -> None:
    rc, out, err = run_main(
        [
            "--quiet",
            "train",
            "--model",
            "usernets_cli:build",
            "--model-kwargs",
            '{"hidden": 24}',
            "--data",
            "digits",
            "--epochs",
            "3",
            "--normalize",
            "unit",
            "--out",
            "base.pt",
            "--json",
        ]
    )
    assert rc == 0, err
    rc, out, err = run_main(
        [
            "--quiet",
            "compress",
            "base.pt",
            "--model",
            "usernets_cli:build",
            "--data",
            "digits",
            "--normalize",
            "unit",
            "--out",
            "m.nnc",
            "--run-dir",
            "run",
            "--json",
            *QUICK,
        ]
    )
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["transform"]["normalize"] == "unit"  # what the run fed the model, in its summary
    header = load_compressed(project / "m.nnc").header
    assert header["arch"] == {
        "factory": "usernets_cli:build",
        "kwargs": {"hidden": 24, "num_classes": 10, "in_channels": 1},
    }
    assert header["meta"]["transform"] == {"normalize": "unit"}
    # a fresh process would not import a module from the current folder on the file's word alone
    sys.modules.pop("usernets_cli", None)
    assert_one_line_error(*run_main(["evaluate", "m.nnc", "--data", "digits"]), "pass --model usernets_cli:build")
    rc, out, err = run_main(["evaluate", "m.nnc", "--data", "digits", "--model", "usernets_cli:build", "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["transform"]["normalize"] == "unit"  # the file's transform, without --normalize
    assert result["accuracy"] == pytest.approx(summary["test_score"])  # the same inputs compress judged
    rc, out, _ = run_main(
        [
            "evaluate",
            "m.nnc",
            "--data",
            "digits",
            "--model",
            "usernets_cli:build",
            "--normalize",
            "standardize",
            "--json",
        ]
    )
    assert json.loads(out)["transform"]["normalize"] == "standardize"  # the flag still wins


def test_recipe_with_a_factory_and_a_bad_kwargs_flag(project: Path) -> None:
    (project / "r.yaml").write_text(
        textwrap.dedent("""
        model: usernets_cli:build
        model_kwargs: {hidden: 16}
        data: digits
        train: {epochs: 2, batch_size: 64}
        prune: {enabled: false}
        share: {epochs: 0}
    """)
    )
    rc, out, err = run_main(["--quiet", "compress", "--recipe", "r.yaml", "--run-dir", "run", "--json"])
    assert rc == 0, err
    assert load_compressed(project / "run" / "model.nnc").header["arch"]["kwargs"]["hidden"] == 16
    assert_one_line_error(
        *run_main(
            ["train", "--model", "usernets_cli:build", "--model-kwargs", "[1]", "--data", "digits", "--out", "x.pt"]
        ),
        "--model-kwargs must be a JSON object",
    )
    assert_one_line_error(
        *run_main(["train", "--model", "usernets_cli:nothing", "--data", "digits", "--out", "x.pt"]),
        "has no attribute 'nothing'",
    )


ADVERSARIAL = '''
import torch
from torch import nn

from usernets_cli import build


def other(num_classes=10, in_channels=1):
    """Another factory whose tensors have build's shapes: only the recorded name tells them apart."""
    return build(num_classes, in_channels, hidden=16)


def not_module(**kwargs):
    return 42


def raises(**kwargs):
    raise RuntimeError("boom in the factory")


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, input_ids):
        return self.fc(self.emb(input_ids).mean(1))


def _batches(n, seed):
    ids = torch.randint(0, 30, (n, 4), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": ids[i:i + 16]} for i in range(0, n, 16)]


def unlabelled():
    return _batches(48, 0), _batches(32, 1), _batches(32, 2)


def junk():
    return 5


def data_raises():
    raise ValueError("no data today")
'''

TRAIN = ["--quiet", "train", "--data", "digits", "--epochs", "1", "--out", "x.pt"]
COMPRESS = [
    "--quiet",
    "compress",
    "base.pt",
    "--model",
    "usernets_cli:build",
    "--data",
    "digits",
    "--out",
    "x.nnc",
    "--run-dir",
    "xrun",
]
LABEL_FREE = [
    "--quiet",
    "compress",
    "enc.pt",
    "--model",
    "adversarial_cli:Encoder",
    "--data",
    "adversarial_cli:unlabelled",
    "--out",
    "x.nnc",
    "--run-dir",
    "xrun",
]
PRUNE = ["--quiet", "prune", "base.pt", "--model", "usernets_cli:build", "--data", "digits", "--out", "x.pt"]
BAD_INPUTS = {  # name: (argv, exit status, a fragment of the one-line error)
    "model module missing": (TRAIN + ["--model", "nosuchmodule_cli:build"], 1, "no module named 'nosuchmodule_cli'"),
    "model attribute missing": (TRAIN + ["--model", "adversarial_cli:nothing"], 1, "has no attribute 'nothing'"),
    "model file missing": (TRAIN + ["--model", "nofile.py:build"], 1, "no file nofile.py"),
    "model not a Module": (TRAIN + ["--model", "adversarial_cli:not_module"], 1, "not a torch.nn.Module"),
    "model factory raises": (TRAIN + ["--model", "adversarial_cli:raises"], 1, "boom in the factory"),
    "model spec empty": (TRAIN + ["--model", ":build"], 1, "unknown model ':build'"),
    "kwargs not JSON": (
        TRAIN + ["--model", "usernets_cli:build", "--model-kwargs", "{hidden:"],
        1,
        "--model-kwargs must be a JSON object",
    ),
    "kwargs not an object": (
        TRAIN + ["--model", "usernets_cli:build", "--model-kwargs", "[1]"],
        1,
        "--model-kwargs must be a JSON object",
    ),
    "kwargs NaN": (TRAIN + ["--model", "usernets_cli:build", "--model-kwargs", '{"hidden": NaN}'], 1, "is nan"),
    "kwargs NaN to compress": (COMPRESS + ["--model-kwargs", '{"hidden": NaN}'], 1, "--model-kwargs: "),
    "kwargs unknown to the factory": (
        TRAIN + ["--model", "usernets_cli:build", "--model-kwargs", '{"nope": 1}'],
        1,
        "unexpected keyword argument 'nope'",
    ),
    "kwargs to a built-in": (TRAIN + ["--model", "mlp", "--model-kwargs", '{"hidden": 3}'], 1, "takes no kwargs"),
    "normalize junk": (TRAIN + ["--model", "usernets_cli:build", "--normalize", "junk"], 1, "normalize 'junk'"),
    "normalize std 0": (TRAIN + ["--model", "usernets_cli:build", "--normalize", "0.5,0"], 1, "std > 0"),
    "normalize on a function's data": (LABEL_FREE + ["--normalize", "unit"], 1, "gives its own batches"),
    "objective junk": (COMPRESS + ["--objective", "junk"], 1, "--objective: expected one of"),
    "objective junk to prune": (PRUNE + ["--objective", "junk"], 2, "invalid choice: 'junk'"),
    "classification without labels": (
        LABEL_FREE + ["--objective", "classification"],
        1,
        "objective 'classification' needs labels",
    ),
    "classification without labels to prune": (
        [
            "--quiet",
            "prune",
            "enc.pt",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--out",
            "x.pt",
            "--objective",
            "classification",
        ],
        1,
        "objective 'classification' needs labels",
    ),
    "data returns junk": (
        TRAIN + ["--model", "usernets_cli:build", "--data", "adversarial_cli:junk"],
        1,
        "returned int",
    ),
    "data raises": (
        TRAIN + ["--model", "usernets_cli:build", "--data", "adversarial_cli:data_raises"],
        1,
        "no data today",
    ),
    "data function missing": (COMPRESS + ["--data", "adversarial_cli:nofn"], 1, "has no attribute 'nofn'"),
    "train on unlabelled data": (
        [
            "--quiet",
            "train",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--out",
            "x.pt",
        ],
        1,
        "carries no labels",
    ),
    "compress trains on unlabelled data": (
        [
            "--quiet",
            "compress",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--run-dir",
            "xrun",
        ],
        1,
        "cannot train a model from scratch",
    ),
    "target density 0": (COMPRESS + ["--target-density", "0"], 1, "--target-density: expected a fraction"),
    "target density 2": (COMPRESS + ["--target-density", "2"], 1, "--target-density: expected a fraction"),
    "target steps without a density": (COMPRESS + ["--target-steps", "3"], 1, "give --target-density too"),
    "target steps without a density to prune": (PRUNE + ["--target-steps", "3"], 1, "give --target-density too"),
    "select matches nothing": (COMPRESS + ["--select", "nosuch*"], 1, "--select: 'nosuch*' matches no"),
    "exclude matches nothing": (PRUNE + ["--exclude", "nosuch*"], 1, "--exclude: 'nosuch*' matches no"),
    "share-select matches nothing": (COMPRESS + ["--share-select", "nosuch*"], 1, "--share-select: 'nosuch*'"),
    "share-exclude matches nothing": (COMPRESS + ["--share-exclude", "nosuch*"], 1, "--share-exclude: 'nosuch*'"),
    "embedding bits 0": (LABEL_FREE + ["--embedding-bits", "0"], 1, "--embedding-bits: expected an integer"),
    "embedding bits not a number": (LABEL_FREE + ["--embedding-bits", "x"], 2, "invalid int value: 'x'"),
    "evaluate without labels": (
        ["evaluate", "enc.pt", "--model", "adversarial_cli:Encoder", "--data", "adversarial_cli:unlabelled"],
        1,
        "--reference DENSE.pt",
    ),
    "evaluate against a reference by labels": (
        [
            "evaluate",
            "enc.pt",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--reference",
            "enc.pt",
            "--objective",
            "classification",
        ],
        1,
        "compared by its outputs",
    ),
    "another factory than recorded": (
        ["evaluate", "base.pt", "--model", "adversarial_cli:other", "--data", "digits"],
        1,
        "records the model 'usernets_cli:build', but --model names",
    ),
    "another factory than recorded to compress": (
        COMPRESS[:3] + ["--model", "adversarial_cli:other"] + COMPRESS[5:],
        1,
        "pass --model usernets_cli:build",
    ),
}


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a trained factory model (base.pt) and a label-free encoder (enc.pt)."""
    import torch

    from nncompress.data import load_data
    from nncompress.pipeline import save_trained

    folder = tmp_path_factory.mktemp("adversarial")
    (folder / "usernets_cli.py").write_text(textwrap.dedent(NETS))
    (folder / "adversarial_cli.py").write_text(ADVERSARIAL)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.syspath_prepend(str(folder))
        rc, _, err = run_main(
            [
                "--quiet",
                "train",
                "--model",
                "usernets_cli:build",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                "base.pt",
            ]
        )
        assert rc == 0, err
        import adversarial_cli

        torch.manual_seed(0)
        save_trained(adversarial_cli.Encoder(), load_data("adversarial_cli:unlabelled"), folder / "enc.pt", {})
    yield folder
    for name in ("usernets_cli", "adversarial_cli"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(
    adversarial: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    argv, status, fragment = BAD_INPUTS[case]
    monkeypatch.chdir(adversarial)
    monkeypatch.syspath_prepend(str(adversarial))
    before = sorted(adversarial.rglob("*"))
    out_buf, err_buf = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors exit through SystemExit, as for the console script
            rc = exc.code
    out, err = out_buf.getvalue(), err_buf.getvalue()
    if status == 2:
        assert rc == 2 and out == "" and "Traceback" not in err
        assert err.strip().count("\n") == 0 and err.startswith("nncompress: error: ") and fragment in err, err
    else:
        assert_one_line_error(rc, out, err, fragment)
    assert sorted(p for p in adversarial.rglob("*") if "__pycache__" not in p.parts) == [
        p for p in before if "__pycache__" not in p.parts
    ]


def test_sensitivity_of_a_label_free_model_names_its_metric(
    adversarial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(adversarial)
    monkeypatch.syspath_prepend(str(adversarial))
    rc, out, err = run_main(
        [
            "--quiet",
            "sensitivity",
            "enc.pt",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--out",
            str(tmp_path / "sens"),
            "--q-max",
            "1",
        ]
    )
    assert rc == 0, err
    assert out.startswith("dense validation mean_cosine 100.00 %") and "accuracy" not in out


def test_evaluate_scores_a_label_free_file_against_its_reference(
    adversarial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(adversarial)
    monkeypatch.syspath_prepend(str(adversarial))
    out_file = tmp_path / "enc.nnc"
    rc, _, err = run_main(
        [
            "--quiet",
            "compress",
            "enc.pt",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--skip-prune",
            "--share-epochs",
            "0",
            "--fc-bits",
            "2",
            "--out",
            str(out_file),
            "--run-dir",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 0, err
    rc, out, err = run_main(
        [
            "evaluate",
            str(out_file),
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--reference",
            "enc.pt",
            "--json",
        ]
    )
    assert rc == 0, err
    got = json.loads(out)
    assert got["metric"] == "mean_cosine" and got["reference"] == "enc.pt"
    assert 0.5 < got["score"] < 0.9999  # 2-bit codebooks move the outputs, not beyond recognition
    rc, out, err = run_main(
        [
            "evaluate",
            "enc.pt",
            "--model",
            "adversarial_cli:Encoder",
            "--data",
            "adversarial_cli:unlabelled",
            "--reference",
            "enc.pt",
            "--json",
        ]
    )
    assert rc == 0 and json.loads(out)["score"] == pytest.approx(1.0, abs=1e-6)  # itself: identical outputs


def test_the_model_help_names_every_registered_model(capsys) -> None:
    """The built-in names in --help come from the registry, so a model added there is offered."""
    from nncompress.cli import main
    from nncompress.models import MODELS

    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"a built-in model ({', '.join(MODELS)})" in text and "vgg16" in MODELS
