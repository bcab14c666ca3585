"""Recipes: the shipped files, round trips, overrides, and one error per way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nncompress.config import PruneConfig, SensitivityConfig, ShareConfig, TrainConfig
from nncompress.errors import ConfigError, RecipeError
from nncompress.recipe import (
    RECIPE_VERSION,
    Recipe,
    apply_overrides,
    dump_recipe,
    load_recipe,
    parse_recipe,
    recipe_to_dict,
    save_recipe,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _fashion(model: str) -> Recipe:
    """The LeNet recipes pin the raw dtype their benchmarks were measured with."""
    return Recipe(
        model=model,
        data="fashion-mnist",
        seed=0,
        train=TrainConfig(),
        sensitivity=None,
        prune=PruneConfig(),
        share=ShareConfig(raw_dtype="float32"),
    )


SHIPPED = {
    "lenet300-fashion.yaml": _fashion("lenet300"),
    "lenet5-fashion.yaml": _fashion("lenet5"),
    "mlp-digits.yaml": Recipe(
        model="mlp",
        data="digits",
        seed=0,
        train=TrainConfig(epochs=40, lr=0.05, batch_size=64),
        sensitivity=SensitivityConfig(),
        prune=PruneConfig(epochs_per_step=4, final_epochs=20, lr=0.02, batch_size=64, tolerance=0.8),
        share=ShareConfig(batch_size=64),
    ),
}


def _keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k != "layers":
            out |= _keys(v, f"{prefix}{k}.")
    return out


def _load_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, name: str = "recipe.yaml") -> Recipe:
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    return load_recipe(name)


def _error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, name: str = "recipe.yaml") -> str:
    with pytest.raises(RecipeError) as info:
        _load_text(tmp_path, monkeypatch, text, name)
    return str(info.value)


# ---------------------------------------------------------------- shipped recipes


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_recipe_loads_to_its_intended_configs(name: str) -> None:
    assert load_recipe(RECIPES / name) == SHIPPED[name]


@pytest.mark.parametrize("name", ["lenet300-fashion.yaml", "lenet5-fashion.yaml"])
def test_benchmark_recipes_write_out_every_key(name: str) -> None:
    """A reader sees the whole run: a new config field must be added to these files too."""
    written = yaml.safe_load((RECIPES / name).read_text())
    assert _keys(written) == _keys(recipe_to_dict(Recipe(sensitivity=SensitivityConfig())))


def test_seed_reaches_every_section_that_has_one() -> None:
    r = parse_recipe({"seed": 7})
    assert r.train.seed == r.prune.seed == r.share.seed == 7
    assert Recipe(seed=7) == r  # constructing one directly applies the seed too


# ---------------------------------------------------------------- round trip


ROUND_TRIP = [
    Recipe(),
    *SHIPPED.values(),
    parse_recipe(
        {
            "model": "lenet5",
            "data": "/data/my folder/é",
            "seed": 2**62,
            "train": {"lr": 1e-10, "warmup": 0},
            "sensitivity": {"enabled": False},
            "prune": {"groups": "layer", "layers": {"conv1": {"q_scale": 0.5}, "features.0": {"q_scale": 3}}},
            "share": {"init": "density", "layers": {"fc1": {"bits": 4}}},
            "coding": {"rel_bits": 5, "raw_dtype": "float16"},
        }
    ),
    parse_recipe({"prune": {"enabled": False}, "data": "yes", "model": None}),
]


@pytest.mark.parametrize("recipe", ROUND_TRIP)
def test_dump_round_trips(recipe: Recipe) -> None:
    assert parse_recipe(yaml.safe_load(dump_recipe(recipe))) == recipe
    assert parse_recipe(recipe_to_dict(recipe)) == recipe


def test_dump_order_and_explicit_keys() -> None:
    text = dump_recipe(SHIPPED["mlp-digits.yaml"])
    tops = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(" ")]
    assert tops == ["version", "model", "data", "seed", "train", "sensitivity", "prune", "share", "coding"]
    assert yaml.safe_load(text)["version"] == RECIPE_VERSION
    assert _keys(yaml.safe_load(text)) == _keys(recipe_to_dict(Recipe(sensitivity=SensitivityConfig())))


def test_save_recipe_writes_atomically_and_loads_back(tmp_path: Path) -> None:
    recipe = ROUND_TRIP[-2]
    out = tmp_path / "runs" / "resolved.yaml"
    save_recipe(recipe, out)
    assert load_recipe(out) == recipe
    assert sorted(p.name for p in out.parent.iterdir()) == ["resolved.yaml"]


# ---------------------------------------------------------------- sections


def test_missing_sections_and_keys_take_the_defaults() -> None:
    assert parse_recipe({}) == parse_recipe({"version": 1, "train": None, "prune": {}}) == Recipe()


def test_enabled_false_gives_none_but_is_still_validated() -> None:
    r = parse_recipe({"sensitivity": {"enabled": False}, "prune": {"enabled": False, "tolerance": 0.5}})
    assert r.sensitivity is None and r.prune is None
    with pytest.raises(RecipeError, match=r"^<recipe>: prune\.tolerence: unknown key"):
        parse_recipe({"prune": {"enabled": False, "tolerence": 0.5}})


def test_layers_map_to_layer_scale_and_layer_bits() -> None:
    r = parse_recipe(
        {
            "prune": {"layers": {"conv1": {"q_scale": 0.5}, "fc3": {"q_scale": 2}}},
            "share": {"layers": {"fc1": {"bits": 4}}},
        }
    )
    assert r.prune.layer_scale == {"conv1": 0.5, "fc3": 2.0}
    assert r.share.layer_bits == {"fc1": 4}


def test_an_int_is_a_float_but_not_the_other_way() -> None:
    r = parse_recipe({"train": {"lr": 1, "warmup": 0}})
    assert r.train.lr == 1.0 and isinstance(r.train.lr, float) and isinstance(r.train.warmup, float)


def test_yaml_reads_exponent_floats_without_a_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _load_text(tmp_path, monkeypatch, "share:\n  centroid_lr: 1e-4\n  lr: 2E3\n")
    assert r.share.centroid_lr == 1e-4 and r.share.lr == 2000.0


def test_toml_is_equivalent_to_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = """
version = 1
model = "lenet5"
data = "fashion-mnist"
seed = 3

