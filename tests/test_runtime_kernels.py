"""The numba sparse kernels equal the dense layers, the runtime falls back without numba, and the noise-robust
kernel chooser."""

from __future__ import annotations

import copy
import logging
import sys
import warnings

import pytest
import torch
from torch import nn

from nncompress.errors import ConfigError, ModelError
from nncompress.models import LeNet300
from nncompress.runtime import SparseConv, SparseLinear, blocked, convert_
from nncompress.runtime.choose import choose

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
numba = pytest.importorskip("numba")

ENGINES = ["mkl", "numba", "numba-shared"]


def masked_linear(out_f: int, in_f: int, kept: float, seed: int = 0, shared: bool = False) -> nn.Linear:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        weight = torch.randn(out_f, in_f, generator=gen)
        if shared:  # 31 distinct values, as 5-bit weight sharing leaves a layer
            weight = (weight * 5).round().clamp(-15, 15) / 5 + 0.01
        weight *= (torch.rand(out_f, in_f, generator=gen) < kept).float()
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.randn(out_f, generator=gen))
    return layer.eval()


@pytest.mark.parametrize("view", [False, True], ids=["contiguous", "views"])
def test_the_transposes_equal_numpys_for_ragged_shapes_and_views(view):
    """16 x 16 vector blocks, the scalar tails past them, and the 32 x 32 scalar tiles taken where the
    destination's rows are a multiple of 4 KB apart (a 1,024-column destination, when contiguous)."""
    np = pytest.importorskip("numpy")
    from nncompress.runtime import nbkernels

    rng = np.random.default_rng(0)
    for rows, cols in [(1, 1), (15, 17), (16, 16), (37, 53), (64, 784), (300, 64), (1024, 64), (64, 1024)]:
        pad = 3 if view else 0
        a = rng.standard_normal((rows, cols + pad), dtype=np.float32)[:, :cols]
        b = np.zeros((cols, rows + 2 * pad), np.float32)[:, :rows]
        nbkernels.transpose(a, b)
        assert np.array_equal(b, a.T), (rows, cols)
    with pytest.raises(numba.core.errors.TypingError):  # the vector blocks move float32 lanes only
        nbkernels.transpose(np.zeros((16, 16)), np.zeros((16, 16)))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "out_f,in_f,kept",
    [(37, 53, 0.3), (19, 9000, 0.05), (5, 70000, 0.01), (64, 128, 0.5)],
    ids=["odd", "two-blocks", "wide", "half"],
)
def test_sparse_linear_equals_the_dense_layer(engine, out_f, in_f, kept):
    dense = masked_linear(out_f, in_f, kept, shared=True)
    layer = SparseLinear(dense, engine=engine)
    assert layer.engine == engine
    if engine != "mkl" and in_f > blocked.BLOCK_COLS:
        assert layer.n_blocks == -(-in_f // blocked.BLOCK_COLS)
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 3, 64, 65, 130):  # 65 and 130 run as chunks of at most 64 input vectors
        x = torch.randn(batch, in_f, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), dense(x), rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 3, in_f, generator=gen)  # leading axes are kept
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-4, atol=1e-4)


def test_the_kernel_arguments_are_made_once_and_follow_replaced_buffers():
    import pickle

    dense = masked_linear(20, 30, 0.3)
    layer = SparseLinear(dense, engine="numba")
    x = torch.randn(3, 30)
    first = layer.prepared()
    assert layer.prepared() is first  # not remade per call
    with torch.no_grad():
        layer.nb_values = layer.nb_values * 2  # a replaced buffer: the kernels must read the new one
        torch.testing.assert_close(layer(x) - dense.bias, (dense(x) - dense.bias) * 2, rtol=1e-5, atol=1e-5)
        assert layer.prepared() is not first
        copy_ = pickle.loads(pickle.dumps(layer))  # views of buffers are not pickled, and are remade
        assert "_prepared" not in layer.__getstate__()
        torch.testing.assert_close(copy_(x), layer(x))
        before = layer.prepared()
        layer.share_memory()  # moves every buffer's storage: views of the old one must not be kept
        assert layer.prepared() is not before
        torch.testing.assert_close(layer(x), copy_(x))


