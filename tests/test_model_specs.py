"""Models from an import path: records in files, the trust policy, shapes after removal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.errors import CheckpointError, ConfigError, FormatError, ModelError
from nncompress.modelfile import load_compressed, save_compressed
from nncompress.models import arch_record, build_model, fit_shapes_, from_record, record_factory
from nncompress.pruning.shrink import remove_dead_neurons_
from nncompress.train.checkpoint import load_checkpoint, save_checkpoint

NETS = """
from torch import nn

calls = []

class Net(nn.Sequential):
    def __init__(self, n_in=6, hidden=16, n_out=3, bn=False, flat=False):
        calls.append(hidden)
        layers = [nn.Flatten()] if flat else []
        layers.append(nn.Linear(n_in, hidden))
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        super().__init__(*layers, nn.ReLU(), nn.Linear(hidden, n_out))

def build(hidden=16, **kw):
    return Net(hidden=hidden, **kw)

def not_a_model(**kw):
    return {"hidden": 3}

def boom(**kw):
    raise RuntimeError("no GPU here")
"""


@pytest.fixture
def nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's module ``usernets_specs`` in the current directory."""
    (tmp_path / "usernets_specs.py").write_text(textwrap.dedent(NETS))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_build_by_module_or_file_path_records_the_factory(nets: Path) -> None:
    model = build_model("usernets_specs:build", kwargs={"hidden": 8, "bn": True})
    assert arch_record(model) == {"factory": "usernets_specs:build", "kwargs": {"hidden": 8, "bn": True}}
    by_file = build_model("usernets_specs.py:Net", kwargs={"hidden": 5})
    assert by_file[0].out_features == 5
    assert arch_record(by_file) == {"factory": "usernets_specs.py:Net", "kwargs": {"hidden": 5}}
    assert arch_record(nn.Linear(2, 2)) is None  # nothing recorded for a model built by hand...
    hand = record_factory(nn.Linear(2, 2), "torch.nn:Linear", {"in_features": 2, "out_features": 2})
    assert arch_record(hand) == {"factory": "torch.nn:Linear", "kwargs": {"in_features": 2, "out_features": 2}}


def test_factory_errors_say_what_is_wrong(nets: Path) -> None:
    with pytest.raises(ModelError, match="returned a dict, not a torch.nn.Module"):
        build_model("usernets_specs:not_a_model")
    with pytest.raises(ModelError, match="failed with kwargs.*no GPU here"):
        build_model("usernets_specs:boom")
    with pytest.raises(ConfigError, match="no attribute 'Nope'"):
        build_model("usernets_specs:Nope")
    with pytest.raises(ModelError, match=r"kwargs\.dtype is a dtype: .*plain JSON"):
        build_model("usernets_specs:build", kwargs={"dtype": torch.float32})
    with pytest.raises(ModelError, match="only finite numbers"):
        build_model("usernets_specs:build", kwargs={"hidden": float("nan")})
    with pytest.raises(ModelError, match="takes no kwargs"):
        build_model("mlp", kwargs={"hidden": 3})
    with pytest.raises(ModelError, match="not an import path"):
        record_factory(nn.Linear(1, 1), "just_a_name")


def test_class_records_rebuild_without_asking(nets: Path, tmp_path: Path) -> None:
    model = build_model("usernets_specs:Net", kwargs={"hidden": 7, "bn": True})
    save_checkpoint(tmp_path / "c.pt", model)
    rebuilt = load_checkpoint(tmp_path / "c.pt").build_model()
    _same(rebuilt, model)
    assert arch_record(rebuilt) == arch_record(model)  # saving it again keeps the record


def test_function_records_need_the_caller_to_name_them(nets: Path, tmp_path: Path) -> None:
    model = build_model("usernets_specs:build", kwargs={"hidden": 9})
    save_checkpoint(tmp_path / "c.pt", model)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(
        CheckpointError,
        match=r"which is a function, not an nn.Module class.*"
        r"pass --model usernets_specs:build.*"
        r"trust_factory='usernets_specs:build'",
    ):
        ckpt.build_model()
    with pytest.raises(CheckpointError, match="records the model factory 'usernets_specs:build', not 'x:y'"):
        ckpt.build_model(trust_factory="x:y")
    _same(ckpt.build_model(trust_factory="usernets_specs:build"), model)
    _same(ckpt.build_model(trust_factory=True), model)


