"""SIMD compaction of the tail lanes for the Numba kernels: one AVX-512 ``vcompress`` per vector.

The kernels draw every normal with AS241's central branch, then redo the ~15 % of lanes with
|u - 1/2| > 0.425 in a compacted pass.  Finding those lanes one by one is a serial loop (each index
is stored at the running count, ~1 cycle per lane); `compress_beyond` does a whole vector of lanes
at once with LLVM's ``llvm.experimental.vector.compress`` (``vpcompressd`` into a register, then one
plain store: the memory form of ``vpcompressd`` is slow on Intel cores).

It only changes how the indices are found, not which: the kernel's results are the same bits with
or without it (tested).  It is used where it is fast: LLVM >= 19 (the intrinsic) on a host CPU with
AVX-512 (elsewhere LLVM would expand it lane by lane), and not when ``NUMBA_CPU_NAME`` or
``NUMBA_CPU_FEATURES`` ask for another CPU than the host's or take AVX-512 away.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["compress_beyond", "has_vector_compress", "compress_lanes"]


def has_vector_compress() -> bool:
    """Whether `compress_beyond` compiles to ``vpcompressd`` here (LLVM >= 19, AVX-512, host CPU)."""
    if llvm.llvm_version_info < (19,) or config.CPU_NAME not in (None, "host", llvm.get_host_cpu_name()):
        return False
    if config.CPU_FEATURES:  # NUMBA_CPU_FEATURES, e.g. the 512-bit opt-in of docs/benchmarks.md
        return "+avx512f" in config.CPU_FEATURES.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


def compress_lanes(dtype: str) -> int:
    """Lanes per `compress_beyond` call: one 512-bit vector of ``dtype``."""
    return 16 if dtype == "float32" else 8


@intrinsic
def compress_beyond(typingctx, values, j, centre, bound, idx, n):
    """``n`` plus the number of lanes ``i`` in ``j .. j + W - 1`` with ``|values[i] - centre| > bound``;
    those ``i`` are written, in order, to ``idx[n:]``, and ``idx[n + count : n + W]`` is overwritten.

    W = `compress_lanes` of ``values``' dtype; ``values[j : j + W]`` and ``idx[n : n + W]`` must lie in
    their arrays (no bounds check: the caller's loop keeps ``n <= j`` and ``j + W <= len``).  The
    comparison is the kernel's own, ``abs(v - centre) > bound`` in ``values``' dtype, so the same lanes
    are chosen as by the scalar loop.  ``idx`` holds int32.
    """
    real = values.dtype
    if real not in (types.float32, types.float64) or idx.dtype != types.int32:
        return None
    lanes = compress_lanes("float32" if real == types.float32 else "float64")
    sig = types.intp(values, j, centre, bound, idx, n)

    def codegen(context, builder, signature, args):
        vals, start, c, b, out, count = args
        i32 = ir.IntType(32)
        ftype = context.get_value_type(real)
        fvec, ivec = ir.VectorType(ftype, lanes), ir.VectorType(i32, lanes)
        mvec = ir.VectorType(ir.IntType(1), lanes)
        start = context.cast(builder, start, signature.args[1], types.intp)
        count = context.cast(builder, count, signature.args[5], types.intp)

        def splat(value, vec):
            one = builder.insert_element(ir.Constant(vec, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), ir.Constant(ivec, [0] * lanes))

        def declare(name, ret, *argtypes):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, list(argtypes)), name)

        data = context.make_array(signature.args[0])(context, builder, vals).data
        v = builder.load(builder.bitcast(builder.gep(data, [start]), fvec.as_pointer()), align=1)
        c = splat(context.cast(builder, c, signature.args[2], real), fvec)
        b = splat(context.cast(builder, b, signature.args[3], real), fvec)
        suffix = f"v{lanes}f{32 if real == types.float32 else 64}"
        mag = builder.call(declare(f"llvm.fabs.{suffix}", fvec, fvec), [builder.fsub(v, c)])
        mask = builder.fcmp_ordered(">", mag, b)
        lane_ids = builder.add(splat(builder.trunc(start, i32), ivec), ir.Constant(ivec, list(range(lanes))))
        packed = builder.call(declare(f"llvm.experimental.vector.compress.v{lanes}i32", ivec, ivec, mvec, ivec),
                              [lane_ids, mask, ir.Constant(ivec, ir.Undefined)])
        target = context.make_array(signature.args[4])(context, builder, out).data
        builder.store(packed, builder.bitcast(builder.gep(target, [count]), ivec.as_pointer()), align=4)
        width = ir.IntType(lanes)
        bits = builder.call(declare(f"llvm.ctpop.i{lanes}", width, width), [builder.bitcast(mask, width)])
        return builder.add(count, builder.zext(bits, count.type))

    return sig, codegen
