"""The inference runtime: CSR and int8 kernels equal the decoded dense model, and the chooser."""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from torch import nn

import nncompress as nnc
from nncompress.errors import ConfigError, ModelError
from nncompress.models import LeNet5, LeNet300
from nncompress.modelfile import save_compressed
from nncompress.runtime import Routed, SparseConv, SparseLinear, convert_, held_bytes
from nncompress.runtime import blocked
from nncompress.runtime.csr import block_width

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def pruned(model: nn.Module, kept: float, seed: int = 0) -> nn.Module:
    """Each Linear/Conv keeps a random ``kept`` fraction of its weights."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            with torch.no_grad():
                module.weight.mul_((torch.rand(module.weight.shape, generator=gen) < kept).float())
    return model.eval()


class GroupNet(nn.Module):
    """Grouped, depthwise, strided, dilated and padded convolutions, a Conv1d and a Linear on 3-D input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False)
        self.c = nn.Conv1d(8, 6, 5, padding=(2,), groups=2)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b(torch.relu(self.a(x))))  # (B, 8, 7, 7)
        y = self.c(y.flatten(2))  # (B, 6, 49)
        return self.head(y.transpose(1, 2))  # (B, 49, 5): a Linear on 3-D input


CASES = [(lambda: LeNet300.default(), (784,), 0.07), (lambda: LeNet5(), (1, 28, 28), 0.1), (GroupNet, (4, 14, 14), 0.3)]


def fake_timer(costs):
    """A clock that answers from ``costs(kernel, positions)`` without running anything."""

    def timer(fn, *, kernel, positions):
        return costs(kernel, positions)

    return timer


@pytest.mark.parametrize("make,shape,kept", CASES, ids=["lenet300", "lenet5", "groupnet"])
def test_sparse_runtime_equals_the_dense_model(make, shape, kept):
    dense = pruned(make(), kept)
    runtime, plan = convert_(copy.deepcopy(dense), "sparse", batch_sizes=(1, 64), input_shape=shape)
    kinds = {type(m) for m in runtime.modules()}
    assert SparseConv in kinds or SparseLinear in kinds
    want = "numba" if blocked.available() else "csr"
    assert all(c.kernel.startswith(want) for layer in plan.layers for c in layer.choices)
    for batch in (1, 5, 64):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            torch.testing.assert_close(runtime(x), dense(x), rtol=1e-5, atol=1e-5)


def test_routed_layers_switch_kernels_by_input_size_and_stay_exact():
    dense = pruned(LeNet300.default(), 0.07)
    # sparse pays only for small inputs: batch 1 -> CSR, batch 64 -> dense (the numba kernels, when there, a
    # little slower than CSR)
    costs = fake_timer(
        lambda kernel, n: 1.0 if kernel == "dense" else (0.2 if n < 8 else 3.0) * (1.0 if kernel == "csr" else 1.2)
    )
    runtime, plan = convert_(copy.deepcopy(dense), "auto", batch_sizes=(1, 64), input_shape=(784,), timer=costs)
    routed = [m for m in runtime.modules() if isinstance(m, Routed)]
    assert len(routed) == 3
    assert routed[0].kernel_for(torch.zeros(1, 784)) == "csr" and routed[0].kernel_for(torch.zeros(64, 784)) == "dense"
    for batch in (1, 2, 64):
        x = torch.randn(batch, 784)
        with torch.no_grad():
            torch.testing.assert_close(runtime(x), dense(x), rtol=1e-5, atol=1e-5)
    assert [[c.kernel for c in layer.choices] for layer in plan.layers] == [["csr", "dense"]] * 3
    first = routed[0]  # the calls above went through the kernel remembered for each input size
    assert first._by_size[784] is first.kernels["csr"] and first._by_size[64 * 784] is first.kernels["dense"]


def test_the_chooser_never_takes_a_kernel_slower_than_dense():
    dense = pruned(LeNet300.default(), 0.07)
    rng = random.Random(0)
    for _ in range(20):
        table = {}

        def cost(kernel, n, table=table):
            return table.setdefault((kernel, n), rng.uniform(0.1, 2.0))

        _, plan = convert_(
            copy.deepcopy(dense), "auto", batch_sizes=(1, 64), input_shape=(784,), timer=fake_timer(cost)
        )
        for layer in plan.layers:
            for c in layer.choices:
                assert c.times_ms[c.kernel] <= c.times_ms["dense"]
                if c.kernel != "dense":  # taken only when clearly faster, and then the fastest
                    assert c.times_ms[c.kernel] <= 0.9 * c.times_ms["dense"]
                    assert c.times_ms[c.kernel] == min(c.times_ms.values())