@pytest.mark.parametrize("engine", ["numba", "numba-shared"])
def test_rows_with_every_small_count_of_nonzeros(engine):
    # row i keeps i nonzeros: the 64-wide kernel takes nonzeros two at a time, then the odd one
    dense = masked_linear(10, 300, 1.0, shared=True)
    with torch.no_grad():
        keep = torch.zeros(10, 300)
        for i in range(10):
            keep[i, torch.randperm(300, generator=torch.Generator().manual_seed(i))[:i]] = 1.0
        dense.weight *= keep
    layer = SparseLinear(dense, engine=engine)
    x = torch.randn(128, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_rows_and_a_fully_pruned_layer(engine):
    dense = masked_linear(12, 40, 0.3, shared=True)
    with torch.no_grad():
        dense.weight[3:7] = 0  # rows with no weight give the bias
    for layer_in in (dense, copy.deepcopy(dense)):
        if layer_in is not dense:
            with torch.no_grad():
                layer_in.weight.zero_()
        if engine == "numba-shared" and not layer_in.weight.any():
            continue  # no nonzero values: no codebook to build
        layer = SparseLinear(layer_in, engine=engine)
        for batch in (1, 64):
            x = torch.randn(batch, 40)
            with torch.no_grad():
                torch.testing.assert_close(layer(x), layer_in(x), rtol=1e-5, atol=1e-5)
    zero = copy.deepcopy(dense)
    with torch.no_grad():
        zero.weight.zero_()
    layer = SparseLinear(zero, engine="numba")
    with torch.no_grad():
        torch.testing.assert_close(layer(torch.randn(5, 40)), zero.bias.expand(5, 12))


@pytest.mark.parametrize("engine", ["numba", "numba-shared"])
def test_convolutions_through_im2col_on_the_numba_kernels(engine):
    gen = torch.Generator().manual_seed(0)
    convs = [
        nn.Conv2d(4, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False),
        nn.Conv1d(8, 6, 5, padding=(2,)),
    ]
    for conv in convs:
        with torch.no_grad():
            w = ((conv.weight * 8).round() / 8) * (torch.rand(conv.weight.shape, generator=gen) < 0.4)
            conv.weight.copy_(w)
        conv.eval()
        sparse = SparseConv(conv, engine=engine)
        shape = (4, 14, 14) if conv.in_channels == 4 else ((8, 9, 9) if isinstance(conv, nn.Conv2d) else (8, 31))
        for batch in (1, 3):
            x = torch.randn(batch, *shape, generator=gen)
            with torch.no_grad():
                torch.testing.assert_close(sparse(x), conv(x), rtol=1e-4, atol=1e-4)
        with torch.no_grad():  # an unbatched input
            torch.testing.assert_close(sparse(x[0]), conv(x[0]), rtol=1e-4, atol=1e-4)


def test_the_codebook_form_holds_fewer_bytes_and_only_for_shared_layers():
    shared = masked_linear(64, 512, 0.1, shared=True)
    plain, coded = SparseLinear(shared, engine="numba"), SparseLinear(shared, engine="numba-shared")
    nnz = int(torch.count_nonzero(shared.weight))
    assert plain.weight_bytes() >= 6 * nnz and coded.weight_bytes() <= 3 * nnz + 4 * 256 + 8 * 65 + 8
    assert blocked.codebook(masked_linear(64, 512, 0.1).weight.detach()) is None  # thousands of distinct values
    with pytest.raises(ConfigError, match="distinct nonzero values"):
        SparseLinear(masked_linear(64, 512, 0.1), engine="numba-shared")
    with pytest.raises(ConfigError, match="engine must be one of"):
        SparseLinear(shared, engine="cuda")
    with pytest.raises(ModelError, match="float32 inputs"):
        plain(torch.randn(2, 512, dtype=torch.float64))


def test_shared_layers_run_on_the_codebook_kernel_and_others_on_fp32_values():
    # the unshared layer keeps 3,840 distinct values
    model = nn.Sequential(masked_linear(32, 64, 0.2, shared=True), nn.ReLU(), masked_linear(600, 32, 0.2))
    _, plan = convert_(
        copy.deepcopy(model), "auto", batch_sizes=(1,), input_shape=(64,), timer=lambda fn, *, kernel, positions: 1.0
    )
    one = {"numba-shared/1t", "numba/1t"} if torch.get_num_threads() > 1 else set()  # one-thread candidates
    assert set(plan.layers[0].choices[0].times_ms) == {"dense", "csr", "numba-shared"} | (one - {"numba/1t"})
    assert set(plan.layers[1].choices[0].times_ms) == {"dense", "csr", "numba"} | (one - {"numba-shared/1t"})
    assert plan.numba


def test_with_several_threads_a_one_thread_numba_kernel_is_a_candidate_and_runs_on_one():
    layer = masked_linear(300, 4000, 0.1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runtime, plan = convert_(
            nn.Sequential(copy.deepcopy(layer)),
            "auto",
            batch_sizes=(64,),
            input_shape=(4000,),
            timer=lambda fn, *, kernel, positions: 0.1 if kernel == "numba/1t" else 1.0,
        )
        assert plan.layers[0].choices[0].kernel == "numba/1t" and runtime[0].one_thread
        calls = []
        mod = blocked.kernels()
        real = dict(mod.SPMM)

        def watched(pair: tuple) -> tuple:  # (serial, parallel) builds that note which one ran
            return tuple(
                lambda *a, fn=fn, par=par: (calls.append(par), fn(*a))
                for par, fn in zip((False, True), pair, strict=True)
            )

        mod.SPMM.update({key: watched(pair) for key, pair in real.items()})
        try:
            x = torch.randn(64, 4000)
            with torch.no_grad():
                torch.testing.assert_close(runtime(x), layer(x), rtol=1e-4, atol=1e-4)
        finally:
            mod.SPMM.update(real)
        assert calls and not any(calls)  # 25 M multiply-adds would use both threads; this kernel keeps one
    finally:
        torch.set_num_threads(before)


def test_without_numba_the_runtime_uses_torch_csr_and_says_so(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "nncompress.runtime.nbkernels", raising=False)
    monkeypatch.setattr(blocked, "_KERNELS", {})
    dense = masked_linear(30, 60, 0.1)
    with caplog.at_level(logging.INFO, logger="nncompress.runtime.blocked"):
        runtime, plan = convert_(nn.Sequential(copy.deepcopy(dense)), "sparse", batch_sizes=(1, 8), input_shape=(60,))
    assert "numba is not installed" in caplog.text and not plan.numba
    assert [c.kernel for c in plan.layers[0].choices] == ["csr", "csr"] and runtime[0].engine == "mkl"
    x = torch.randn(8, 60)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), dense(x), rtol=1e-5, atol=1e-5)


