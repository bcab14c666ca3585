"""Iterative pruning: thresholds, schedules, the loop, masks through training."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nncompress.config import PruneConfig, TrainConfig
from nncompress.errors import ConfigError
from nncompress.models import build_model
from nncompress.pruning import prunable_layers, prune_
from nncompress.pruning.iterative import pruning_groups
from nncompress.pruning.apply import apply_masks_, initial_masks
from nncompress.pruning.dropout import adjust_dropout_, dropout_targets, original_rates
from nncompress.pruning.masks import threshold_mask
from nncompress.pruning.schedule import q_schedule, resolve_groups
from nncompress.train import fit


def test_threshold_mask_keeps_weights_at_or_above_threshold() -> None:
    w = torch.tensor([[-0.5, 0.1], [0.2, -0.05]])
    assert threshold_mask(w, 0.2).tolist() == [[True, False], [True, False]]


def test_q_schedule_is_inclusive_and_exact() -> None:
    assert q_schedule(0.5, 0.25, 1.5) == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert q_schedule(1.0, 0.3, 1.2) == [1.0]
    with pytest.raises(ConfigError, match="step"):
        q_schedule(0.5, 0.0, 1.0)


def test_resolve_groups_presets_and_explicit() -> None:
    layers = prunable_layers(build_model("lenet5"))
    assert resolve_groups("all", layers) == [["conv1", "conv2", "fc1", "fc2"]]
    assert resolve_groups("fc,conv", layers) == [["fc1", "fc2"], ["conv1", "conv2"]]
    assert resolve_groups("layer", layers) == [["conv1"], ["conv2"], ["fc1"], ["fc2"]]
    assert resolve_groups("fc1+fc2,conv2", layers) == [["fc1", "fc2"], ["conv2"]]
    with pytest.raises(ConfigError, match="fc9"):
        resolve_groups("fc9", layers)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tolerance": -1}, "tolerance"),
        ({"q_step": 0}, "q_step"),
        ({"q_max": 0.1}, "q_max"),
        ({"epochs_per_step": -2}, "epochs_per_step"),
        ({"layer_scale": {"fc1": 0}}, "layer_scale"),
    ],
)
def test_prune_config_rejects_out_of_range(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PruneConfig(**kwargs)


def test_pruned_weights_stay_zero_through_momentum_and_weight_decay(digits) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    layers = prunable_layers(model)
    masks = {n: torch.rand_like(m.weight) > 0.7 for n, m in layers.items()}
    apply_masks_(layers, masks)
    params_before = [id(p) for p in model.parameters()]
    fit(
        model,
        digits.train_x,
        digits.train_y,
        TrainConfig(epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-2),
        after_step=lambda: apply_masks_(layers, masks),
    )
    assert [id(p) for p in model.parameters()] == params_before
    for name, layer in layers.items():
        assert torch.all(layer.weight[~masks[name]] == 0)
        assert torch.count_nonzero(layer.weight[masks[name]]) > 0.95 * masks[name].sum()


class _Scripted:
    """An evaluate callback that plays back validation accuracies."""

    def __init__(self, accs: list[float]) -> None:
        self.accs = list(accs)

    def __call__(self) -> float:
        return self.accs.pop(0)


def test_loop_rolls_back_to_last_step_within_tolerance() -> None:
    torch.manual_seed(0)
    model = build_model("lenet300")
    seen: list[set[int]] = []

    def finetune(params, epochs, after_step) -> None:
        seen.append({id(p) for p in params})
        after_step()

    # dense 0.90; steps q=0.5, 1.0 ok; q=1.5 drops 2 points -> rollback; final keeps
    evaluate = _Scripted([0.90, 0.90, 0.899, 0.88, 0.899, 0.899])
    cfg = PruneConfig(
        min_layer_share=0.0,
        q0=0.5,
        q_step=0.5,
        q_max=3.0,
        tolerance=0.3,
        recover_epochs=0,
        refine_steps=0,
        control=False,
        remove_dead=False,
    )
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    stages = [(r.stage, r.accepted) for r in result.steps]
    assert stages == [("dense", True), ("step", True), ("step", True), ("step", False), ("final", True)]
    assert result.q == {"fc1": 1.0, "fc2": 1.0, "fc3": 1.0}
    step_q1 = result.steps[2]
    assert result.steps[-1].density == step_q1.density  # masks restored to the q=1.0 step
    for name, layer in prunable_layers(model).items():
        assert abs(float((layer.weight != 0).float().mean()) - step_q1.density[name]) < 1e-6
    assert len(seen) == 4 and seen[-1] == {id(p) for p in model.parameters()}  # final tunes everything


def test_recovery_epochs_rescue_a_step_before_giving_up() -> None:
    model = build_model("lenet300")
    calls: list[int] = []

    def finetune(params, epochs, after_step) -> None:
        calls.append(epochs)

    evaluate = _Scripted([0.90, 0.89, 0.899, 0.85, 0.85, 0.899, 0.899])
    cfg = PruneConfig(
        q0=0.5,
        q_step=0.5,
        q_max=1.5,
        tolerance=0.3,
        epochs_per_step=2,
        recover_epochs=5,
        refine_steps=0,
        final_epochs=7,
        control=False,
        remove_dead=False,
    )
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    assert calls == [2, 5, 2, 5, 7]
    assert [(r.stage, r.accepted) for r in result.steps] == [
        ("dense", True),
        ("step", False),
        ("recover", True),
        ("step", False),
        ("recover", False),
        ("final", True),
    ]
    assert result.q["fc1"] == 0.5


def test_refinement_bisects_between_last_good_and_failed_q() -> None:
    model = build_model("lenet300")
    # dense; q=1.0 ok; q=2.0 fails; bisect 1.5 ok; bisect 1.75 fails -> keep 1.5; final
    evaluate = _Scripted([0.90, 0.90, 0.85, 0.899, 0.85, 0.899, 0.899])
    cfg = PruneConfig(
        min_layer_share=0.0,
        q0=1.0,
        q_step=1.0,
        q_max=3.0,
        recover_epochs=0,
        refine_steps=2,
        control=False,
        remove_dead=False,
    )
    result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=evaluate)
    tried = [r.q["fc1"] for r in result.steps if r.stage == "step"]
    assert tried == [1.0, 2.0, 1.5, 1.75]
    assert [r.accepted for r in result.steps if r.stage == "step"] == [True, False, True, False]
    assert result.q == {"fc1": 1.5, "fc2": 1.5, "fc3": 1.5}
    assert result.steps[-1].density == result.steps[3].density


def test_control_fine_tune_sets_the_reference_only_downwards() -> None:
    model = build_model("lenet300")
    calls: list[int] = []

    def finetune(params, epochs, after_step) -> None:
        calls.append(len(list(params)))

    # dense 0.92 (lucky); the control fine-tune gives 0.916: drops count from their mean, 0.918
    evaluate = _Scripted([0.92, 0.916, 0.916, 0.914, 0.914, 0.914])
    cfg = PruneConfig(q0=1.0, q_step=1.0, q_max=2.0, tolerance=0.5, recover_epochs=0, refine_steps=0, remove_dead=False)
    result = prune_(model, cfg, finetune=finetune, evaluate=evaluate)
    assert calls[0] == len(list(model.parameters()))  # the control tunes everything
    assert result.reference_val_accuracy == pytest.approx(0.918)
    assert [(r.stage, r.accepted) for r in result.steps] == [
        ("dense", True),
        ("control", True),
        ("step", True),
        ("step", True),
        ("final", True),
    ]
    assert result.steps[3].drop_points == pytest.approx(0.4)  # 0.918 - 0.914, not 0.92 - 0.914
    # a control that does better than the dense model does not make the test stricter
    evaluate = _Scripted([0.90, 0.95, 0.897, 0.897, 0.897, 0.897])
    result = prune_(build_model("lenet300"), cfg, finetune=finetune, evaluate=evaluate)
    assert result.reference_val_accuracy == pytest.approx(0.90)
    assert result.steps[2].drop_points == pytest.approx(0.3)


def test_groups_freeze_the_other_layers() -> None:
    model = build_model("lenet300")
    layers = prunable_layers(model)
    seen: list[set[int]] = []

    def finetune(params, epochs, after_step) -> None:
        seen.append({id(p) for p in params})

    evaluate = _Scripted([0.9] * 20)
    prune_(
        model,
        PruneConfig(
            min_layer_share=0.0, q0=0.5, q_step=0.5, q_max=0.5, groups="layer", control=False, remove_dead=False
        ),
        finetune=finetune,
        evaluate=evaluate,
    )
    everything = {id(p) for p in model.parameters()}
    stage = [{id(p) for p in layers[n].parameters()} for n in ("fc1", "fc2", "fc3")]
    # stage 1, consolidation of all layers, stage 2, consolidation, stage 3, final
    assert seen == [stage[0], everything, stage[1], everything, stage[2], everything]


def test_layer_scale_multiplies_q_per_layer() -> None:
    model = build_model("lenet300")
    stds = {n: float(m.weight.detach().std()) for n, m in prunable_layers(model).items()}
    evaluate = _Scripted([0.9] * 10)
    cfg = PruneConfig(
        min_layer_share=0.0, q0=1.0, q_step=1.0, q_max=1.0, layer_scale={"fc1": 1.5, "fc3": 0.5}, remove_dead=False
    )
    result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=evaluate)
    assert result.q == {"fc1": 1.5, "fc2": 1.0, "fc3": 0.5}
    for name, layer in prunable_layers(model).items():
        w = layer.weight[layer.weight != 0].abs()
        assert w.min() >= result.q[name] * stds[name]
    with pytest.raises(ConfigError, match="fc7"):
        prune_(model, PruneConfig(layer_scale={"fc7": 1.0}), finetune=lambda p, e, a: None, evaluate=evaluate)


def test_dropout_rate_follows_pruned_size() -> None:
    model = build_model("mlp")
    assert dropout_targets(model) == {"drop1": "fc2", "drop2": "fc3"}
    rates = original_rates(model)
    new = adjust_dropout_(model, rates, {"fc2": 0.25, "fc3": 1.0})
    assert new == pytest.approx({"drop1": 0.2 * 0.5, "drop2": 0.2})
    assert model.drop1.p == pytest.approx(0.1)


def test_real_pruning_on_digits_keeps_accuracy_and_zeros(digits, trained_mlp) -> None:
    from nncompress.pipeline import metrics, prune_model

    model = trained_mlp()
    dense_val = metrics(model, digits, "val")["accuracy"]
    cfg = PruneConfig(
        q0=0.5,
        q_step=0.5,
        q_max=2.0,
        tolerance=1.5,
        epochs_per_step=3,
        final_epochs=5,
        lr=0.02,
        batch_size=64,
        recover_epochs=0,
    )
    result = prune_model(model, digits, cfg)
    assert result.dense_val_accuracy == pytest.approx(dense_val)
    accepted = [r for r in result.steps if r.stage == "step" and r.accepted]
    assert accepted, "at least one pruning step should fit a 1.5 point tolerance"
    densities = [r.overall_density for r in accepted]
    assert densities == sorted(densities, reverse=True) and densities[-1] < 0.6
    reference = result.reference_val_accuracy
    assert reference is not None and reference <= dense_val
    final = result.steps[-1]
    drop = (reference - metrics(model, digits, "val")["accuracy"]) * 100
    assert final.drop_points == pytest.approx(drop, abs=1e-3) and final.drop_se is not None
    assert final.estimated_drop is not None and final.estimated_drop <= 1.5 and final.accepted
    assert drop <= 1.5 + 2 * final.drop_se  # the reading itself: within the tolerance up to its noise
    assert result.val_accuracy == pytest.approx(metrics(model, digits, "val")["accuracy"])
    kept = sum(int((m.weight != 0).sum()) for m in prunable_layers(model).values())
    assert kept == sum(int(m.sum()) for m in result.masks.values())
    assert model.drop1.p < 0.2  # dropout shrank with the pruned layer


class _Custom(nn.Module):
    """Not Sequential, not ours: must still be prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_any_module_with_linear_and_conv_is_prunable(digits) -> None:
    from nncompress.pipeline import prune_model

    torch.manual_seed(0)
    model = _Custom()
    cfg = PruneConfig(q0=1.0, q_step=0.5, q_max=1.0, tolerance=100, epochs_per_step=1, final_epochs=1, recover_epochs=0)
    result = prune_model(model, digits, cfg)
    assert set(result.masks) == {"conv", "head"}
    assert float((model.head.weight == 0).float().mean()) > 0.5
    assert result.shrink is not None and not result.shrink.applicable and "Sequential" in result.shrink.reason