[train]
epochs = 40
lr = 0.05

[sensitivity]
enabled = false

[prune]
tolerance = 0.8
groups = "fc,conv"

[prune.layers.conv1]
q_scale = 0.5

[share.layers]
fc1 = { bits = 4 }

[coding]
rel_bits = 5
"""
    yml = """
version: 1
model: lenet5
data: fashion-mnist
seed: 3
train: {epochs: 40, lr: 0.05}
sensitivity: {enabled: false}
prune:
  tolerance: 0.8
  groups: fc,conv
  layers: {conv1: {q_scale: 0.5}}
share:
  layers: {fc1: {bits: 4}}
coding: {rel_bits: 5}
"""
    from_toml = _load_text(tmp_path, monkeypatch, toml, "recipe.toml")
    assert from_toml == _load_text(tmp_path, monkeypatch, yml, "recipe.yaml")
    assert from_toml.prune.layer_scale == {"conv1": 0.5} and from_toml.share.rel_bits == 5


# ---------------------------------------------------------------- errors, each naming the key path


ERRORS = [
    # unknown keys
    ("prune:\n  tolerence: 1\n", "recipe.yaml: prune.tolerence: unknown key (did you mean tolerance?)"),
    ("train:\n  zzz: 1\n", "recipe.yaml: train.zzz: unknown key; expected one of epochs, lr,"),
    ("pruning:\n  tolerance: 1\n", "recipe.yaml: pruning: unknown key (did you mean prune?)"),
    ("extras: {}\n", "recipe.yaml: extras: unknown key; expected one of version, model,"),
    ("tolerance: 1\n", "recipe.yaml: tolerance: unknown key (it belongs in prune.tolerance or share.tolerance)"),
    ("train:\n  seed: 1\n", "recipe.yaml: train.seed: unknown key (the seed is set once, at the top level"),
    ("share:\n  rel_bits: 5\n", "recipe.yaml: share.rel_bits: unknown key (it belongs in coding.rel_bits)"),
    (
        "prune:\n  layer_scale: {}\n",
        "recipe.yaml: prune.layer_scale: unknown key (write per-layer values as prune.layers.<layer>.q_scale)",
    ),
    (
        "prune:\n  layers:\n    conv1: {scale: 1}\n",
        "recipe.yaml: prune.layers.conv1.scale: unknown key (did you mean q_scale?)",
    ),
    ("sensitivity:\n  enabeld: false\n", "recipe.yaml: sensitivity.enabeld: unknown key (did you mean enabled?)"),
    (
        "share:\n  enabled: false\n",
        "recipe.yaml: share.enabled: unknown key (it belongs in sensitivity.enabled or prune.enabled)",
    ),
    ("1: 2\n", "recipe.yaml: 1: keys must be strings"),
    # wrong types
    ("share:\n  fc_bits: five\n", "recipe.yaml: share.fc_bits: expected an integer, got 'five'"),
    ("train:\n  epochs: 5.0\n", "recipe.yaml: train.epochs: expected an integer, got 5.0"),
    ("train:\n  epochs: true\n", "recipe.yaml: train.epochs: expected an integer, got True"),
    ("train:\n  lr: true\n", "recipe.yaml: train.lr: expected a number, got True"),
    ("train:\n  lr: '0.1'\n", "recipe.yaml: train.lr: expected a number, got '0.1'"),
    ("prune:\n  control: 1\n", "recipe.yaml: prune.control: expected true or false, got 1"),
    ("prune:\n  enabled: 'no'\n", "recipe.yaml: prune.enabled: expected true or false, got 'no'"),
    ("prune:\n  groups: 3\n", "recipe.yaml: prune.groups: expected a string, got 3"),
    ("seed: 1.5\n", "recipe.yaml: seed: expected an integer, got 1.5"),
    ("train: [1, 2]\n", "recipe.yaml: train: expected a mapping of keys, got [1, 2]"),
    ("prune:\n  layers: 0.5\n", "recipe.yaml: prune.layers: expected a mapping of keys, got 0.5"),
    ("share:\n  layers: {fc1: {bits: 4.0}}\n", "recipe.yaml: share.layers.fc1.bits: expected an integer, got 4.0"),
    ("data: 2024-13-45\n", "recipe.yaml: invalid YAML:"),
    ("data: 5\n", "recipe.yaml: data: expected fashion-mnist, digits, a folder path or package.module:function, got 5"),
    (
        "model: lenet6\n",
        "recipe.yaml: model: expected one of lenet300, lenet5, mlp, vgg11, vgg16 or a factory "
        "package.module:name, got 'lenet6' (did you mean lenet5?)",
    ),
    # out of range (the dataclass's check, re-raised with the key path)
    (
        "prune:\n  tolerance: -1\n",
        "recipe.yaml: prune.tolerance: expected a number of percentage points in [0, 100], got -1",
    ),
    ("prune:\n  q0: 3\n", "recipe.yaml: prune.q_max: expected a number >= q0 (3), got 2.5"),
    ("sensitivity:\n  max_drop: -0.5\n", "recipe.yaml: sensitivity.max_drop: expected a number >= 0, got -0.5"),
    ("train:\n  lr: .nan\n", "recipe.yaml: train.lr: expected a finite number > 0, got nan"),
    (
        "prune:\n  layers: {conv1: {q_scale: 0}}\n",
        "recipe.yaml: prune.layers.conv1.q_scale: expected a number > 0, got 0",
    ),
    (
        "share:\n  layers: {fc1: {bits: 16}}\n",
        "recipe.yaml: share.layers.fc1.bits: expected an integer in 1..15, got 16",
    ),
    (
        "share:\n  init: kmeans++\n",
        "recipe.yaml: share.init: expected one of ('auto', 'linear', 'density', 'random'), got 'kmeans++'",
    ),
    ("coding:\n  rel_bits: 0\n", "recipe.yaml: coding.rel_bits: expected 'auto' or an integer in 1..16, got 0"),
    (
        "coding:\n  raw_dtype: int8\n",
        "recipe.yaml: coding.raw_dtype: expected 'auto', 'float32' or 'float16', got 'int8'",
    ),
    (
        "coding:\n  rel_bits: 5\n  fc_bits: 5\n",
        "recipe.yaml: coding.fc_bits: unknown key (it belongs in share.fc_bits)",
    ),
    ("seed: -1\n", "recipe.yaml: seed: expected an integer in 0..2**63-1, got -1"),
    # the file itself
    ("version: 2\n", "recipe.yaml: version: recipe version 2 is newer than this nncompress reads (up to 1)"),
    ("version: 0\n", "recipe.yaml: version: expected an integer >= 1, got 0"),
    (
        "- train\n- prune\n",
        "recipe.yaml: expected a mapping of sections (version, model, model_kwargs, data, "
        "normalize, val_size, objective, seed, train, sensitivity, prune, share, coding) at the top level, "
        "got a list",
    ),
    ("lenet5\n", "recipe.yaml: expected a mapping of sections"),
    ("", "recipe.yaml: the recipe is empty"),
    ("train:\n  epochs: 3\n lr: 0.1\n", "recipe.yaml: line 3, column 2: invalid YAML:"),
    ("train: {epochs: 3\n", "recipe.yaml: line 2, column 1: invalid YAML:"),
    (
        "prune:\n  tolerance: 1\n  tolerance: 2\n",
        "recipe.yaml: line 3, column 3: invalid YAML: duplicate key 'tolerance'",
    ),
]


@pytest.mark.parametrize("text,expected", ERRORS)
def test_error_names_the_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        _load_text(tmp_path, monkeypatch, text)
    msg = str(info.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg
    assert isinstance(info.value, ConfigError)
    # never a yaml/dataclass traceback chained under ours
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


@pytest.mark.parametrize(
    "make, field, key, message",
    [
        (lambda: PruneConfig(q0=-1), "q0", None, "q0 must be a number >= 0, got -1"),
        (
            lambda: ShareConfig(layer_bits={"features.0": 16}),
            "layer_bits",
            "features.0",
            "layer_bits['features.0'] must be an integer in 1..15, got 16",
        ),
        (lambda: ShareConfig(rel_bits=17), "rel_bits", None, "rel_bits must be 'auto' or an integer in 1..16, got 17"),
    ],
)
def test_config_errors_carry_their_field(make, field: str, key: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert (info.value.field, info.value.key, str(info.value)) == (field, key, message)


@pytest.mark.parametrize(
    "data, field, message",
    [
        (
            {"prune": {"layers": {"features.0": {"q_scale": -2}}}},
            "prune.layers.features.0.q_scale",
            "r: prune.layers.features.0.q_scale: expected a number > 0, got -2",
        ),
        (
            {"coding": {"rel_bits": 0}},
            "coding.rel_bits",
            "r: coding.rel_bits: expected 'auto' or an integer in 1..16, got 0",
        ),
        ({"train": {"epochs": "3"}}, "train.epochs", "r: train.epochs: expected an integer, got '3'"),
        ({"seed": -1}, "seed", "r: seed: expected an integer in 0..2**63-1, got -1"),
        ({"prune": {"tolerence": 1}}, "prune.tolerence", "r: prune.tolerence: unknown key (did you mean tolerance?)"),
    ],
)
def test_recipe_errors_name_the_key_path_as_their_field(data: dict, field: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, "r")
    assert (info.value.field, str(info.value)) == (field, message)


def test_malformed_toml_says_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    msg = _error(tmp_path, monkeypatch, "version = 1\n[prune]\ntolerance = = 2\n", "recipe.toml")
    assert msg.startswith("recipe.toml: invalid TOML:") and "line 3" in msg


def test_toml_errors_name_the_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    msg = _error(tmp_path, monkeypatch, '[share]\nfc_bits = "five"\n', "recipe.toml")
    assert msg == "recipe.toml: share.fc_bits: expected an integer, got 'five'"


def test_missing_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"^nope\.yaml: no such recipe file$"):
        load_recipe("nope.yaml")
    Path("adir").mkdir()
    with pytest.raises(RecipeError, match=r"^adir is a folder"):
        load_recipe("adir")


def test_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_bytes(b"data: \xff\xfe\n")
    with pytest.raises(RecipeError, match=r"^recipe\.yaml: not UTF-8"):
        load_recipe("recipe.yaml")


def test_parse_recipe_names_its_source() -> None:
    with pytest.raises(RecipeError, match=r"^<recipe>: prune\.tolerance: "):
        parse_recipe({"prune": {"tolerance": 200}})
    with pytest.raises(RecipeError, match=r"^cfg: expected a mapping of sections"):
        parse_recipe(None, "cfg")


# ---------------------------------------------------------------- overrides


def test_overrides_win_over_file_values() -> None:
    base = SHIPPED["mlp-digits.yaml"]
    r = apply_overrides(
        base,
        {
            "prune.tolerance": 0.5,
            "share.fc_bits": 4,
            "seed": 3,
            "model": "lenet300",
            "data": "fashion-mnist",
            "train.epochs": 1,
            "coding.rel_bits": 6,
            "prune.layers.conv1.q_scale": 0.5,
            "share.layers.fc1.bits": 3,
            "sensitivity.enabled": False,
        },
    )
    assert r.prune.tolerance == 0.5 and r.prune.lr == 0.02  # the rest of the file stays
    assert r.share.fc_bits == 4 and r.share.batch_size == 64 and r.share.rel_bits == 6
    assert r.seed == r.train.seed == r.prune.seed == r.share.seed == 3
    assert (r.model, r.data, r.train.epochs) == ("lenet300", "fashion-mnist", 1)
    assert r.prune.layer_scale == {"conv1": 0.5} and r.share.layer_bits == {"fc1": 3}
    assert r.sensitivity is None
    assert base == SHIPPED["mlp-digits.yaml"] and base.prune.tolerance == 0.8  # the input is untouched
    assert apply_overrides(base, {}) == base


def test_override_switches_a_stage_on_and_off() -> None:
    off = apply_overrides(Recipe(), {"prune.enabled": False})
    assert off.prune is None
    assert apply_overrides(off, {"prune.enabled": True}).prune == PruneConfig()


def test_override_layer_names_may_hold_dots_and_mappings_merge() -> None:
    r = apply_overrides(Recipe(), {"prune.layers.features.0.q_scale": 2.0})
    assert r.prune.layer_scale == {"features.0": 2.0}
    r = apply_overrides(r, {"prune.layers": {"fc1": {"q_scale": 0.5}}, "train": {"epochs": 3}})
    assert r.prune.layer_scale == {"features.0": 2.0, "fc1": 0.5}
    assert r.train.epochs == 3 and r.train.lr == TrainConfig().lr


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"prune.tolerance": -1}, "override: prune.tolerance: expected a number of percentage points"),
        ({"prune.tolerence": 1}, "override: prune.tolerence: unknown key (did you mean tolerance?)"),
        ({"share.fc_bits": "five"}, "override: share.fc_bits: expected an integer, got 'five'"),
        ({"share.fc_bits": 5.0}, "override: share.fc_bits: expected an integer, got 5.0"),
        ({"prune.enabled": "yes"}, "override: prune.enabled: expected true or false, got 'yes'"),
        ({"seed": True}, "override: seed: expected an integer, got True"),
        ({"seed.x": 1}, "override: seed.x: unknown key (seed is a value, not a section)"),
        (
            {"model": "vgg"},
            "override: model: expected one of lenet300, lenet5, mlp, vgg11, vgg16 or a factory "
            "package.module:name, got 'vgg' (did you mean vgg16?)",
        ),
        ({"prune.layers.conv1.q_scale": 0}, "override: prune.layers.conv1.q_scale: expected a number > 0, got 0"),
        ({"train.seed": 1}, "override: train.seed: unknown key"),
        ({"": 1}, "override: '': expected a dotted key"),
    ],
)
def test_overrides_are_validated_like_file_values(overrides: dict, expected: str) -> None:
    with pytest.raises(RecipeError) as info:
        apply_overrides(Recipe(), overrides)
    assert str(info.value).startswith(expected), str(info.value)


def test_sensitivity_scan_runs_only_when_its_section_is_there() -> None:
    assert parse_recipe({}).sensitivity is None
    assert parse_recipe({"sensitivity": {}}).sensitivity == SensitivityConfig()
    assert parse_recipe({"sensitivity": {"q_max": 1.0}}).sensitivity == SensitivityConfig(q_max=1.0)


# ---------------------------------------------------------------- hostile recipe files


def test_a_billion_laughs_recipe_is_refused_at_once(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):  # each level nine aliases of the one before: 9**10 values in all
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        RecipeError,
        match=r"bomb\.yaml: line \d+, column \d+: invalid YAML: the recipe's "
        r"aliases expand to more than",
    ):
        load_recipe(tmp_path / "bomb.yaml")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").write_text("model_kwargs: &k {inner: *k}\n")
    with pytest.raises(RecipeError, match="refers to a node that contains it"):
        load_recipe(tmp_path / "loop.yaml")


def test_a_few_aliases_still_work(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("seed: &s 3\ntrain: {epochs: 2, batch_size: 16}\nprune: &p {q0: 0.5}\n")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.seed == 3 and recipe.prune.q0 == 0.5


@pytest.mark.parametrize(
    "name,text",
    [
        ("deep.yaml", "model: " + "[" * 20000 + "]" * 20000 + "\n"),
        ("deep.toml", "model = " + "[" * 20000 + "]" * 20000 + "\n"),
    ],
)
def test_deep_nesting_is_refused(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(RecipeError, match=f"{name}: invalid (YAML|TOML)"):
        load_recipe(tmp_path / name)


def test_a_huge_recipe_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nncompress.recipe.load as recipe_mod  # load_recipe reads the limit from its own module

    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200 + "seed: 1\n")
    monkeypatch.setattr(recipe_mod, "MAX_RECIPE_BYTES", 1000)
    with pytest.raises(RecipeError, match=r"big\.yaml is 2,008 bytes, more than the 1,000 bytes allowed"):
        load_recipe(path)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_device_recipe_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(RecipeError, match="is a FIFO"):
        load_recipe(tmp_path / "pipe.yaml")
    if Path("/dev/zero").exists():
        with pytest.raises(RecipeError, match="is a character device"):
            load_recipe("/dev/zero")