def test_an_unwritable_cache_compiles_without_it(monkeypatch, caplog):
    from nncompress.runtime import nbkernels

    real = nbkernels.njit

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(**options)

    monkeypatch.setattr(nbkernels, "njit", njit)

    def add_one(a):  # type: ignore[no-untyped-def]
        for i in range(a.shape[0]):
            a[i] += 1.0

    with caplog.at_level(logging.INFO, logger="nncompress.runtime.nbkernels"):
        fn = nbkernels._jit(add_one, False)
    assert "cannot cache add_one" in caplog.text and "NUMBA_CACHE_DIR" in caplog.text
    a = torch.zeros(3).numpy()
    fn(a)
    assert a.tolist() == [1.0, 1.0, 1.0]


def test_without_a_writable_cache_every_kernel_still_compiles(monkeypatch, caplog):
    """Every jitted function of the module, helpers included, falls back to compiling without the cache."""
    import importlib

    from nncompress.runtime import nbkernels

    real = numba.njit

    def njit(*args, **options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **options)

    monkeypatch.setattr(numba, "njit", njit)
    try:
        with caplog.at_level(logging.INFO, logger="nncompress.runtime.nbkernels"):
            importlib.reload(nbkernels)
        assert "cannot cache transpose" in caplog.text and "cannot cache spmm" in caplog.text
        dense = masked_linear(20, 30, 0.3)
        layer = SparseLinear(dense, engine="numba")
        x = torch.randn(3, 30)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)
    finally:
        monkeypatch.undo()
        importlib.reload(nbkernels)


