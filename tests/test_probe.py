"""The fine-tuning probe: it must pick the fallback only when one step of
fine-tuning moves the dense model too far, and must leave the run itself
(model, random streams) exactly as it would be without the probe."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nncompress.config import PruneConfig
from nncompress.errors import ConfigError, ModelError
from nncompress.pipeline import prune_model
from nncompress.pruning.iterative import pruning_groups
from nncompress.train.probe import choose_finetune


def _choose(model, digits, cfg):
    return choose_finetune(model, digits.train_x, digits.train_y, digits.val_x, digits.val_y, cfg)


def test_a_gentle_rate_is_kept_and_a_violent_one_falls_back(digits, trained_mlp) -> None:
    gentle = PruneConfig(lr=1e-4, epochs_per_step=1)
    cfg, choice = _choose(trained_mlp(), digits, gentle)
    assert cfg == gentle and not choice.fallback
    assert choice.probe_kl is not None and choice.probe_kl < gentle.probe_kl
    violent = PruneConfig(lr=3.0, momentum=0.99, epochs_per_step=1, fallback_lr=0.003, fallback_distill=0.7)
    cfg, choice = _choose(trained_mlp(), digits, violent)
    assert choice.fallback and choice.probe_kl > violent.probe_kl
    assert (cfg.lr, cfg.distill) == (0.003, 0.7) == (choice.lr, choice.distill)
    assert dataclasses.replace(cfg, lr=violent.lr, distill=violent.distill) == violent  # nothing else changed
    assert "too far, so the fallback" in choice.to_dict()["note"]


def test_a_rate_that_diverges_falls_back_instead_of_failing(digits, trained_mlp) -> None:
    cfg, choice = _choose(trained_mlp(), digits, PruneConfig(lr=1e6, epochs_per_step=1, fallback_lr=0.01))
    assert choice.fallback and choice.probe_diverged and cfg.lr == 0.01
    assert choice.probe_kl is None and "diverged" in choice.to_dict()["note"]


def test_the_kl_threshold_decides(digits, trained_mlp) -> None:
    base = PruneConfig(lr=0.05, epochs_per_step=1, tolerance=100.0)
    _, measured = _choose(trained_mlp(), digits, base)
    assert measured.probe_kl > 0
    _, strict = _choose(trained_mlp(), digits, dataclasses.replace(base, probe_kl=measured.probe_kl / 2))
    _, loose = _choose(trained_mlp(), digits, dataclasses.replace(base, probe_kl=measured.probe_kl * 2))
    assert strict.fallback and not loose.fallback
    assert strict.probe_kl == loose.probe_kl == measured.probe_kl  # the probe itself is deterministic


def test_the_probe_leaves_model_and_random_streams_alone(digits, trained_mlp) -> None:
    model = trained_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    _choose(model, digits, PruneConfig(lr=0.5, epochs_per_step=1))
    assert torch.equal(torch.rand(4), expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_without_probe_nothing_is_trained(digits, trained_mlp) -> None:
    cfg = PruneConfig(lr=3.0, probe=False)
    out, choice = _choose(trained_mlp(), digits, cfg)
    assert out == cfg and not choice.fallback and choice.probe_val_accuracy is None
    assert "no probe" in choice.describe()


def test_a_probe_that_keeps_the_rate_does_not_change_the_pruning(digits, trained_mlp) -> None:
    """Same masks and weights with and without the probe when it keeps the rate: its
    training runs on a copy, with its own generator."""
    cfg = PruneConfig(
        q0=0.5,
        q_step=0.5,
        q_max=1.0,
        epochs_per_step=1,
        recover_epochs=0,
        refine_steps=0,
        final_epochs=1,
        lr=0.01,
        probe_kl=10.0,
        tolerance=5.0,
        remove_dead=False,
    )
    a, b = trained_mlp(), trained_mlp()
    ra = prune_model(a, digits, cfg)
    rb = prune_model(b, digits, dataclasses.replace(cfg, probe=False))
    assert ra.finetune["probe_kl"] is not None and not ra.finetune["fallback"]
    assert rb.finetune["probe_kl"] is None
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert [s.val_accuracy for s in ra.steps] == [s.val_accuracy for s in rb.steps]


@pytest.mark.parametrize(
    "field,value",
    [("probe_kl", 0.0), ("probe_kl", float("nan")), ("fallback_lr", -1.0), ("fallback_distill", 1.5), ("probe", "yes")],
)
def test_bad_probe_options_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        PruneConfig(**{field: value})


def test_the_fallback_never_raises_the_rate(digits, trained_mlp) -> None:
    cfg, choice = _choose(trained_mlp(), digits, PruneConfig(lr=0.005, epochs_per_step=1, probe_kl=1e-12))
    assert choice.fallback and (cfg.lr, cfg.distill) == (0.005, 0.9)


def test_bad_input_is_refused_before_the_probe_trains(digits, trained_mlp) -> None:
    tasks: list[str] = []
    model = trained_mlp()
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN"):
        prune_model(model, digits, PruneConfig(epochs_per_step=1), progress=lambda e: tasks.append(e.task))
    with pytest.raises(ConfigError, match="unknown layer"):
        prune_model(trained_mlp(), digits, PruneConfig(groups="fc9"), progress=lambda e: tasks.append(e.task))
    assert tasks == []


def test_a_stage_of_only_small_layers_names_min_layer_share(digits, trained_mlp) -> None:
    """fc3 (640 of 17,024 weights) is a real layer: the error must say why it is left out."""
    model = trained_mlp()
    with pytest.raises(ConfigError, match="min_layer_share"):
        pruning_groups(model, PruneConfig(groups="fc3", min_layer_share=0.05))
    assert pruning_groups(model, PruneConfig(groups="fc3+fc1,fc2", min_layer_share=0.05)) == [["fc1"], ["fc2"]]
    assert pruning_groups(model, PruneConfig(groups="fc3+fc1,fc2", min_layer_share=0.0)) == [["fc3", "fc1"], ["fc2"]]


def test_a_stage_of_a_kind_with_few_weights_joins_its_neighbour() -> None:
    """A CNN whose classifier holds 1 % of the weights is pruned in one stage, so the classifier takes no
    share of the tolerance; LeNet-5's conv2 (6 %) keeps its stage; stages named layer by layer stay."""
    from torch import nn

    from nncompress.models import build_model
    from nncompress.pruning.schedule import merge_small_stages

    cnn = nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3), nn.Flatten(), nn.Linear(64, 10))
    assert pruning_groups(cnn, PruneConfig()) == [["0", "1", "3"]]
    assert pruning_groups(cnn, PruneConfig(min_stage_share=0.0)) == [["0", "1"], ["3"]]
    assert pruning_groups(cnn, PruneConfig(groups="fc,conv")) == [["3", "0", "1"]]  # a small first stage
    assert pruning_groups(cnn, PruneConfig(groups="0+1,3")) == [["0", "1"], ["3"]]
    assert pruning_groups(build_model("lenet5"), PruneConfig()) == [["conv2"], ["fc1", "fc2"]]
    sizes = {"a": 50, "b": 1, "c": 40, "d": 1}
    assert merge_small_stages([["a"], ["b"], ["c"], ["d"]], sizes, 0.05) == [["a", "b"], ["c", "d"]]
    assert merge_small_stages([["b"], ["a"]], sizes, 0.05) == [["b", "a"]]
    assert merge_small_stages([["b"]], sizes, 0.05) == [["b"]]
    with pytest.raises(ConfigError, match="min_stage_share"):
        PruneConfig(min_stage_share=1.0)


def test_a_recipe_is_checked_by_the_pruner_s_own_rules_before_training(trained_mlp) -> None:
    from nncompress.pipeline import check_layer_names
    from nncompress.recipe import parse_recipe

    recipe = parse_recipe({"prune": {"groups": "fc3", "min_layer_share": 0.05}})
    with pytest.raises(ConfigError, match=r"^prune\.groups 'fc3' selects only layers under min_layer_share"):
        check_layer_names(recipe, trained_mlp())
    check_layer_names(parse_recipe({"prune": {"groups": "fc3+fc1"}}), trained_mlp())  # fine: fc3 is big enough