def test_nan_weights_are_refused_before_any_work() -> None:
    from nncompress.errors import ModelError

    model = build_model("lenet300")
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match="fc2"):
        prune_(model, PruneConfig(), finetune=lambda p, e, a: None, evaluate=lambda: 0.9)


def test_initial_masks_keep_existing_zeros() -> None:
    model = build_model("lenet300")
    with torch.no_grad():
        model.fc1.weight[:, :10] = 0
    masks = initial_masks(prunable_layers(model))
    assert not masks["fc1"][:, :10].any() and masks["fc2"].all()


def test_fc_stage_leaves_conv_weights_untouched(digits) -> None:
    from nncompress.pipeline import prune_model

    torch.manual_seed(0)
    model = _Custom()
    snapshots: list[torch.Tensor] = []

    def on_step(rec) -> None:
        if rec.stage in ("step", "recover") and rec.group == 0:
            snapshots.append(model.conv.weight.detach().clone())

    cfg = PruneConfig(
        q0=0.5,
        q_step=0.5,
        q_max=1.5,
        tolerance=100,
        epochs_per_step=1,
        final_epochs=0,
        recover_epochs=0,
        groups="fc,conv",
    )
    prune_model(model, digits, cfg, on_step=on_step)
    assert len(snapshots) == 3
    assert all(torch.equal(s, snapshots[0]) for s in snapshots)  # frozen through the fc stage
    assert not torch.equal(model.conv.weight, snapshots[0])  # and pruned in the conv stage