def test_a_sparse_kernel_within_the_noise_margin_stays_dense():
    dense = pruned(LeNet300.default(), 0.07)
    runtime, plan = convert_(
        copy.deepcopy(dense),
        "auto",
        batch_sizes=(1,),
        input_shape=(784,),
        timer=fake_timer(lambda kernel, n: 1.0 if kernel == "dense" else 0.95),
    )
    assert all(c.kernel == "dense" for layer in plan.layers for c in layer.choices)
    assert all(type(m) is nn.Linear for m in runtime.modules() if hasattr(m, "in_features"))


def test_large_inputs_get_column_blocks_that_fit_the_cache(monkeypatch):
    assert block_width(784, 1) == 784
    assert block_width(25088, 64) == 1024
    monkeypatch.setattr(blocked, "_KERNELS", {"mod": None})  # torch's CSR, as without numba
    layer = pruned(nn.Sequential(nn.Linear(4096, 16)), 0.1)
    runtime, plan = convert_(copy.deepcopy(layer), "sparse", batch_sizes=(64,), input_shape=(4096,))
    assert plan.layers[0].choices[0].kernel == "csr/1024" and runtime[0].n_blocks == 4
    x = torch.randn(64, 4096)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), layer(x), rtol=1e-4, atol=1e-4)


def test_the_runtime_holds_fewer_bytes_than_the_dense_model():
    dense = pruned(LeNet300.default(), 0.07)
    runtime, _ = convert_(copy.deepcopy(dense), "sparse", batch_sizes=(1,), input_shape=(784,))
    assert held_bytes(runtime) < 0.2 * held_bytes(dense)


def test_int8_quantizes_the_linear_layers_that_stay_dense():
    dense = pruned(LeNet5(), 0.5)
    runtime, plan = convert_(copy.deepcopy(dense), "dense", batch_sizes=(4,), input_shape=(1, 28, 28), int8=True)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert isinstance(runtime.fc1, DynamicLinear) and isinstance(runtime.fc2, DynamicLinear)
    assert type(runtime.conv1) is nn.Conv2d  # convolutions stay float32
    assert plan.layer("conv1").note.startswith("int8 covers Linear layers only")
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = dense(x), runtime(x)
    assert not torch.equal(want, got)  # 8-bit weights and activations: close, not equal
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert held_bytes(runtime) < 0.5 * held_bytes(dense)


def test_load_with_a_runtime_gives_the_decoded_models_outputs(tmp_path):
    model = pruned(LeNet5(), 0.1)
    path = tmp_path / "m.nnc"
    save_compressed(path, model, {}, meta={"input_shape": [1, 28, 28]})
    plain = nnc.load(path)
    assert not hasattr(plain, "nncompress_runtime") and type(plain.fc1) is nn.Linear  # default unchanged
    fast = nnc.load(path, runtime="sparse", batch_sizes=(1, 8))
    assert isinstance(fast.conv2, SparseConv) and isinstance(fast.fc1, SparseLinear)
    assert fast.nncompress_runtime.batch_sizes == [1, 8]
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"runtime": "fast"}, "runtime must be one of"),
        ({"runtime": "auto", "batch_sizes": (0,)}, "batch_sizes"),
        ({"runtime": "auto", "threads": 0}, "threads"),
        ({"runtime": "auto", "input_shape": "1x28"}, "input_shape"),
    ],
)
def test_bad_runtime_options_are_refused(tmp_path, kwargs, match):
    path = tmp_path / "m.nnc"
    save_compressed(path, pruned(LeNet300.default(), 0.1), {})
    with pytest.raises(ConfigError, match=match):
        nnc.load(path, **kwargs)


def test_a_wrong_input_shape_says_so():
    with pytest.raises(ModelError, match="does not accept inputs of shape"):
        convert_(pruned(LeNet5(), 0.1), "auto", input_shape=(3, 7))