@pytest.mark.parametrize(
    "record",
    [
        {"factory": "os:system", "kwargs": {"command": "touch pwned"}},
        {"factory": "builtins:exec", "kwargs": {"source": "open('pwned', 'w')"}},
        {"factory": "subprocess:run", "kwargs": {"args": ["touch", "pwned"]}},
    ],
)
def test_a_file_cannot_make_us_call_arbitrary_callables(nets: Path, tmp_path: Path, record: dict) -> None:
    model = build_model("usernets_specs:Net")
    save_checkpoint(tmp_path / "c.pt", model)
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["arch"] = record
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not an nn.Module class.*only called when you name it"):
        load_checkpoint(tmp_path / "evil.pt").build_model()
    with pytest.raises(ModelError, match="not an nn.Module class"):
        from_record(record)
    assert not (tmp_path / "pwned").exists()


def test_a_record_is_checked_on_the_meta_device_before_anything_is_allocated(nets: Path, tmp_path: Path) -> None:
    import usernets_specs

    model = build_model("usernets_specs:Net", kwargs={"hidden": 6})
    save_checkpoint(tmp_path / "c.pt", model)
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["arch"]["kwargs"] = {"hidden": 10**9}  # 6e9 weights if it were ever allocated
    torch.save(payload, tmp_path / "huge.pt")
    usernets_specs.calls.clear()
    rebuilt = load_checkpoint(tmp_path / "huge.pt").build_model()  # allocated at the stored sizes only
    assert usernets_specs.calls == [10**9] and rebuilt[0].out_features == 6
    _same(rebuilt, model)
    payload["arch"]["kwargs"] = {"hidden": 6, "n_out": 4}  # an output size: never something removal changes
    torch.save(payload, tmp_path / "other.pt")
    usernets_specs.calls.clear()
    with pytest.raises(
        CheckpointError,
        match=r"does not match the stored weights \(2\.weight: checkpoint "
        r"\(3, 6\) vs model \(4, 6\)",
    ):
        load_checkpoint(tmp_path / "other.pt").build_model()
    assert usernets_specs.calls == [6]  # only the meta-device build ran