def test_dropout_counts_from_the_connections_at_the_start() -> None:
    model = build_model("mlp")
    with torch.no_grad():
        model.fc2.weight.mul_(torch.rand_like(model.fc2.weight) < 0.3)  # already pruned earlier
    evaluate = _Scripted([0.9] * 10)
    cfg = PruneConfig(q0=0.0, q_step=1.0, q_max=0.0, control=False, remove_dead=False)
    result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=evaluate)
    assert result.dropout["drop1"] == pytest.approx(0.2)  # nothing new pruned: the rate stays


def test_small_layers_can_be_left_unpruned() -> None:
    model = build_model("lenet300")  # fc3 holds 1,000 of 266,200 weights (0.4 %)
    evaluate = _Scripted([0.9] * 10)
    cfg = PruneConfig(q0=1.0, q_step=1.0, q_max=1.0, min_layer_share=0.01, control=False, remove_dead=False)
    result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=evaluate)
    assert result.steps[-1].density["fc3"] == 1.0 and result.steps[-1].density["fc1"] < 0.5
    with pytest.raises(ConfigError, match="min_layer_share"):
        PruneConfig(min_layer_share=1.5)


@pytest.mark.parametrize("budget,accepted", [("even", [False, True]), ("greedy", [True, True])])
def test_even_budget_keeps_tolerance_for_later_stages(budget: str, accepted: list[bool]) -> None:
    model = build_model("lenet300")
    # two stages (fc1 | fc2+fc3); dense 0.900; stage 0 step leaves 0.2 pt (over half of 0.3 with "even"),
    # stage 1 step leaves 0.25 pt (within the whole 0.3)
    evaluate = _Scripted([0.900, 0.898, 0.8975, 0.8975, 0.8975])
    cfg = PruneConfig(
        min_layer_share=0.0,
        q0=1.0,
        q_step=1.0,
        q_max=1.0,
        tolerance=0.3,
        recover_epochs=0,
        refine_steps=0,
        control=False,
        remove_dead=False,
        groups="fc1,fc2+fc3",
        budget=budget,
    )
    result = prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=evaluate)
    assert [r.accepted for r in result.steps if r.stage == "step"] == accepted
    assert (result.q["fc1"] == 1.0) == (budget == "greedy")
    with pytest.raises(ConfigError, match="budget"):
        PruneConfig(budget="lavish")


