"""Weight sharing: 1-D k-means, codebooks on pruned layers, centroid fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError, ModelError
from nncompress.quantization import (
    CentroidTuner,
    SharedLayer,
    kmeans_1d,
    share_weights_,
    unshared_parameters,
)


def _assert_lloyd_fixed_point(values: np.ndarray, codebook: np.ndarray, labels: np.ndarray) -> None:
    """A valid clustering: sorted, no unused entry, each value at its nearest centroid, centroids are means."""
    assert codebook.dtype == np.float32 and labels.dtype == np.int64
    assert labels.shape == values.shape
    assert np.all(np.diff(codebook) > 0)
    counts = np.bincount(labels, minlength=codebook.size)
    assert counts.size == codebook.size and np.all(counts > 0)
    dist = np.abs(values[:, None].astype(np.float64) - codebook[None, :])
    assert np.allclose(dist[np.arange(values.size), labels], dist.min(axis=1), atol=1e-6)
    means = np.bincount(labels, weights=values.astype(np.float64)) / counts
    assert np.allclose(codebook, means, rtol=1e-5, atol=1e-6)


def _three_clusters(n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centres = np.array([-1.0, 0.1, 2.0])
    truth = rng.permutation(np.repeat(np.arange(3), n))
    values = (centres[truth] + rng.normal(0, 0.02, truth.size)).astype(np.float32)
    return values, truth, centres


# ---------------------------------------------------------------- kmeans_1d


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_recovers_hand_made_clusters(init: str) -> None:
    values, truth, centres = _three_clusters()
    codebook, labels = kmeans_1d(values, 3, init)
    assert codebook.shape == (3,)
    assert np.allclose(codebook, centres, atol=0.01)
    assert np.array_equal(labels, truth)
    _assert_lloyd_fixed_point(values, codebook, labels)


def test_inits_start_apart_and_all_converge() -> None:
    rng = np.random.default_rng(2)
    # Skewed: most mass near zero, a long positive tail; the three inits disagree on it.
    values = np.concatenate([rng.normal(0, 0.05, 2000), rng.exponential(1.0, 200)]).astype(np.float32)
    starts = {init: kmeans_1d(values, 8, init, max_iter=0)[0] for init in ("linear", "density", "random")}
    assert not np.allclose(starts["linear"], starts["density"])
    assert not np.allclose(starts["linear"], starts["random"])
    assert not np.allclose(starts["density"], starts["random"])
    for init in starts:
        codebook, labels = kmeans_1d(values, 8, init)
        assert codebook.size == 8 and np.array_equal(np.unique(labels), np.arange(8))  # no cluster left empty
        _assert_lloyd_fixed_point(values, codebook, labels)


def test_empty_clusters_are_dropped_and_labels_remapped() -> None:
    values = np.array([0.0, 0.1, 0.2, 10.0, 10.1, 10.2], dtype=np.float32)
    # Linear init spreads 5 centroids over [0, 10.2]: the middle three catch nothing.
    codebook, labels = kmeans_1d(values, 5, "linear")
    assert np.allclose(codebook, [0.1, 10.1])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("k", [3, 8, 1000])
def test_few_distinct_values_are_the_codebook_exactly(k: int) -> None:
    rng = np.random.default_rng(3)
    values = rng.choice(np.array([-0.5, 0.25, 3.0], dtype=np.float32), size=50)
    codebook, labels = kmeans_1d(values, k)
    assert np.array_equal(codebook, np.array([-0.5, 0.25, 3.0], dtype=np.float32))
    assert np.array_equal(codebook[labels], values)


def test_single_value_and_k_one() -> None:
    codebook, labels = kmeans_1d(np.full(7, 0.3, dtype=np.float32), 1)
    assert np.array_equal(codebook, np.array([0.3], dtype=np.float32))
    assert np.array_equal(labels, np.zeros(7, dtype=np.int64))
    values, _, _ = _three_clusters(20)
    codebook, labels = kmeans_1d(values, 1)
    assert np.allclose(codebook, values.mean(dtype=np.float64), atol=1e-6)
    assert np.all(labels == 0)


def test_deterministic_for_seed() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=3000).astype(np.float32)
    a = kmeans_1d(values, 16, "random", seed=7)
    b = kmeans_1d(values, 16, "random", seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    start7 = kmeans_1d(values, 16, "random", seed=7, max_iter=0)[0]
    start8 = kmeans_1d(values, 16, "random", seed=8, max_iter=0)[0]
    assert not np.array_equal(start7, start8)
    for init in ("linear", "density"):
        assert np.array_equal(kmeans_1d(values, 16, init)[0], kmeans_1d(values, 16, init, seed=99)[0])


def test_empty_and_multidimensional_input() -> None:
    codebook, labels = kmeans_1d(np.empty(0, dtype=np.float32), 4)
    assert codebook.shape == (0,) and codebook.dtype == np.float32
    assert labels.shape == (0,) and labels.dtype == np.int64
    values, truth, _ = _three_clusters(10)
    codebook, labels = kmeans_1d(values.reshape(5, 6), 3)
    assert np.array_equal(labels, truth)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(ConfigError, match="k"):
        kmeans_1d(np.ones(3, dtype=np.float32), k)  # type: ignore[arg-type]


def test_bad_init_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="linear, density, random"):
        kmeans_1d(np.ones(3, dtype=np.float32), 2, "kmeans++")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(bad: float) -> None:
    with pytest.raises(ModelError):
        kmeans_1d(np.array([0.0, bad, 1.0], dtype=np.float32), 2)


# ---------------------------------------------------------------- share_weights_


def _pruned_linear(in_f: int, out_f: int, density: float, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        w = layer.weight
        threshold = w.abs().flatten().quantile(1 - density)
        w.mul_(w.abs() >= threshold)
    return layer


def _assert_invariants(layer: SharedLayer, bits: int) -> None:
    w = layer.module.weight.detach()
    assert torch.equal(w[~layer.mask], torch.zeros_like(w[~layer.mask]))
    assert torch.equal(w[layer.mask], layer.codebook[layer.indices])
    assert torch.equal(w, layer.weights())
    assert torch.unique(w[w != 0]).numel() <= 2**bits


def test_share_weights_on_pruned_linear() -> None:
    layer = _pruned_linear(64, 32, density=0.2, seed=0)
    before = layer.weight.detach().clone()
    param = layer.weight
    shared = share_weights_({"fc": layer}, {"fc": 5})
    s = shared["fc"]
    assert layer.weight is param  # rewritten in place: optimizers keep their handle
    assert torch.equal(s.mask, before != 0)
    assert s.indices.dtype == torch.int64 and s.indices.numel() == int(s.mask.sum())
    assert s.codebook.dtype == torch.float32 and 1 <= s.codebook.numel() <= 32
    assert torch.bincount(s.indices, minlength=s.codebook.numel()).min() > 0  # no unused entry
    _assert_invariants(s, 5)
    kept = before[s.mask]
    err = (layer.weight.detach()[s.mask] - kept).pow(2).mean().sqrt()
    assert err < 0.05 * kept.std()


def test_share_weights_few_nonzeros_and_empty_layer() -> None:
    few = nn.Linear(4, 4, bias=False)
    empty = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        few.weight.zero_()
        few.weight[0, :3] = torch.tensor([0.5, -0.25, 0.125])
        empty.weight.zero_()
    before = few.weight.detach().clone()
    shared = share_weights_({"few": few, "empty": empty}, {"few": 8, "empty": 2})
    assert torch.equal(few.weight, before)  # three values, 256 centroids allowed: exact
    assert shared["few"].codebook.tolist() == [-0.25, 0.125, 0.5]
    assert shared["empty"].codebook.numel() == 0 and shared["empty"].indices.numel() == 0
    assert torch.equal(empty.weight, torch.zeros(2, 3))
    _assert_invariants(shared["few"], 8)


@pytest.mark.parametrize(
    "bits",
    [{"fc": 0}, {"fc": 17}, {"fc": True}, {"fc": 2.0}, {}, {"fc": 4, "other": 4}],
)
def test_share_weights_bad_bits_touch_nothing(bits: dict) -> None:
    layer = _pruned_linear(8, 4, density=0.5, seed=1)
    before = layer.weight.detach().clone()
    with pytest.raises(ConfigError):
        share_weights_({"fc": layer}, bits)
    assert torch.equal(layer.weight, before)


def test_share_weights_bad_init_and_nan() -> None:
    a, b = _pruned_linear(8, 4, 0.5, seed=2), _pruned_linear(8, 4, 0.5, seed=3)
    before = a.weight.detach().clone()
    with pytest.raises(ConfigError, match="linear"):
        share_weights_({"a": a}, {"a": 3}, init="uniform")
    with torch.no_grad():
        b.weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match="'b'"):
        share_weights_({"a": a, "b": b}, {"a": 3, "b": 3})
    assert torch.equal(a.weight, before)  # checked before anything is written


def test_shared_layer_rejects_mismatched_parts() -> None:
    layer = nn.Linear(3, 2, bias=False)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ConfigError, match="indices"):
        SharedLayer(layer, mask, torch.zeros(5, dtype=torch.int64), torch.zeros(2))
    with pytest.raises(ConfigError, match="indices"):
        SharedLayer(layer, mask, torch.full((6,), 2, dtype=torch.int64), torch.zeros(2))
    with pytest.raises(ConfigError, match="mask"):
        SharedLayer(layer, mask[:1], torch.zeros(3, dtype=torch.int64), torch.zeros(2))


# ---------------------------------------------------------------- CentroidTuner


def _regression(seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 20, generator=gen)
    target = x @ torch.randn(20, 5, generator=gen) * 0.3
    return _pruned_linear(20, 5, density=0.5, seed=seed), x, target


def test_centroid_step_is_sum_of_member_gradients() -> None:
    layer, x, target = _regression()
    shared = share_weights_({"fc": layer}, {"fc": 3})
    s = shared["fc"]
    tuner = CentroidTuner(shared)
    nn.functional.mse_loss(layer(x), target).backward()
    grad = layer.weight.grad.detach().clone()
    expected = torch.stack([grad[s.mask][s.indices == j].sum() for j in range(s.codebook.numel())])
    before = s.codebook.clone()
    lr = 0.05
    tuner.step(lr)
    assert torch.allclose(s.codebook - before, -lr * expected, atol=1e-6)
    assert layer.weight.grad is None  # consumed, so the next backward does not accumulate onto it
    _assert_invariants(s, 3)


def test_centroid_tuning_lowers_loss_and_keeps_invariants() -> None:
    layer, x, target = _regression(seed=1)
    shared = share_weights_({"fc": layer}, {"fc": 3})
    s = shared["fc"]
    mask, indices = s.mask.clone(), s.indices.clone()
    model = nn.Sequential(layer)
    # Biases train with the model's own optimizer; the shared weight must not be in it.
    opt = torch.optim.SGD(list(unshared_parameters(model, shared)), lr=0.05)
    assert [p for g in opt.param_groups for p in g["params"]] == [layer.bias]
    tuner = CentroidTuner(shared, lr=0.02)

    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), target)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        tuner.step(0.02)
        _assert_invariants(s, 3)
    final = nn.functional.mse_loss(model(x), target).item()
    # 8 shared values on a fixed random mask cannot reach the random target map: the floor is ~0.74x.
    assert final < 0.8 * losses[0]
    assert final < losses[25] < losses[1]
    assert torch.equal(s.mask, mask) and torch.equal(s.indices, indices)


def test_momentum_matches_torch_sgd_and_after_step_uses_defaults() -> None:
    layer, x, target = _regression(seed=2)
    shared = share_weights_({"fc": layer}, {"fc": 2})
    s = shared["fc"]
    reference = nn.Parameter(s.codebook.clone())
    ref_opt = torch.optim.SGD([reference], lr=0.01, momentum=0.9)
    tuner = CentroidTuner(shared, lr=0.01, momentum=0.9)
    for _ in range(3):
        nn.functional.mse_loss(layer(x), target).backward()
        grad = layer.weight.grad
        reference.grad = torch.zeros_like(reference).index_add_(0, s.indices, grad[s.mask])
        ref_opt.step()
        tuner.after_step()
        assert torch.allclose(s.codebook, reference.detach(), atol=1e-6)
        _assert_invariants(s, 2)


def test_tuner_overwrites_a_stray_optimizer_update() -> None:
    layer, x, target = _regression(seed=3)
    shared = share_weights_({"fc": layer}, {"fc": 3})
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)  # wrongly owns the shared weight
    nn.functional.mse_loss(layer(x), target).backward()
    opt.step()
    CentroidTuner(shared).step()
    _assert_invariants(shared["fc"], 3)


@pytest.mark.parametrize("lr, momentum", [(0.0, 0.0), (-1.0, 0.0), (float("nan"), 0.0), (0.1, 1.0), (0.1, -0.1)])
def test_tuner_bad_hyperparameters(lr: float, momentum: float) -> None:
    layer = _pruned_linear(4, 2, 0.5, seed=4)
    shared = share_weights_({"fc": layer}, {"fc": 2})
    with pytest.raises(ConfigError):
        CentroidTuner(shared, lr=lr, momentum=momentum)
    with pytest.raises(ConfigError):
        CentroidTuner(shared).step(lr, momentum)


# ------------------------------------------------------------------ embeddings, tied weights, init "auto"


class _TiedLM(nn.Module):
    """A language-model head tied to its word embedding, as Hugging Face models do."""

    def __init__(self, vocab: int = 40, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(self.embed(ids))))


def test_embedding_shares_and_its_centroids_tune_from_row_gradients() -> None:
    torch.manual_seed(0)
    embed = nn.Embedding(30, 6)
    shared = share_weights_({"embed": embed}, {"embed": 3})
    layer = shared["embed"]
    assert layer.codebook.numel() <= 8 and layer.capacity == 8 and bool(layer.mask.all())
    assert torch.equal(embed.weight, layer.codebook[layer.indices].reshape(30, 6))
    ids = torch.tensor([[1, 2, 2, 5]])
    embed(ids).pow(2).sum().backward()
    expected = layer.codebook.clone().double()
    grad = embed.weight.grad[layer.mask].double()
    expected -= 0.1 * torch.zeros_like(expected).index_add_(0, layer.indices, grad)
    CentroidTuner(shared, lr=0.1).step()
    assert torch.allclose(layer.codebook.double(), expected, atol=1e-6)
    assert torch.equal(embed.weight, layer.codebook[layer.indices].reshape(30, 6))


def test_sparse_embedding_gradients_reach_the_centroids() -> None:
    torch.manual_seed(0)
    dense, sparse = nn.Embedding(30, 6), nn.Embedding(30, 6, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    books = []
    for embed in (dense, sparse):
        shared = share_weights_({"e": embed}, {"e": 3})
        embed(torch.tensor([[3, 4, 4]])).sum().backward()
        CentroidTuner(shared, lr=0.1).step()
        books.append(shared["e"].codebook)
    assert torch.allclose(books[0], books[1], atol=1e-6)


def test_a_tied_linear_and_embedding_weight_is_shared_once() -> None:
    torch.manual_seed(0)
    model = _TiedLM()
    layers = {"embed": model.embed, "hidden": model.hidden, "head": model.head}
    shared = share_weights_(layers, {"embed": 4, "hidden": 2, "head": 4})
    assert list(shared) == ["embed", "hidden"]
    assert model.head.weight is model.embed.weight  # still one tensor
    assert len(list(unshared_parameters(model, shared))) == 1  # hidden.bias only
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    before = shared["embed"].codebook.clone()
    CentroidTuner(shared, lr=0.05).step()
    assert not torch.equal(before, shared["embed"].codebook)  # both uses' gradients moved it
    layer = shared["embed"]
    assert torch.equal(model.head.weight, layer.codebook[layer.indices].reshape(40, 8))


def _heavy_tailed(n: int, seed: int = 0, scale: float = 50.0) -> np.ndarray:
    """Gaussian weights with 0.1 % far outliers, like a word-embedding table."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(n).astype(np.float32)
    return np.where(rng.random(n) < 1e-3, scale * g, g).astype(np.float32)


