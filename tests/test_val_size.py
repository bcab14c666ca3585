"""How many training examples the built-in data hold out for validation: set, recorded, reused, checked."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch

from nncompress.cli.common import _splits
from nncompress.data import load_data
from nncompress.data.datasets import recorded_val_size
from nncompress.errors import ConfigError, RecipeError
from nncompress.pipeline.measure import _data_meta
from nncompress.recipe import parse_recipe, recipe_to_dict


def test_val_size_sets_the_held_out_count_and_is_recorded() -> None:
    default = load_data("digits")
    assert default.sizes()["val"] == 143 and default.split == {"seed": 0, "val": 143}  # 10 % of 1,438
    larger = load_data("digits", val_size=400)
    assert larger.sizes() == {"train": 1038, "val": 400, "test": 359}
    assert larger.split == {"seed": 0, "val": 400}
    unit = load_data("digits", val_size=400, normalize="unit"), load_data("digits", normalize="unit")
    assert torch.equal(unit[0].test_x, unit[1].test_x)  # the test split does not move (standardising would
    # use each train split's statistics: one more reason later runs reuse the recorded size)
    assert _data_meta(larger)["split"] == {"seed": 0, "val": 400}


def test_a_smaller_split_is_the_head_of_a_larger_one() -> None:
    """The validation split is a seeded permutation's head: a model's validation images stay validation images
    under any larger split, and a larger split adds only images it trained on."""
    small = load_data("digits", val_size=100, normalize="unit")  # standardising would use each train split
    large = load_data("digits", val_size=300, normalize="unit")
    flat_small, flat_large = small.val_x.flatten(1), large.val_x.flatten(1)
    assert all(bool((flat_large == row).all(1).any()) for row in flat_small)
    flat_train = small.train_x.flatten(1)
    extra = [row for row in flat_large if not bool((flat_small == row).all(1).any())]
    assert len(extra) >= 190 and all(bool((flat_train == row).all(1).any()) for row in extra[:20])


@pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True])
def test_a_bad_val_size_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="val_size must be a positive number") as info:
        load_data("digits", val_size=bad)  # type: ignore[arg-type]
    assert info.value.field == "val_size"


def test_a_val_size_that_leaves_nothing_to_train_on_is_refused() -> None:
    with pytest.raises(ConfigError, match="leaves nothing to train on: digits has 1,438"):
        load_data("digits", val_size=1438)


def test_data_from_a_function_keeps_its_own_splits() -> None:
    with pytest.raises(ConfigError, match="gives its own splits"):
        load_data("mypkg.data:make", val_size=10)


def test_later_runs_reuse_the_recorded_size_and_warn_when_a_larger_one_overlaps_training(caplog) -> None:
    recorded = {"data": "digits", "split": {"seed": 0, "val": 250}}
    args = argparse.Namespace(data="digits", normalize=None, val_size=None)
    assert _splits(args, recorded).sizes()["val"] == 250
    with caplog.at_level(logging.WARNING, logger="nncompress.cli"):
        args.val_size = 200
        assert _splits(args, recorded).sizes()["val"] == 200  # a subset of the model's validation images
        assert not caplog.records
        args.val_size = 300
        assert _splits(args, recorded).sizes()["val"] == 300
    assert "50 of them are images it trained on" in caplog.text
    args.val_size = None  # a size recorded for other data does not apply
    assert _splits(args, {"data": "fashion-mnist", "split": {"seed": 0, "val": 250}}).sizes()["val"] == 143
    assert recorded_val_size({"val": "250"}) is None and recorded_val_size(None) is None


def test_recipes_take_val_size() -> None:
    recipe = parse_recipe({"data": "digits", "val_size": 300})
    assert recipe.val_size == 300 and recipe_to_dict(recipe)["val_size"] == 300
    assert parse_recipe({"data": "digits"}).val_size is None
    with pytest.raises(RecipeError, match="val_size: expected a positive number") as info:
        parse_recipe({"val_size": 0})
    assert info.value.field == "val_size"