def test_numba_runs_on_its_sleeping_workqueue_threads_unless_told_otherwise():
    import os

    blocked.warm_up()
    layer = SparseLinear(masked_linear(300, 4000, 0.1), engine="numba")  # 120k nonzeros x 16: a parallel call
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.no_grad():
            layer(torch.randn(16, 4000))
    finally:
        torch.set_num_threads(before)
    if "NUMBA_THREADING_LAYER" not in os.environ:
        assert numba.threading_layer() == "workqueue"


def test_numba_follows_torchs_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert blocked.set_threads() == 1 and numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- the chooser ------------------------------------------------------------------------------------------------


def sequence_timer(table):
    """A clock that answers each kernel's calls from its list of seconds, in order (a fake, noisy clock)."""
    calls = {}

    def timer(fn, *, kernel, positions):
        i = calls.get(kernel, 0)
        calls[kernel] = i + 1
        return table[kernel][i % len(table[kernel])]

    timer.calls = calls
    return timer


def test_lucky_rounds_do_not_put_a_slower_kernel_in_place():
    # sparse is really 1.2x dense; in two of five rounds it caught a quiet moment (or dense a burst of load):
    # its best time is the lowest, which a best-of rule would take
    timer = sequence_timer({"dense": [1.0, 1.0, 1.0, 1.0, 1.0], "csr": [0.5, 0.5, 1.2, 1.2, 1.2]})
    result = choose({"dense": lambda: None, "csr": lambda: None}, "dense", timer, 64)
    assert result.pick == "dense" and result.ratio["csr"] == pytest.approx(1.2)


def test_load_bursts_that_hit_both_kernels_do_not_hide_a_real_win():
    # sparse is really 0.5x dense; bursts of load slow both tenfold in two rounds: paired ratios stay 0.5
    timer = sequence_timer({"dense": [1.0, 10.0, 1.0, 10.0, 1.0], "numba": [0.5, 5.0, 0.5, 5.0, 0.5]})
    result = choose({"dense": lambda: None, "numba": lambda: None}, "dense", timer, 1)
    assert result.pick == "numba" and result.ratio["numba"] == pytest.approx(0.5)


def test_a_kernel_must_win_the_majority_of_paired_rounds_by_the_margin():
    # a win by the margin in two of five rounds, near-ties in three: stays dense
    timer = sequence_timer({"dense": [1.0] * 5, "numba": [0.5, 0.95, 0.5, 0.95, 0.95]})
    assert choose({"dense": lambda: None, "numba": lambda: None}, "dense", timer, 1).pick == "dense"
    # the same wins in three of five rounds: taken
    timer = sequence_timer({"dense": [1.0] * 5, "numba": [0.5, 0.95, 0.5, 0.5, 0.95]})
    assert choose({"dense": lambda: None, "numba": lambda: None}, "dense", timer, 1).pick == "numba"