def test_auto_init_takes_density_on_heavy_tails_and_linear_on_bell_shaped_weights() -> None:
    from nncompress.quantization.kmeans import choose_init, squared_error

    heavy = _heavy_tailed(50_000)
    torch.manual_seed(0)
    cubed = (torch.randn(20_000) ** 3).numpy()
    rng = np.random.default_rng(1)
    bell = rng.standard_normal(20_000).astype(np.float32)
    pruned = bell[np.abs(bell) >= 0.8]  # a pruned layer: a gap around zero
    assert choose_init(heavy, 32) == "density"
    assert choose_init(bell, 32) == choose_init(pruned, 32) == choose_init(cubed, 32) == "linear"
    for values in (heavy, bell, pruned):
        auto = squared_error(values, *kmeans_1d(values, 32, "auto"))
        chosen = squared_error(values, *kmeans_1d(values, 32, choose_init(values, 32)))
        assert auto == chosen
    auto, linear = kmeans_1d(heavy, 32, "auto"), kmeans_1d(heavy, 32, "linear")
    assert np.array_equal(auto[0], kmeans_1d(heavy, 32, "density")[0])
    assert squared_error(heavy, *auto) * 4 < squared_error(heavy, *linear)


def test_auto_init_when_linear_leaves_most_centroids_empty() -> None:
    from nncompress.quantization.kmeans import choose_init, squared_error

    values = _heavy_tailed(20_000)
    linear, density = kmeans_1d(values, 32, "linear"), kmeans_1d(values, 32, "density")
    assert len(linear[0]) < 16  # more than half of the codebook empty
    assert squared_error(values, *linear) < 4 * squared_error(values, *density)  # the error rule alone would not
    assert choose_init(values, 32) == "density" and len(kmeans_1d(values, 32, "auto")[0]) == 32
    # Cauchy weights also empty most of linear's codebook, but there linear's error is far lower: it stays
    cauchy = np.random.default_rng(0).standard_t(1, 20_000).astype(np.float32)
    linear, density = kmeans_1d(cauchy, 32, "linear"), kmeans_1d(cauchy, 32, "density")
    assert len(linear[0]) < 16 and squared_error(cauchy, *linear) < squared_error(cauchy, *density)
    assert choose_init(cauchy, 32) == "linear"


