"""Inputs of any structure: slicing, joining, calling a model, picking its output; data from anywhere."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nncompress.data import load_data, splits_from_loaders
from nncompress.data.batches import concat, count, describe, model_outputs, pick_output, take, to_device
from nncompress.data.loaders import SINGLE_TEST_FRACTION, SINGLE_VAL_FRACTION
from nncompress.errors import ConfigError, DataError, ModelError


def _tokens(n: int, length: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 50, (n, length), generator=g),
        "attention_mask": torch.ones(n, length, dtype=torch.int64),
    }


def test_take_and_to_device_keep_structure_and_dtypes() -> None:
    x = _tokens(5)
    part = to_device(take(x, torch.tensor([4, 0])), "cpu")
    assert list(part) == ["input_ids", "attention_mask"] and part["input_ids"].dtype == torch.int64
    assert torch.equal(part["input_ids"][0], x["input_ids"][4])
    pair = (torch.zeros(3, 2, dtype=torch.float16), torch.arange(3))
    sliced = take(pair, slice(1, 3))
    assert isinstance(sliced, tuple) and sliced[0].dtype == torch.float16 and sliced[1].tolist() == [1, 2]
    assert count(x) == 5 and count(pair) == 3


def test_concat_joins_batches_and_refuses_ragged_ones_with_a_fix() -> None:
    joined = concat([_tokens(2), _tokens(3, seed=1)], "train loader")
    assert count(joined) == 5 and joined["input_ids"].dtype == torch.int64
    with pytest.raises(DataError, match="pad every batch to one fixed length"):
        concat([_tokens(2, length=6), _tokens(2, length=9)], "train loader")
    with pytest.raises(DataError, match="same structure"):
        concat([_tokens(2), torch.zeros(2, 6)], "train loader")


class Returns(nn.Module):
    """Returns whatever ``make`` builds from a linear map of its input."""

    def __init__(self, make) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.make = make

    def forward(self, x: torch.Tensor):
        return self.make(self.lin(x))


@pytest.mark.parametrize(
    "make, source",
    [
        (lambda y: y, "tensor"),
        (lambda y: SimpleNamespace(logits=y, last_hidden_state=y + 1), "logits"),
        (lambda y: {"last_hidden_state": y, "pooler_output": y + 1}, "last_hidden_state"),
        (lambda y: {"pooler_output": y, "other": 1}, "pooler_output"),
        (lambda y: (y, y + 1), "tensor"),
    ],
)
def test_the_judged_output_follows_the_documented_rule(make, source: str) -> None:
    model = Returns(make)
    x = torch.randn(2, 4)
    out, found = pick_output(model(x))
    assert found == source and torch.equal(out, model.lin(x))


def test_an_output_callable_wins_and_an_unknown_output_is_a_clear_error() -> None:
    model = Returns(lambda y: {"scores": y})
    x = torch.randn(2, 4)
    with pytest.raises(ModelError, match="output=lambda"):
        model_outputs(model, x)
    assert torch.equal(model_outputs(model, x, output=lambda o: o["scores"]), model.lin(x))


def test_models_get_tuples_as_positional_and_dicts_as_keyword_inputs() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a - b

    class Kw(nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            assert input_ids.dtype == torch.int64
            return (input_ids * attention_mask).float()

    assert model_outputs(Two(), (torch.ones(2), torch.zeros(2))).tolist() == [1.0, 1.0]
    assert model_outputs(Kw(), _tokens(2)).shape == (2, 6)


def test_dict_batches_keep_token_ids_and_take_the_labels_key() -> None:
    batches = [{**_tokens(4, seed=i), "labels": torch.tensor([0, 1, 0, 1])} for i in range(3)]
    splits = splits_from_loaders(batches[:2], batches[2:], None)
    assert splits.train_x["input_ids"].dtype == torch.int64 and "labels" not in splits.train_x
    assert splits.train_y.tolist() == [0, 1, 0, 1] * 2 and splits.num_classes == 2
    assert splits.test_is_val and splits.test_x is splits.val_x
    assert splits.input_shape == {"input_ids": (6,), "attention_mask": (6,)}


def test_label_free_batches_and_tuples_without_labels() -> None:
    plain = splits_from_loaders([torch.randn(3, 4)], [torch.randn(2, 4)], [torch.randn(2, 4)])
    assert plain.train_y is None and plain.num_classes is None and not plain.has_labels
    pairs = [(torch.randn(3, 4), torch.randn(3, 2))]  # two positional inputs, no labels
    with pytest.raises(DataError, match="labels=None"):
        splits_from_loaders(pairs, pairs, pairs)
    tuples = splits_from_loaders(pairs, pairs, pairs, labels=None)
    assert isinstance(tuples.train_x, tuple) and tuples.train_y is None


def test_tuple_inputs_with_labels() -> None:
    batches = [((torch.randn(4, 3), torch.randn(4, 2)), torch.tensor([0, 1, 2, 1]))]
    splits = splits_from_loaders(batches, batches, batches)
    assert isinstance(splits.train_x, tuple) and len(splits.train_x) == 2 and splits.num_classes == 3


@pytest.mark.parametrize("normalize, lo, hi", [("unit", 0.0, 1.0), ("none", 0.0, 16.0)])
def test_normalize_options_set_and_record_the_transform(normalize: str, lo: float, hi: float) -> None:
    splits = load_data("digits", normalize=normalize)
    assert float(splits.train_x.min()) == lo and float(splits.train_x.max()) == hi
    assert splits.transform["normalize"] == normalize


def test_explicit_mean_std_and_the_default_standardisation() -> None:
    default, raw = load_data("digits"), load_data("digits", normalize="none")
    t = default.transform
    assert t["normalize"] == "standardize" and abs(float(default.train_x.mean())) < 1e-5
    assert torch.allclose(default.train_x, (raw.train_x / t["divisor"] - t["mean"]) / t["std"], atol=1e-5)
    half = load_data("digits", normalize=(0.5, 0.5))
    assert torch.allclose(half.train_x, (raw.train_x / 16 - 0.5) / 0.5, atol=1e-6)
    assert load_data("digits", normalize="0.5,0.5").transform == half.transform
    assert half.transform["mean"] == 0.5 and half.transform["std"] == 0.5
    with pytest.raises(ConfigError, match="standardize, unit, none"):
        load_data("digits", normalize="imagenet")
    with pytest.raises(ConfigError, match="std > 0"):
        load_data("digits", normalize=(0.5, 0.0))


def _write_module(tmp_path, body: str):
    path = tmp_path / "userdata.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_module_function_returning_loaders(tmp_path, monkeypatch) -> None:
    _write_module(
        tmp_path,
        """
        import torch
        def loaders():
            g = torch.Generator().manual_seed(0)
            make = lambda n: [{"input_ids": torch.randint(0, 9, (n, 5), generator=g)} for _ in range(2)]
            return {"train": make(8), "val": make(3), "test": make(2)}
        def stream():
            return [torch.arange(40.0).reshape(40, 1)[i:i + 10] for i in range(0, 40, 10)]
        def nothing():
            return 3
    """,
    )
    monkeypatch.chdir(tmp_path)
    splits = load_data("userdata:loaders")
    assert splits.sizes() == {"train": 16, "val": 6, "test": 4} and splits.train_y is None
    assert splits.train_x["input_ids"].dtype == torch.int64 and splits.transform["source"] == "userdata:loaders"
    one = load_data("userdata:stream", split_seed=3)
    n_val, n_test = int(40 * SINGLE_VAL_FRACTION), int(40 * SINGLE_TEST_FRACTION)
    assert one.sizes() == {"train": 40 - n_val - n_test, "val": n_val, "test": n_test}
    assert torch.equal(one.val_x, load_data("userdata:stream", split_seed=3).val_x)  # seeded
    assert not torch.equal(one.val_x, load_data("userdata:stream", split_seed=4).val_x)
    held = torch.cat([one.train_x, one.val_x, one.test_x]).flatten().sort().values
    assert held.tolist() == list(range(40))  # a partition: nothing lost, nothing twice
    with pytest.raises(DataError, match="returned int"):
        load_data("userdata:nothing")
    with pytest.raises(ConfigError, match="transform them in that function"):
        load_data("userdata:loaders", normalize="unit")


def test_describe_names_keys_dtypes_and_shapes() -> None:
    assert describe(_tokens(2)) == "{input_ids: int64 [2, 6], attention_mask: int64 [2, 6]}"