def test_the_fastest_winner_is_taken_and_clear_losers_are_timed_no_more():
    timer = sequence_timer({"dense": [1.0], "csr": [3.0], "numba": [0.4], "numba-shared": [0.3]})
    result = choose({k: (lambda: None) for k in ("dense", "csr", "numba", "numba-shared")}, "dense", timer, 1)
    assert result.pick == "numba-shared"
    assert result.rounds == {"dense": 5, "csr": 2, "numba": 5, "numba-shared": 5}
    with pytest.raises(ConfigError, match="base kernel"):
        choose({"csr": lambda: None}, "dense", timer, 1)


def test_the_runtime_uses_the_robust_rule():
    dense = pruned_lenet()
    slow = {key: [2.0] for key in ("numba", "numba-shared", "numba/1t", "numba-shared/1t")}
    timer = sequence_timer({"dense": [1.0], "csr": [0.5, 0.5, 1.2, 1.2, 1.2], **slow})
    _, plan = convert_(copy.deepcopy(dense), "auto", batch_sizes=(1,), input_shape=(784,), timer=timer)
    assert all(c.kernel == "dense" for layer in plan.layers for c in layer.choices)


def pruned_lenet() -> nn.Module:
    model = LeNet300.default()
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            with torch.no_grad():
                module.weight.mul_((torch.rand(module.weight.shape, generator=gen) < 0.1).float())
    return model.eval()


def test_the_serial_and_parallel_builds_keep_apart_in_numbas_cache(tmp_path):
    """numba keys its disk cache by function name, not by ``parallel``: under one name a parallel kernel
    loaded the serial build's machine code and ran on one thread. The vector code's tag is in the name too."""
    import subprocess

    script = (
        "import sys, numpy as np\n"
        "from nncompress.runtime import nbvector\n"
        "nbvector.CODE_TAG = sys.argv[2]\n"  # what a change to the vector code's file gives
        "from nncompress.runtime import blocked, nbkernels\n"
        "blocked.kernels()\n"
        "which = int(sys.argv[1])\n"
        "kernel = nbkernels.SPMM[(blocked.CHUNK, False)][which]\n"
        "args = blocked.prepare(blocked.build(__import__('torch').eye(3)))\n"
        "x, out = np.ones((64, 3), np.float32), np.zeros((64, 3), np.float32)\n"
        "kernel(*args.head, *args.vals, x, np.zeros(3, np.float32), out, 0, 1, 64, 1, True)\n"
        "print(sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))\n"
    )
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script, which, tag], env=env, capture_output=True, text=True, check=True)
        for which, tag in (("0", "a"), ("1", "a"), ("1", "a"), ("1", "b"))
    ]
    hits_misses = [run.stdout.split() for run in runs]
    # each build compiles once, then loads its own; changed vector code (another tag) compiles afresh: numba's
    # cache checks nbkernels.py, the file that defines the kernel, not nbvector.py
    assert hits_misses == [["0", "1"], ["0", "1"], ["1", "0"], ["0", "1"]]


@pytest.mark.parametrize("shared", [False, True])
def test_rows_shared_out_among_threads_give_the_one_thread_result(monkeypatch, shared):
    dense = masked_linear(203, 3000, 0.05, shared=True)
    layer = SparseLinear(dense, engine="numba-shared" if shared else "numba")
    monkeypatch.setattr(blocked, "PARALLEL_WORK", 0)
    monkeypatch.setattr(blocked, "PARALLEL_NONZEROS", 0)
    before = torch.get_num_threads()
    gen = torch.Generator().manual_seed(2)
    try:
        torch.set_num_threads(2)
        for tiles_per_thread in (1, 3):
            monkeypatch.setattr(blocked, "TILES_PER_THREAD", tiles_per_thread)
            for batch in (1, 64, 70):
                x = torch.randn(batch, 3000, generator=gen)
                with torch.no_grad():
                    torch.testing.assert_close(layer(x), dense(x), rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(before)