def test_a_mostly_empty_codebook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    layer = nn.Linear(500, 20, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(_heavy_tailed(10_000, seed=3).reshape(20, 500)))
    with caplog.at_level("WARNING", logger="nncompress.quantization.shared"):
        shared = share_weights_({"fc": layer}, {"fc": 6}, init="linear")
    used = shared["fc"].codebook.numel()
    assert used < 48 and f"fc {used}/64" in caplog.text and caplog.text.count("k-means left") == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="nncompress.quantization.shared"):
        share_weights_({"fc": nn.Linear(500, 20, bias=False)}, {"fc": 6}, init="linear")
    assert "k-means left" not in caplog.text  # uniform weights fill a linear codebook


def test_a_few_exact_zeros_do_not_make_a_tensor_pruned() -> None:
    """A pretrained table with a handful of exact zeros is stored without positions; real pruning is kept."""
    table = nn.Embedding(400, 16)
    with torch.no_grad():
        table.weight[0, :3] = 0.0  # 3 of 6,400
    shared = share_weights_({"embed": table}, {"embed": 4}, init="density")
    assert bool(shared["embed"].mask.all()) and int((table.weight == 0).sum()) == 0  # clustered like the rest
    pruned = nn.Linear(100, 40)
    with torch.no_grad():
        pruned.weight[:, :10] = 0.0  # 10 % pruned: that is pruning
    shared = share_weights_({"fc": pruned}, {"fc": 4}, init="linear")
    assert int(shared["fc"].mask.sum()) == 3600 and int((pruned.weight == 0).sum()) == 400


