"""SIMD helpers of the Numba kernels: 512-bit vectors for the kernel alone, the compaction of the
tail lanes with one AVX-512 ``vcompress`` per vector, and a fused multiply-add (`fma`) where it
gives the same bits as the two operations it replaces.

**Vector width.**  On AVX-512 CPUs LLVM emits 256-bit vectors unless told otherwise (its
``prefer-256-bit`` tuning, chosen for the Skylake-SP generation, whose clock drops under heavy 512-bit
work).  `prefer_wide_vectors` sets LLVM's per-function attribute ``"prefer-vector-width"="512"`` on
the kernel's own LLVM function only, so no other Numba function of the process changes.  It changes
the number of lanes, not the operations: the kernels allow no reassociation, so the results are the
same bits (tested).  `has_wide_vectors` decides where it is used.

**Compaction.**

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

import os

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._errors import ParameterError

__all__ = ["compress_beyond", "has_vector_compress", "compress_lanes", "has_wide_vectors", "prefer_wide_vectors",
           "VECTOR_BITS_ENV", "fma"]

#: The environment variable that sets the kernels' vector width: ``256`` or ``512`` (default: `has_wide_vectors`)
VECTOR_BITS_ENV = "SDEEOS_VECTOR_BITS"
#: LLVM names of the AVX-512 CPUs whose clock drops under 512-bit work (Skylake-SP and its refreshes)
_SLOW_512_BIT_CPUS = frozenset({"skylake-avx512", "cascadelake", "cooperlake", "knl", "knm"})


def _target_has_avx512() -> bool:
    """Whether Numba compiles for the host CPU and that CPU has AVX-512 (``NUMBA_CPU_NAME`` naming another
    CPU, or ``NUMBA_CPU_FEATURES`` without ``+avx512f``, say no)."""
    if config.CPU_NAME not in (None, "host", llvm.get_host_cpu_name()):
        return False
    if config.CPU_FEATURES:  # NUMBA_CPU_FEATURES: the caller's choice of features
        return "+avx512f" in config.CPU_FEATURES.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


def has_vector_compress() -> bool:
    """Whether `compress_beyond` compiles to ``vpcompressd`` here (LLVM >= 19, AVX-512, host CPU)."""
    return llvm.llvm_version_info >= (19,) and _target_has_avx512()


def has_wide_vectors() -> bool:
    """Whether the kernels use 512-bit vectors (`prefer_wide_vectors`): ``SDEEOS_VECTOR_BITS`` if set
    (``256`` or ``512``), else yes on an AVX-512 host CPU other than the Skylake-SP generation.
    ``512`` on a CPU without AVX-512 (or with Numba compiling for another CPU) gives 256-bit code."""
    bits = os.environ.get(VECTOR_BITS_ENV, "").strip()
    if bits not in ("", "256", "512"):
        raise ParameterError(f"{VECTOR_BITS_ENV} must be 256 or 512 (or unset), got {bits!r}")
    if bits:
        return bits == "512" and _target_has_avx512()
    return _target_has_avx512() and llvm.get_host_cpu_name() not in _SLOW_512_BIT_CPUS


@intrinsic
def prefer_wide_vectors(typingctx):
    """Ask LLVM for 512-bit vectors in the function this is called from (for a ``prange`` body: the
    function Numba outlines it into, where the kernel's loops are).  No code is emitted."""

    def codegen(context, builder, signature, args):
        # llvmlite's FunctionAttributes accepts only enum attributes; LLVM's string attribute is
        # added to the underlying set as is (LLVM's X86 backend reads it per function)
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


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


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` in float64 with one rounding (LLVM's ``llvm.fma.f64``: one vector instruction on
    CPUs with FMA, a correctly rounded libm call elsewhere).

    The float32 kernels add the square of each float32 observable ``o``, widened to float64 ``w``, to a
    float64 sum.  ``w * w`` is exact in float64 (24 + 24 significant bits <= 53; its exponent stays in
    range), so ``fma(w, w, s)`` rounds once the same real number that ``s + w * w`` rounds once: the same
    bits, in one instruction instead of two (inf and NaN propagate alike)."""
    if not (a == b == c == types.float64):
        return None

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(double, [double] * 3), "llvm.fma.f64")
        return builder.call(fn, args)

    return types.float64(types.float64, types.float64, types.float64), codegen
