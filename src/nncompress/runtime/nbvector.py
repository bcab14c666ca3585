"""One CSR row times a chunk of 64 input vectors, and 16 x 16 transposes, written as LLVM vector code for
the numba kernels.

Why by hand: numba's loops re-read and re-write a row's 64 outputs for every few nonzeros, and
64 scalar accumulators in generated Python came out unvectorised (3x slower). Here the 64 outputs
stay in four 16-lane vector registers for the whole row, and two such sets take alternate
nonzeros, so eight fused multiply-adds are in flight instead of four waiting on each other.
Per nonzero that leaves one 16-bit index, one weight (or 8-bit code and codebook entry), four
vector loads of its input run and four multiply-adds; measured 1.6-1.9x faster than the numba
loop on the benchmark layers at batch 64 (bench/results/runtime_bench.md). LLVM lowers 16-lane
vectors to whatever the CPU has (AVX-512, two AVX2 registers, four SSE ones).

``tile16`` transposes a 16 x 16 block in registers (four rounds of lane shuffles): the copies that
turn a chunk of inputs into runs and the outputs back took 2-3x as long as scalar loops.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

WIDTH = 64  # input vectors per chunk: the run each nonzero scales and adds
LANES = 16  # floats per vector register value
SETS = 2  # accumulator sets taking alternate nonzeros


def _code_tag() -> str:
    """A hash of this file. numba's disk cache checks the file that defines a kernel (nbkernels.py), not this
    one: kernels that call ``row64`` carry the tag in their names, so a changed row64 compiles afresh
    instead of loading stale."""
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    except OSError:  # no readable source file (a zip import): the package version stands in
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "v" + version("nncompress").replace(".", "_").replace("+", "_")
        except PackageNotFoundError:
            return "unversioned"


CODE_TAG = _code_tag()

_F32 = ir.FloatType()
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)


def _fma(builder: ir.IRBuilder) -> ir.Function:
    name = f"llvm.fma.v{LANES}f32"
    existing = builder.module.globals.get(name)
    return existing or ir.Function(builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]), name=name)


def _broadcast(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    first = builder.insert_element(ir.Constant(_VEC, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    return builder.shuffle_vector(first, ir.Constant(_VEC, ir.Undefined), lanes)


@intrinsic
def row64(
    typingctx: Any,
    xt: Any,
    y: Any,
    indices: Any,
    values: Any,
    book: Any,
    s0: Any,
    k: Any,
    e: Any,
    yo: Any,
    fresh: Any,
    start: Any,
) -> Any:
    """y[yo : yo + 64] = (``start`` when ``fresh``, else y[yo : yo + 64]) + the sum over nonzeros k..e-1 of
    w[k] * xt[(s0 + indices[k]) * 64 : ... + 64], where w[k] is ``values[k]``, or ``book[values[k]]`` when
    ``values`` holds 8-bit codes. Starting fresh from the bias in a matrix's first column block spares a
    pass that fills the outputs with it. Offsets are uint64; ``xt``, ``y`` and ``book`` are C-contiguous
    float32, ``indices`` 16-bit (read as unsigned), ``start`` float32."""
    shared = values.dtype == types.uint8
    u64 = types.uint64
    sig = types.void(xt, y, indices, values, book, u64, u64, u64, u64, types.boolean, types.float32)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        pointers = [
            context.make_array(t)(context, builder, a).data for t, a in zip(signature.args[:5], args[:5], strict=True)
        ]
        xp, yp, ip, vp, bp = pointers
        s0v, kv, ev, yov, fresh_v, start_v = args[5:]
        fma = _fma(builder)
        parts = WIDTH // LANES

        def at(base: ir.Value, offset: ir.Value) -> ir.Value:
            return builder.bitcast(builder.gep(base, [offset]), _VEC.as_pointer())

        def offset(start: ir.Value, j: int) -> ir.Value:
            return builder.add(start, ir.Constant(_I64, j * LANES))

        def step(kk: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            column = builder.zext(builder.load(builder.gep(ip, [kk])), _I64)
            run = builder.mul(builder.add(s0v, column), ir.Constant(_I64, WIDTH))
            weight = builder.load(builder.gep(vp, [kk]))
            if shared:
                weight = builder.load(builder.gep(bp, [builder.zext(weight, _I64)]))
            w = _broadcast(builder, weight)
            runs = [builder.load(at(xp, offset(run, j)), align=4) for j in range(parts)]
            return [builder.call(fma, [w, x, acc]) for x, acc in zip(runs, accs, strict=True)]

        Sets = list[list[ir.Value]]

        def loop(name: str, k0: ir.Value, inits: Sets, stride: int) -> tuple[ir.Value, Sets]:
            """for k from k0 while k + stride <= e: each set s takes nonzero k + s; returns (k, sets) at exit."""
            entry = builder.block
            head = builder.append_basic_block(f"row64.{name}")
            body = builder.append_basic_block(f"row64.{name}.body")
            out = builder.append_basic_block(f"row64.{name}.out")
            builder.branch(head)
            builder.position_at_end(head)
            kk = builder.phi(_I64)
            kk.add_incoming(k0, entry)
            sets = [[builder.phi(_VEC) for _ in range(parts)] for _ in inits]
            for phis, init in zip(sets, inits, strict=True):
                for phi, value in zip(phis, init, strict=True):
                    phi.add_incoming(value, entry)
            after = builder.add(kk, ir.Constant(_I64, stride))
            builder.cbranch(builder.icmp_unsigned("<=", after, ev), body, out)
            builder.position_at_end(body)
            stepped = [step(builder.add(kk, ir.Constant(_I64, s)), accs) for s, accs in enumerate(sets)]
            back = builder.block
            builder.branch(head)
            kk.add_incoming(after, back)
            for phis, values in zip(sets, stepped, strict=True):
                for phi, value in zip(phis, values, strict=True):
                    phi.add_incoming(value, back)
            builder.position_at_end(out)
            return kk, sets

        with builder.if_else(fresh_v) as (then, otherwise):
            with then:
                from_bias = _broadcast(builder, start_v)
                fresh_block = builder.block
            with otherwise:
                loaded = [builder.load(at(yp, offset(yov, j)), align=4) for j in range(parts)]
                loaded_block = builder.block
        start = []
        for j in range(parts):
            phi = builder.phi(_VEC)
            phi.add_incoming(from_bias, fresh_block)
            phi.add_incoming(loaded[j], loaded_block)
            start.append(phi)
        zero = ir.Constant(_VEC, [0.0] * LANES)
        kk, sets = loop("pairs", kv, [start] + [[zero] * parts] * (SETS - 1), SETS)
        summed = sets[0]
        for other in sets[1:]:
            summed = [builder.fadd(a, b) for a, b in zip(summed, other, strict=True)]
        _, (final,) = loop("rest", kk, [summed], 1)  # fewer than SETS nonzeros left
        for j in range(parts):
            builder.store(final[j], at(yp, offset(yov, j)), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _swap_masks(d: int) -> tuple[list[int], list[int]]:
    """Shuffle masks for one round of the transpose: of a row pair (i, i + d) with bit d of i clear, the
    element in a column with bit d set trades places with its partner d rows down and d columns left."""
    low = [j if not j & d else LANES + j - d for j in range(LANES)]
    high = [LANES + j if j & d else j + d for j in range(LANES)]
    return low, high


@intrinsic
def tile16(typingctx: Any, a: Any, a_at: Any, lda: Any, b: Any, b_at: Any, ldb: Any) -> Any:
    """b[j, i] = a[i, j] for a 16 x 16 block: rows of ``a`` start at flat element ``a_at``, ``lda`` apart, rows of
    ``b`` at ``b_at``, ``ldb`` apart (uint64 element counts into the float32 buffers of ``a`` and ``b``).
    Each of four rounds swaps one bit of the row index with the same bit of the column index."""
    if not all(isinstance(t, types.Array) and t.dtype == types.float32 for t in (a, b)):
        return None  # a typing error at compile time: the block moves float32 lanes only
    u64 = types.uint64
    sig = types.void(a, u64, u64, b, u64, u64)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        ap = context.make_array(signature.args[0])(context, builder, args[0]).data
        bp = context.make_array(signature.args[3])(context, builder, args[3]).data
        a_at_v, lda_v, b_at_v, ldb_v = args[1], args[2], args[4], args[5]

        def row(base: ir.Value, at: ir.Value, ld: ir.Value, i: int) -> ir.Value:
            offset = builder.add(at, builder.mul(ld, ir.Constant(_I64, i)))
            return builder.bitcast(builder.gep(base, [offset]), _VEC.as_pointer())

        rows = [builder.load(row(ap, a_at_v, lda_v, i), align=4) for i in range(LANES)]
        d = 1
        while d < LANES:
            low, high = (ir.Constant(ir.VectorType(ir.IntType(32), LANES), m) for m in _swap_masks(d))
            swapped = list(rows)
            for i in range(LANES):
                if not i & d:
                    swapped[i] = builder.shuffle_vector(rows[i], rows[i + d], low)
                    swapped[i + d] = builder.shuffle_vector(rows[i], rows[i + d], high)
            rows = swapped
            d *= 2
        for i, value in enumerate(rows):
            builder.store(value, row(bp, b_at_v, ldb_v, i), align=4)
        return context.get_dummy_value()

    return sig, codegen