@pytest.mark.parametrize("init", ["linear", "density", "auto"])
def test_kmeans_in_chunks_is_kmeans_in_one_pass(monkeypatch: pytest.MonkeyPatch, init: str) -> None:
    """Large layers are clustered a chunk at a time (bounded memory): the same codebook and
    labels, bit for bit, as one pass; chunks of 7 put runs of equal values across their edges."""
    from nncompress.quantization import kmeans

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.standard_t(3, 5000), np.round(rng.normal(size=3000), 2)]).astype(np.float32)
    whole = kmeans.kmeans_1d(values, 32, init)
    few = kmeans.kmeans_1d(values[:40].round(0), 32, init)  # fewer distinct values than k
    monkeypatch.setattr(kmeans, "CHUNK", 7)
    chunked = kmeans.kmeans_1d(values, 32, init)
    assert np.array_equal(whole[0], chunked[0]) and np.array_equal(whole[1], chunked[1])
    few_chunked = kmeans.kmeans_1d(values[:40].round(0), 32, init)
    assert np.array_equal(few[0], few_chunked[0]) and np.array_equal(few[1], few_chunked[1])
    assert kmeans.squared_error(values, *whole) == pytest.approx(
        float(np.sum((values.astype(np.float64) - whole[0][whole[1]].astype(np.float64)) ** 2)), rel=1e-12
    )