def test_non_persistent_buffers_are_built_for_real(nets: Path, tmp_path: Path) -> None:
    (nets / "usernets_buffers.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        class Scaled(nn.Module):
            def __init__(self, n=4):
                super().__init__()
                self.fc = nn.Linear(n, 2)
                self.register_buffer("scale", torch.full((n,), 3.0), persistent=False)

            def forward(self, x):
                return self.fc(x * self.scale)
    """)
    )
    model = build_model("usernets_buffers:Scaled").eval()
    save_checkpoint(tmp_path / "b.pt", model)
    rebuilt = load_checkpoint(tmp_path / "b.pt").build_model()
    x = torch.randn(3, 4)
    assert torch.equal(rebuilt.scale, torch.full((4,), 3.0))
    torch.testing.assert_close(rebuilt(x), model(x))


def test_shrunk_states_load_into_the_original_sizes(nets: Path, tmp_path: Path) -> None:
    model = build_model("usernets_specs:Net", kwargs={"hidden": 12, "bn": True}).eval()
    with torch.no_grad():
        model[0].weight[:4] = 0  # units 0-3: no inputs (bias folds forward)
        model[3].weight[:, 6:8] = 0  # units 6-7: no outputs
        model[1].running_mean.uniform_(-1, 1)
    x = torch.randn(5, 6)
    expected = model(x)
    report = remove_dead_neurons_(model)
    assert report.removed == {"0": 6} and model[1].num_features == 6
    save_checkpoint(tmp_path / "s.pt", model)
    rebuilt = load_checkpoint(tmp_path / "s.pt").build_model()
    assert rebuilt[0].out_features == 6 and rebuilt[3].in_features == 6 and rebuilt[1].num_features == 6
    torch.testing.assert_close(rebuilt(x), expected, rtol=1e-5, atol=1e-5)
    save_compressed(tmp_path / "s.nnc", model, {})
    box = load_compressed(tmp_path / "s.nnc")
    assert box.header["arch"] == arch_record(model)
    torch.testing.assert_close(box.build_model()(x), expected, rtol=1e-5, atol=1e-5)
    mine = box.build_model(build_model("usernets_specs:Net", kwargs={"hidden": 12, "bn": True}))
    torch.testing.assert_close(mine(x), expected, rtol=1e-5, atol=1e-5)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4, 2))


def test_fit_shapes_only_shrinks_unit_dimensions() -> None:
    model = _net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["0.weight"], state["0.bias"] = torch.zeros(5, 3, 3, 3), torch.zeros(5)
    for k in ("1.weight", "1.bias", "1.running_mean", "1.running_var"):
        state[k] = torch.zeros(5)
    state["2.weight"] = torch.zeros(4, 5, 3, 3)
    assert fit_shapes_(model, state) == ["0", "1", "2"]
    assert (model[0].out_channels, model[1].num_features, model[2].in_channels) == (5, 5, 5)
    model.load_state_dict(state)
    embedded = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 3))
    assert fit_shapes_(
        embedded, {"0.weight": torch.zeros(10, 4), "1.weight": torch.zeros(3, 4), "1.bias": torch.zeros(3)}
    ) == ["0", "1"]
    assert embedded[0].embedding_dim == 4 and embedded[1].in_features == 4
    for bad in (
        {"0.weight": torch.zeros(5, 3, 2, 2), "0.bias": torch.zeros(5)},  # kernel: not a unit dim
        {"4.weight": torch.zeros(2, 9)},  # larger: not a removal
        {"4.weight": torch.zeros(1, 4), "4.bias": torch.zeros(1)},  # the model's own outputs
        {"0.weight": torch.zeros(8, 2, 3, 3)},
    ):  # the model's own inputs
        fresh = _net()
        assert fit_shapes_(fresh, {**fresh.state_dict(), **bad}) == []
    assert fit_shapes_(nn.Sequential(nn.Embedding(10, 6)), {"0.weight": torch.zeros(8, 6)}) == []  # vocabulary
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 1))
    state = {
        "0.weight": torch.zeros(2, 2, 3, 3),
        "0.bias": torch.zeros(2),
        "1.weight": torch.zeros(4, 2, 1, 1),
        "1.bias": torch.zeros(4),
    }
    assert fit_shapes_(grouped, state) == []


def test_nnc_file_with_a_function_record(nets: Path, tmp_path: Path) -> None:
    model = build_model("usernets_specs:build", kwargs={"hidden": 4})
    save_compressed(tmp_path / "m.nnc", model, {})
    box = load_compressed(tmp_path / "m.nnc")
    with pytest.raises(FormatError, match="pass --model usernets_specs:build"):
        box.build_model()
    _same(box.build_model(trust_factory="usernets_specs:build"), model)


def test_compress_model_decodes_a_function_factory_it_was_given(nets: Path, tmp_path: Path, digits) -> None:
    from nncompress.config import PruneConfig, ShareConfig
    from nncompress.pipeline import compress_model, metrics

    torch.manual_seed(0)
    model = build_model("usernets_specs:build", kwargs={"n_in": 64, "hidden": 24, "n_out": 10, "flat": True})
    with torch.no_grad():
        model[1].weight[:5] = 0  # five hidden units without inputs: removed, so the file holds a smaller layer
    cfg = PruneConfig(
        q0=0.5,
        q_max=0.5,
        epochs_per_step=1,
        final_epochs=0,
        recover_epochs=0,
        tolerance=100.0,
        probe=False,
        batch_size=64,
    )
    summary = compress_model(model, {}, digits, tmp_path / "m.nnc", cfg, ShareConfig(epochs=0, batch_size=64))
    box = load_compressed(tmp_path / "m.nnc")
    assert box.header["arch"] == {
        "factory": "usernets_specs:build",
        "kwargs": {"n_in": 64, "hidden": 24, "n_out": 10, "flat": True},
    }
    restored = box.build_model(trust_factory="usernets_specs:build")
    assert restored[1].out_features <= 19
    assert metrics(restored, digits)["accuracy"] == summary["test_accuracy"]


def test_a_record_alone_never_imports_from_the_current_folder(nets: Path, tmp_path: Path) -> None:
    """A downloaded file may sit beside a hostile module: the user's word is needed to import it."""
    import sys

    model = build_model("usernets_specs:Net", kwargs={"hidden": 5})
    save_checkpoint(tmp_path / "c.pt", model)
    sys.modules.pop("usernets_specs", None)  # as in a fresh process
    with pytest.raises(CheckpointError, match="pass --model usernets_specs:Net"):
        load_checkpoint(tmp_path / "c.pt").build_model()
    assert "usernets_specs" not in sys.modules
    _same(load_checkpoint(tmp_path / "c.pt").build_model(trust_factory="usernets_specs:Net"), model)