def test_distillation_loss_mixes_labels_and_softened_teacher() -> None:
    import torch.nn.functional as F
    from nncompress.train.loop import Teacher

    torch.manual_seed(0)
    teacher_net = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    logits = torch.randn(8, 3)
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(Teacher(teacher_net, 0.0, 4.0).loss(logits, x, y), ce)
    with torch.no_grad():
        same = teacher_net(x)
    assert torch.allclose(Teacher(teacher_net, 1.0, 4.0).loss(same, x, y), torch.tensor(0.0), atol=1e-6)
    mixed = Teacher(teacher_net, 0.5, 2.0).loss(logits, x, y)
    kd = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(same / 2, 1), reduction="batchmean")
    assert torch.allclose(mixed, 0.5 * ce + 0.5 * 4 * kd)
    assert not any(p.requires_grad for p in teacher_net.parameters())  # the teacher never trains


def test_pruning_with_distillation_on_digits(digits, trained_mlp) -> None:
    from nncompress.pipeline import metrics, prune_model

    model = trained_mlp()
    dense = metrics(model, digits)["accuracy"]
    cfg = PruneConfig(epochs_per_step=1, final_epochs=2, q_max=1.0, batch_size=64, distill=0.7, tolerance=1.0)
    result = prune_model(model, digits, cfg)
    assert result.steps[-1].overall_density < 0.5
    assert metrics(model, digits)["accuracy"] > dense - 0.03
    with pytest.raises(ConfigError, match="distill"):
        PruneConfig(distill=1.5)


class _EmbedNet(nn.Module):
    """Token ids -> mean embedding -> two Linear layers (a bag-of-words classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(ids).mean(1))


def test_an_embedding_is_pruned_per_weight_only_when_selected() -> None:
    torch.manual_seed(0)
    model = _EmbedNet()
    table = model.embed.weight.detach().clone()
    cfg = PruneConfig(
        q0=1.0,
        q_step=1.0,
        q_max=1.0,
        control=False,
        min_layer_share=0.0,
        final_epochs=0,
        recover_epochs=0,
        refine_steps=0,
    )
    prune_(model, cfg, finetune=lambda p, e, a: None, evaluate=lambda: 0.9)
    assert torch.equal(model.embed.weight, table)  # the default selection is fc,conv
    result = prune_(
        model,
        dataclasses.replace(cfg, select="fc,embedding", groups="embedding,fc"),
        finetune=lambda p, e, a: None,
        evaluate=lambda: 0.9,
    )
    assert set(result.masks) == {"embed", "body.0", "body.2"}
    kept = table.abs() >= table.std()
    assert torch.equal(model.embed.weight != 0, kept) and torch.equal(model.embed.weight[kept], table[kept])
    assert [r.q.get("embed", 0.0) for r in result.steps if r.stage == "step"][0] == 1.0  # its own stage, first
    assert model.embed.weight.shape == (50, 16)  # dead-neuron removal left the embedding alone


def test_embedding_group_token_and_exclude() -> None:
    model = _EmbedNet()
    layers = prunable_layers(model, "all", exclude="body.2")
    assert resolve_groups("embedding,fc", layers) == [["embed"], ["body.0"]]
    with pytest.raises(ConfigError, match="selects no layer"):
        pruning_groups(model, PruneConfig(select="embedding", exclude="Embedding"))


def test_conv1d_layers_prune_and_keep_their_zeros(digits) -> None:
    """A Conv1d over each image's 64 pixels as a sequence goes through the tolerance loop like a Conv2d."""
    from nncompress.pipeline import metrics, prune_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(2), nn.Conv1d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 60, 10))
    cfg = PruneConfig(
        q0=0.75,
        q_step=0.25,
        q_max=1.0,
        tolerance=100,
        epochs_per_step=1,
        final_epochs=1,
        recover_epochs=0,
        groups="all",
        min_layer_share=0.0,
        probe=False,
    )
    result = prune_model(model, digits, cfg)
    assert set(result.masks) == {"1", "4"}
    conv = model[1]
    assert isinstance(conv, nn.Conv1d) and result.masks["1"].shape == conv.weight.shape
    for name, layer in prunable_layers(model).items():
        mask = result.masks[name]
        assert torch.all(layer.weight[~mask] == 0), name  # fine-tuning left every pruned weight at zero
        assert 0 < int(mask.sum()) < mask.numel(), name  # pruned, not emptied
    assert float((conv.weight == 0).float().mean()) > 0.2  # q >= 0.75 std cuts at least a fifth of a kernel
    assert metrics(model, digits, "val")["accuracy"] == pytest.approx(result.val_accuracy)
