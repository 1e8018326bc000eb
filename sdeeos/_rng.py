r"""The random-number schemes of sdeeos: counter-based, keyed by (seed, trajectory, draw).

Two families (``rng="splitmix"`` and ``rng="philox"``), each with a float64 and a float32 variant;
the scheme name is recorded in every dataset (`rng_scheme`).  Every draw is a pure function of
(seed, trajectory, draw number), in every backend.

Scheme ``sdeeos-splitmix64-ctr-as241/1`` (``rng="splitmix"``, the default for float64):

1. **Per-trajectory key.**  ``key = mix64(mix64(seed + G) + (traj + 1) * G)`` and an odd increment
   ``gamma = mix_gamma(key + G)`` (Steele, Lea & Flood 2014, *SplittableRandom*: each trajectory is a
   split stream with its own Weyl increment, so streams of different trajectories are not shifted
   copies of one sequence).  ``G = 0x9E3779B97F4A7C15``.
2. **Draw number c** (c = step * n_noise + lane) gives the 64-bit word
   ``mix64(key + (c + 1) * gamma)``: a pure function of (seed, traj, c), so any draw can be
   regenerated on its own: runs split in time, across threads or on a GPU give the same numbers.
3. **Uniform** ``u = ((word >> 11) + 0.5) * 2**-53`` lies in the open interval (0, 1).
4. **Normal** ``z = Phi^{-1}(u)`` by Wichura's AS241 (relative error ~1e-16): exactly one word per
   normal, so the draw counter is aligned with the step.

**float32 variant** ``sdeeos-splitmix64-ctr-as241f32/1`` (``dtype="float32"`` runs, every backend):
the *same* 64-bit word per draw; ``k2 = 2 (w >> 11) + 1`` (so ``u = k2 2**-54``) gives
``q = u - 1/2`` and ``min(u, 1 - u)`` from exact integers, each rounded once to float32 (the tails
reach |z| ~ 8.3 as in float64), then AS241 in single precision (float32 coefficients, ``logf``).
Its normals are the float64 ones to within a few float32 ulps (tested), not their correct
rounding: the name differs so that provenance says which draws a run used.

**Philox family** ``sdeeos-philox4x32-10-as241/1`` and ``sdeeos-philox4x32-10-as241f32/1``
(``rng="philox"``, the default for float32):

1. **Generator.** Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, *Parallel random numbers: as easy
   as 1, 2, 3*; the Random123 reference): a 10-round bijection of a 128-bit counter (four 32-bit
   words) under a 64-bit key, giving four 32-bit words per call.  Only 32x32 -> 64-bit multiplies:
   native on GPUs and in SIMD units (where a 64-bit multiply is emulated or slow).
2. **Stream of (seed, trajectory).** key = (seed mod 2**32, seed >> 32); counter = (b mod 2**32,
   b >> 32, traj mod 2**32, traj >> 32) for block number b (the layout of cuRAND's
   ``curand_init(seed, subsequence=traj, offset)``).  For one seed, distinct (trajectory, block)
   pairs are distinct inputs of one bijection: streams cannot overlap.
3. **float32**: draw c is word ``c mod 4`` of block ``b = c // 4``, u = (w + 1/2) 2**-32 in (0, 1):
   ``q = u - 1/2`` rounded once to float32 and the float32 AS241 central branch as in the splitmix
   float32 variant; in the tails (|q| > 0.425) ``s = -log(min(u, 1 - u))`` from the exact integer
   ``m = 2**33 min(u, 1 - u)`` by `neglog_int_nb` (float64, rounded once to float32), then AS241's tail
   in float32.  The 32-bit grid of u ends the tails at |z| = 6.34.
4. **float64**: draw c takes words ``2 (c mod 2)`` (high half) and ``2 (c mod 2) + 1`` (low half) of
   block ``b = c // 2`` as one 64-bit word w and the uniform of the splitmix scheme,
   ``u = ((w >> 11) + 1/2) 2**-53``; AS241's central branch as there; the tails from the exact integer
   ``m = 2**54 min(u, 1 - u)`` by `neglog_int_nb` (|z| up to 8.3).
5. **No libm.** `neglog_int_nb` uses +, -, *, / only (AS241 adds sqrt): every operation of the family
   is correctly rounded IEEE arithmetic, so NumPy, Numba and CUDA (``--fmad=false``) give the same
   bits, tails included (the splitmix family's tails call libm's ``log``, which may differ in the
   last bit between libraries).

The run state stores, per trajectory, ``keys = seed`` and ``gammas = traj`` for this family (the
splitmix family stores its key and Weyl increment there).

``mix64`` is Stafford's variant 13 (the SplitMix64 finaliser).  Every backend implements the same
arithmetic; the CPU ones agree bit for bit (no FMA contraction), a GPU may differ in the last bit of
``log`` in the tail branch (|u - 1/2| > 0.425).

The functions below come in two forms: ``*_nb`` (Numba, scalar, used inside compiled kernels) and
NumPy array versions (used by the reference backend and tests).
"""

from __future__ import annotations

import decimal

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._errors import ParameterError

__all__ = [
    "RNG_SCHEME",
    "as_seed",
    "GOLDEN",
    "stream_keys",
    "uniforms",
    "normals",
    "ndtri_as241",
    "mix64",
    "mix64_nb",
    "uniform_nb",
    "ndtri_central_nb",
    "ndtri_tail_nb",
    "ndtri_nb",
    "AS241_CENTRAL_BOUND",
    "RNG_SCHEME_F32",
    "rng_scheme",
    "normals32",
    "ndtri32_word_nb",
    "ndtri32_word_at_nb",
    "uniform_at_nb",
    "ndtri_tail_pass_nb",
    "ndtri32_tail_pass_nb",
    "ndtri32_q_nb",
    "ndtri32_central_nb",
    "ndtri32_tail_nb",
    "ndtri_tail_log_nb",
    "ndtri_tail_finish_nb",
    "ndtri32_tail_log_nb",
    "ndtri32_tail_finish_nb",
    "RNGS",
    "RNG_SCHEME_PHILOX",
    "RNG_SCHEME_PHILOX_F32",
    "default_rng",
    "check_rng",
    "philox4x32",
    "philox4x32_nb",
    "philox4x32_w32_nb",
    "philox_uniform_nb",
    "philox32_n2_nb",
    "philox32_q_nb",
    "neglog_int_nb",
    "neglog_int",
    "philox_tail_s64_nb",
    "philox_tail_m64_nb",
    "philox_tail_m32_nb",
    "philox_tail_s32_nb",
    "LN2_HI",
    "LN2_LO",
    "PHILOX_M",
    "PHILOX_W",
]

RNG_SCHEME = "sdeeos-splitmix64-ctr-as241/1"
RNG_SCHEME_F32 = "sdeeos-splitmix64-ctr-as241f32/1"
RNG_SCHEME_PHILOX = "sdeeos-philox4x32-10-as241/1"
RNG_SCHEME_PHILOX_F32 = "sdeeos-philox4x32-10-as241f32/1"

#: RNG families a run may ask for (``simulate(..., rng=...)``)
RNGS = ("splitmix", "philox")


def default_rng(dtype: str = "float64") -> str:
    """The family a run in ``dtype`` uses unless it asks for another: Philox for float32 (its
    32-bit words cost half a 64-bit hash per normal), SplitMix64 for float64 (every existing
    float64 dataset keeps its numbers)."""
    return "philox" if dtype == "float32" else "splitmix"


def check_rng(rng, dtype: str = "float64") -> str:
    """``rng`` (``None``: `default_rng` of ``dtype``) if it names a family; else ``ParameterError``."""
    if rng is None:
        return default_rng(dtype)
    if rng not in RNGS:
        raise ParameterError(f"rng must be one of {list(RNGS)}, got {rng!r}")
    return rng


def rng_scheme(dtype: str = "float64", rng: str = "splitmix") -> str:
    """The scheme name recorded in provenance for runs in ``dtype`` with family ``rng``."""
    if rng == "philox":
        return RNG_SCHEME_PHILOX_F32 if dtype == "float32" else RNG_SCHEME_PHILOX
    return RNG_SCHEME_F32 if dtype == "float32" else RNG_SCHEME

_U = np.uint64
GOLDEN = _U(0x9E3779B97F4A7C15)
_M1 = _U(0xBF58476D1CE4E5B9)
_M2 = _U(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = _U(30), _U(27), _U(31), _U(11)
_S33 = _U(33)
_GM1 = _U(0xFF51AFD7ED558CCD)
_GM2 = _U(0xC4CEB9FE1A85EC53)
_ONE = _U(1)
_ALT = _U(0xAAAAAAAAAAAAAAAA)
_TWO_M53 = 2.0**-53
AS241_CENTRAL_BOUND = 0.425

# Wichura (1988), AS241 PPND16 coefficients, highest degree first (Horner order).
_A = (2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4,
      4.5921953931549871457e4, 1.3731693765509461125e4, 1.9715909503065514427e3,
      1.3314166789178437745e2, 3.3871328727963666080e0)
_B = (5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4,
      2.1213794301586595867e4, 5.3941960214247511077e3, 6.8718700749205790830e2,
      4.2313330701600911252e1, 1.0)
_C = (7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1,
      1.27045825245236838258e0, 3.64784832476320460504e0, 5.76949722146069140550e0,
      4.63033784615654529590e0, 1.42343711074968357734e0)
_D = (1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2,
      1.48103976427480074590e-1, 6.89767334985100004550e-1, 1.67638483018380384940e0,
      2.05319162663775882187e0, 1.0)
_E = (2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3,
      2.65321895265761230930e-2, 2.96560571828504891230e-1, 1.78482653991729133580e0,
      5.46378491116411436990e0, 6.65790464350110377720e0)
_F = (2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5,
      7.86869131145613259100e-4, 1.48753612908506148525e-2, 1.36929880922735805310e-1,
      5.99832206555887937690e-1, 1.0)


# ---------------------------------------------------------------- Numba (scalar) versions
@njit(inline="always")
def mix64_nb(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(inline="always")
def uniform_at_nb(weyl):
    """The uniform of the draw whose Weyl sum is ``weyl = key + (counter + 1) gamma`` (mod 2**64): a
    kernel that draws counters in order keeps this sum and adds ``gamma`` after each draw, an add in
    place of a 64-bit multiply (same bits as `uniform_nb`)."""
    return (float(mix64_nb(weyl) >> _S11) + 0.5) * _TWO_M53


@njit(inline="always")
def uniform_nb(key, gamma, counter):
    """Uniform in (0, 1) for draw ``counter`` of the stream (key, gamma)."""
    return uniform_at_nb(key + (_U(counter) + _ONE) * gamma)


@njit(inline="always")
def _horner8(c, r):
    return ((((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) * r + c[6]) * r + c[7]


@njit(inline="always")
def ndtri_central_nb(u):
    """AS241 central branch; exact for |u - 1/2| <= 0.425, meaningless outside (no branch: SIMD)."""
    q = u - 0.5
    r = 0.180625 - q * q
    return q * _horner8(_A, r) / _horner8(_B, r)


@njit
def ndtri_tail_nb(u):
    """AS241 tail branches (|u - 1/2| > 0.425)."""
    q = u - 0.5
    r = u if q <= 0.0 else 1.0 - u
    r = np.sqrt(-np.log(r))
    x = _near_tail(r) if r <= 5.0 else _far_tail(r)
    return -x if q < 0.0 else x


@njit(inline="always")
def ndtri_tail_log_nb(u):
    """First half of `ndtri_tail_nb`: ``-log(min(u, 1 - u))`` (the libm call; scalar)."""
    q = u - 0.5
    r = u if q <= 0.0 else 1.0 - u
    return -np.log(r)


@njit(inline="always")
def _near_tail(r):
    a = r - 1.6
    return _horner8(_C, a) / _horner8(_D, a)


@njit(inline="always")
def _far_tail(r):
    b = r - 5.0
    return _horner8(_E, b) / _horner8(_F, b)


@njit(inline="always")
def ndtri_tail_finish_nb(u, s):
    """Second half of `ndtri_tail_nb` from ``s = -log(min(u, 1 - u))``: both rational branches and a
    select, no call and no branch, so a loop over tail lanes vectorises; the same operations as
    `ndtri_tail_nb` on the branch it takes, so the same bits."""
    r = np.sqrt(s)
    x = _near_tail(r) if r <= 5.0 else _far_tail(r)
    return -x if u - 0.5 < 0.0 else x


@njit(inline="always")
def ndtri_tail_pass_nb(u, s, z, n):
    """``z[i] = ndtri_tail_finish_nb(u[i], s[i])`` for i < n (the compacted tail lanes), the same bits.

    The far branch (r = sqrt(s) > 5, i.e. min(u, 1 - u) < exp(-25) = 1.4e-11) is computed only in the
    rare pass that has such a lane: every other pass costs one rational function and one division per
    lane instead of two."""
    far = 0
    for i in range(n):
        r = np.sqrt(s[i])
        far += r > 5.0
        x = _near_tail(r)
        z[i] = -x if u[i] - 0.5 < 0.0 else x
    if far:
        for i in range(n):
            z[i] = ndtri_tail_finish_nb(u[i], s[i])


@njit(inline="always")
def ndtri_nb(u):
    if abs(u - 0.5) <= AS241_CENTRAL_BOUND:
        return ndtri_central_nb(u)
    return ndtri_tail_nb(u)


# ---------------------------------------------------------------- float32 variant (Numba)
_f32 = np.float32
_A32, _B32, _C32, _D32, _E32, _F32 = (tuple(_f32(c) for c in cs) for cs in (_A, _B, _C, _D, _E, _F))
_TWO_M54_F32 = _f32(2.0**-54)
_R0_F32 = _f32(0.180625)
_CENTRAL_F32 = _f32(AS241_CENTRAL_BOUND)
_FIVE_F32, _ONE6_F32 = _f32(5.0), _f32(1.6)
_HALF_K2 = 1 << 53  # k2 of u = 1/2


@njit(inline="always")
def ndtri32_word_at_nb(weyl):
    """`ndtri32_word_nb` of the draw whose Weyl sum is ``weyl`` (as in `uniform_at_nb`)."""
    return np.int64(mix64_nb(weyl) >> _S11) * 2 + 1 - _HALF_K2


@njit(inline="always")
def ndtri32_word_nb(key, gamma, counter):
    """``n2 = 2**54 (u - 1/2)`` (an odd int64, never 0) of draw ``counter``; exact."""
    return ndtri32_word_at_nb(key + (_U(counter) + _ONE) * gamma)


@njit(inline="always")
def ndtri32_q_nb(n2):
    """``q = u - 1/2`` rounded once to float32."""
    return np.float32(n2) * _TWO_M54_F32


@njit(inline="always")
def ndtri32_central_nb(q):
    """AS241 central branch in float32 (valid for |q| <= 0.425; no branch: SIMD)."""
    r = _R0_F32 - q * q
    return q * _horner8(_A32, r) / _horner8(_B32, r)


@njit
def ndtri32_tail_nb(n2):
    """AS241 tail branches in float32, from the exact ``min(u, 1 - u)``."""
    k2 = n2 + _HALF_K2
    m2 = k2 if n2 < 0 else 2 * _HALF_K2 - k2
    r = np.float32(m2) * _TWO_M54_F32
    r = np.sqrt(-np.log(r))
    x = _near_tail32(r) if r <= _FIVE_F32 else _far_tail32(r)
    return -x if n2 < 0 else x


@njit(inline="always")
def ndtri32_tail_log_nb(n2):
    """First half of `ndtri32_tail_nb`: ``-logf(min(u, 1 - u))`` in float32 (scalar libm call)."""
    k2 = n2 + _HALF_K2
    m2 = k2 if n2 < 0 else 2 * _HALF_K2 - k2
    return -np.log(np.float32(m2) * _TWO_M54_F32)


@njit(inline="always")
def _near_tail32(r):
    a = r - _ONE6_F32
    return _horner8(_C32, a) / _horner8(_D32, a)


@njit(inline="always")
def _far_tail32(r):
    b = r - _FIVE_F32
    return _horner8(_E32, b) / _horner8(_F32, b)


@njit(inline="always")
def ndtri32_tail_finish_nb(n2, s):
    """Second half of `ndtri32_tail_nb` (both branches and a select: vectorises; same bits); only the
    sign of ``n2`` is used."""
    r = np.sqrt(s)
    x = _near_tail32(r) if r <= _FIVE_F32 else _far_tail32(r)
    return -x if n2 < 0 else x


@njit(inline="always")
def ndtri32_tail_pass_nb(n2, s, z, n):
    """``z[i] = ndtri32_tail_finish_nb(n2[i], s[i])`` for i < n, far branch only when needed, as
    `ndtri_tail_pass_nb`.  ``n2`` may be any array of the draws' signs (the Philox kernel passes q)."""
    far = 0
    for i in range(n):
        r = np.sqrt(s[i])
        far += r > _FIVE_F32
        x = _near_tail32(r)
        z[i] = -x if n2[i] < 0 else x
    if far:
        for i in range(n):
            z[i] = ndtri32_tail_finish_nb(n2[i], s[i])


@njit
def _normals32_nb(keys, gammas, counter, out):
    for i in range(keys.size):
        n2 = ndtri32_word_nb(keys[i], gammas[i], counter)
        q = ndtri32_q_nb(n2)
        out[i] = ndtri32_central_nb(q) if abs(q) <= _CENTRAL_F32 else ndtri32_tail_nb(n2)


# ---------------------------------------------------------------- Philox4x32-10 (Numba)
#: round multipliers and key increments (Weyl constants) of Philox4x32 (Random123 philox.h)
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_PM0, _PM1 = _U(PHILOX_M[0]), _U(PHILOX_M[1])
_PW0, _PW1 = _U(PHILOX_W[0]), _U(PHILOX_W[1])
_M32 = _U(0xFFFFFFFF)
_S32 = _U(32)
_TWO32 = 1 << 32
_SHIFT21 = 21  # 2**54 / 2**33: the splitmix float32 code's scale from the 32-bit word's


@njit(inline="always")
def _philox_round(c0, c1, c2, c3, k0, k1):
    p0 = _PM0 * c0  # 32 x 32 -> 64 bits: exact in uint64
    p1 = _PM1 * c2
    return (p1 >> _S32) ^ c1 ^ k0, p1 & _M32, (p0 >> _S32) ^ c3 ^ k1, p0 & _M32


@njit(inline="always")
def philox4x32_nb(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four words, each a uint64
    holding 32 bits (inputs must be below 2**32).  Random123's ``philox4x32_R(10, ...)``."""
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    for _ in range(9):
        k0 = (k0 + _PW0) & _M32
        k1 = (k1 + _PW1) & _M32
        c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    return c0, c1, c2, c3


_QW0, _QW1 = np.uint32(PHILOX_W[0]), np.uint32(PHILOX_W[1])


@njit(inline="always")
def _philox_round_w32(c0, c1, c2, c3, k0, k1):
    # the product widened to 64 bits for its high word; the xors are left in Numba's uint64 (no
    # truncation between rounds: measured 8% faster than wrapping them in uint32)
    p0 = _PM0 * _U(c0)
    p1 = _PM1 * _U(c2)
    return (np.uint32(p1 >> _S32) ^ c1 ^ k0, np.uint32(p1), np.uint32(p0 >> _S32) ^ c3 ^ k1, np.uint32(p0))


@njit(inline="always")
def philox4x32_w32_nb(c0, c1, c2, c3, k0, k1):
    """`philox4x32_nb` (the same four words) from ``numpy.uint32`` inputs: the form the float32 engine
    kernel calls in its loop over a block of trajectories.  The words are below 2**32 but Numba types the
    first and third as uint64: store them in a uint32 array.  With those uint32 loads and stores LLVM
    vectorises the loop over 512-bit registers (8 lanes; the uint64 form gets 256-bit ones, 4 lanes),
    about 1.6x faster (``benchmarks/bench_philox_lanes.py``)."""
    c0, c1, c2, c3 = _philox_round_w32(c0, c1, c2, c3, k0, k1)
    for _ in range(9):
        k0 = np.uint32(k0 + _QW0)
        k1 = np.uint32(k1 + _QW1)
        c0, c1, c2, c3 = _philox_round_w32(c0, c1, c2, c3, k0, k1)
    return c0, c1, c2, c3


@njit(inline="always")
def philox_uniform_nb(hi, lo):
    """The float64 scheme's uniform from a word pair: ``((hi 2**32 + lo) >> 11 + 1/2) 2**-53``."""
    return (float(((hi << _S32) | lo) >> _S11) + 0.5) * _TWO_M53


@njit(inline="always")
def philox32_n2_nb(w):
    """``n2 = 2**54 (u - 1/2)`` of a 32-bit word (u = (w + 1/2) 2**-32): the input of `ndtri32_q_nb`
    and `ndtri32_tail_nb`, exact (an odd multiple of 2**21)."""
    return (np.int64(w) * 2 + 1 - _TWO32) << _SHIFT21


_TWO_M32 = 2.0**-32
_HALF_WORDS = 2147483647.5  # 2**31 - 1/2


@njit(inline="always")
def philox32_q_nb(w):
    """``q = u - 1/2 = (w - 2**31 + 1/2) 2**-32`` rounded once to float32: the same value as
    ``ndtri32_q_nb(philox32_n2_nb(w))`` (float64 holds the difference exactly), without 64-bit integer
    lanes (a 32-bit word converts to float64 in one SIMD instruction)."""
    return np.float32((np.float64(w) - _HALF_WORDS) * _TWO_M32)


# ------------------------------------------------- -log of the Philox tails, without libm (Numba)
def _ln2_split() -> tuple[float, float]:
    """ln 2 as hi + lo from 50 digits: hi has 31 fraction bits (so k * hi is exact for |k| < 2**22),
    lo the rest (no constant typed in by hand)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        ln2 = decimal.Decimal(2).ln()
        hi = float(int(ln2 * 2**31) / 2**31)  # 0.693... with 31 fraction bits
        lo = float(ln2 - decimal.Decimal(hi))
    return hi, lo


LN2_HI, LN2_LO = _ln2_split()
#: 1/(2k + 1), k = 11 .. 1: the series of atanh (log f = 2 atanh s), Horner order
_ATANH = tuple(1.0 / (2 * k + 1) for k in range(11, 0, -1))
_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10 = _ATANH
_SQRT2 = 1.4142135623730951
_TWO_M52 = 2.0**-52


_MANTISSA = np.int64((1 << 52) - 1)
_EXPONENT_OF_ONE = np.int64(1023 << 52)


@intrinsic
def _float64_bits(typingctx, x):
    """The IEEE bits of a float64 as an int64 (a bitcast: one register move, vectorised)."""
    if x != types.float64:
        return None
    return types.int64(types.float64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64))


@intrinsic
def _bits_float64(typingctx, bits):
    """The float64 with IEEE bits ``bits`` (an int64)."""
    if bits != types.int64:
        return None
    return types.float64(types.int64), lambda context, builder, sig, args: builder.bitcast(args[0], ir.DoubleType())


@njit(inline="always")
def neglog_int_nb(m, e0):
    r"""``-log(m 2**-e0)`` for an integer ``1 <= m < 2**53``, by +, -, *, / only (no libm, no branch):
    the same bits in NumPy (`neglog_int`), Numba (vectorised) and CUDA (``--fmad=false``).

    ``m = f 2**e`` with ``f`` in [sqrt(1/2), sqrt(2)) (``e`` and ``f`` read from the bits of the float64
    of ``m``, which is exact: an integer conversion and three bit operations, all of them vectorised),
    ``log f = 2 atanh s = 2 (s + s^3/3 + ... + s^23/23)`` with
    ``s = (f - 1)/(f + 1)``, |s| <= 0.172 (truncation < 1e-19 relative), ``(e - e0) ln 2`` in two
    parts; error within a few ulp (tested against libm)."""
    bits = _float64_bits(np.float64(np.int64(m)))
    e = (bits >> 52) - 1023
    f = _bits_float64((bits & _MANTISSA) | _EXPONENT_OF_ONE)  # m 2**-e, in [1, 2), exact
    big = f > _SQRT2
    f = f * 0.5 if big else f
    e = e + 1 if big else e
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    p = ((((((((((_A0 * z + _A1) * z + _A2) * z + _A3) * z + _A4) * z + _A5) * z + _A6) * z + _A7) * z + _A8) * z
         + _A9) * z + _A10)
    s2 = s + s
    k = np.float64(e - e0)
    return -(k * LN2_HI + (k * LN2_LO + (s2 + s2 * (z * p))))


@njit(inline="always")
def philox_tail_m64_nb(hi, lo):
    """The exact integer ``2**54 min(u, 1 - u)`` of the float64 Philox draw with words (hi, lo)."""
    k2 = np.int64((((hi << _S32) | lo) >> _S11)) * 2 + 1
    return k2 if k2 < _HALF_K2 else 2 * _HALF_K2 - k2


@njit(inline="always")
def philox_tail_m32_nb(w):
    """The exact integer ``2**33 min(u, 1 - u)`` of the float32 Philox draw of word ``w``."""
    k2 = np.int64(w) * 2 + 1
    return k2 if k2 < _TWO32 else 2 * _TWO32 - k2


@njit(inline="always")
def philox_tail_s64_nb(hi, lo):
    """``s = -log(min(u, 1 - u))`` of the float64 Philox draw with words (hi, lo), from the exact integer
    ``2**54 min(u, 1 - u)`` (libm-free, so every backend gives the same bits)."""
    k2 = np.int64((((hi << _S32) | lo) >> _S11)) * 2 + 1
    m2 = k2 if k2 < _HALF_K2 else 2 * _HALF_K2 - k2
    return neglog_int_nb(m2, 54)


@njit(inline="always")
def philox_tail_s32_nb(w):
    """``s = -log(min(u, 1 - u))`` of the float32 Philox draw of word ``w``, rounded once to float32."""
    k2 = np.int64(w) * 2 + 1
    m2 = k2 if k2 < _TWO32 else 2 * _TWO32 - k2
    return np.float32(neglog_int_nb(m2, 33))


@njit
def _philox_normals_nb(seed, trajs, counter, single, out):
    k0 = seed & _M32
    k1 = seed >> _S32
    per = 4 if single else 2
    blk = counter // _U(per)
    r = int(counter % _U(per))
    for i in range(trajs.size):
        w = philox4x32_nb(blk & _M32, blk >> _S32, trajs[i] & _M32, trajs[i] >> _S32, k0, k1)
        if single:
            q = philox32_q_nb(w[r])
            out[i] = (ndtri32_central_nb(q) if abs(q) <= _CENTRAL_F32 else
                      ndtri32_tail_finish_nb(philox32_n2_nb(w[r]), philox_tail_s32_nb(w[r])))
        else:
            u = philox_uniform_nb(w[2 * r], w[2 * r + 1])
            out[i] = (ndtri_central_nb(u) if abs(u - 0.5) <= AS241_CENTRAL_BOUND else
                      ndtri_tail_finish_nb(u, philox_tail_s64_nb(w[2 * r], w[2 * r + 1])))


@njit
def _popcount64(z):
    c = 0
    while z:
        z &= z - _ONE
        c += 1
    return c


@njit
def _stream_key_nb(seed, traj):
    base = mix64_nb(seed + GOLDEN)
    key = mix64_nb(base + (_U(traj) + _ONE) * GOLDEN)
    # SplittableRandom.mixGamma: an odd increment with enough 01/10 transitions.
    g = key + GOLDEN
    g = (g ^ (g >> _S33)) * _GM1
    g = (g ^ (g >> _S33)) * _GM2
    g = (g ^ (g >> _S33)) | _ONE
    if _popcount64(g ^ (g >> _ONE)) < 24:
        g ^= _ALT
    return key, g


@njit
def _stream_keys_nb(seed, first, n, keys, gammas):
    for i in range(n):
        k, g = _stream_key_nb(seed, first + i)
        keys[i] = k
        gammas[i] = g


# ---------------------------------------------------------------- NumPy (array) versions
def as_seed(seed) -> np.uint64:
    """The seed as uint64; ``ParameterError`` unless it is an integer in [0, 2**64 - 1]."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise ParameterError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")
    return _U(int(seed))


def stream_keys(seed, n_traj: int, first: int = 0, rng: str = "splitmix") -> tuple[np.ndarray, np.ndarray]:
    """Stream identifiers ``(keys, gammas)`` of trajectories ``first .. first + n_traj - 1`` for ``seed``:
    key and Weyl increment for ``rng="splitmix"``; the seed and the trajectory index for ``"philox"``."""
    if check_rng(rng) == "philox":
        return np.full(n_traj, as_seed(seed), dtype=np.uint64), np.arange(first, first + n_traj, dtype=np.uint64)
    keys = np.empty(n_traj, dtype=np.uint64)
    gammas = np.empty(n_traj, dtype=np.uint64)
    _stream_keys_nb(as_seed(seed), _U(first), n_traj, keys, gammas)
    return keys, gammas


def mix64(z: np.ndarray) -> np.ndarray:
    """Vectorised ``mix64`` on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniforms(keys: np.ndarray, gammas: np.ndarray, counter: int, rng: str = "splitmix") -> np.ndarray:
    """Draw ``counter`` of every stream, as uniforms in (0, 1) (float64 variant of family ``rng``)."""
    if check_rng(rng) == "philox":
        return _philox_uniforms(keys, gammas, counter)
    with np.errstate(over="ignore"):
        w = mix64(keys + (_U(counter) + _ONE) * gammas)
    return ((w >> _S11).astype(np.float64) + 0.5) * _TWO_M53



# ---------------------------------------------------------------- Philox (NumPy)
def philox4x32(counter, key) -> np.ndarray:
    """Philox4x32-10 (Random123): ``counter`` uint32 of shape (..., 4), ``key`` uint32 of shape (..., 2)
    (broadcast against each other), four uint32 words of shape (..., 4) per counter.

    >>> w = philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.uint32))  # Random123 kat_vectors
    >>> w.dtype, [f"{x:08x}" for x in w]
    (dtype('uint32'), ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8'])
    """
    c, k = np.asarray(counter), np.asarray(key)
    for name, a, n in (("counter", c, 4), ("key", k, 2)):
        if a.dtype != np.uint32 or a.ndim == 0 or a.shape[-1] != n:
            raise ParameterError(f"{name} must be a uint32 array of shape (..., {n}), got {a.dtype} {a.shape}")
    c0, c1, c2, c3 = (c[..., i].astype(np.uint64) for i in range(4))
    k0, k1 = (k[..., i].astype(np.uint64) for i in range(2))
    for r in range(10):
        if r:
            k0 = (k0 + _PW0) & _M32
            k1 = (k1 + _PW1) & _M32
        p0, p1 = c0 * _PM0, c2 * _PM1
        c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ k0, p1 & _M32, (p0 >> _S32) ^ c3 ^ k1, p0 & _M32
    return np.stack(np.broadcast_arrays(c0, c1, c2, c3), axis=-1).astype(np.uint32)


def philox_block(seed, trajs: np.ndarray, block: int) -> np.ndarray:
    """The four words (uint32, shape (n, 4)) of block ``block`` of trajectories ``trajs`` for ``seed``."""
    s, b = int(as_seed(seed)), int(block)
    t = np.asarray(trajs, dtype=np.uint64)
    ctr = np.empty(t.shape + (4,), dtype=np.uint32)
    ctr[..., 0], ctr[..., 1] = b & 0xFFFFFFFF, b >> 32
    ctr[..., 2], ctr[..., 3] = t & _M32, t >> _S32
    return philox4x32(ctr, np.array([s & 0xFFFFFFFF, s >> 32], dtype=np.uint32))


def _philox_uniforms(seeds, trajs, counter: int) -> np.ndarray:
    seed = _single_seed(seeds)
    c = int(counter)
    w = philox_block(seed, trajs, c // 2).astype(np.uint64)
    r = c % 2
    word = (w[..., 2 * r] << _S32) | w[..., 2 * r + 1]
    return ((word >> _S11).astype(np.float64) + 0.5) * _TWO_M53


def _single_seed(seeds) -> int:
    seeds = np.asarray(seeds, dtype=np.uint64)
    if seeds.size and np.any(seeds != seeds.flat[0]):
        raise ParameterError("a Philox run has one seed for every trajectory (keys must all be equal)")
    return int(seeds.flat[0]) if seeds.size else 0


def _horner8_np(c, r):
    acc = np.full_like(r, c[0])
    for coef in c[1:]:
        acc = acc * r + coef
    return acc


def ndtri_as241(u: np.ndarray) -> np.ndarray:
    """Vectorised AS241 inverse normal CDF; the same operations, in the same order, as ``ndtri_nb``."""
    u = np.asarray(u, dtype=np.float64)
    q = u - 0.5
    r = 0.180625 - q * q
    out = q * _horner8_np(_A, r) / _horner8_np(_B, r)
    tail = np.abs(q) > AS241_CENTRAL_BOUND
    if np.any(tail):
        ut, qt = u[tail], q[tail]
        rt = np.sqrt(-np.log(np.where(qt <= 0.0, ut, 1.0 - ut)))
        near = rt <= 5.0
        xt = np.empty_like(rt)
        a = rt[near] - 1.6
        xt[near] = _horner8_np(_C, a) / _horner8_np(_D, a)
        b = rt[~near] - 5.0
        xt[~near] = _horner8_np(_E, b) / _horner8_np(_F, b)
        out[tail] = np.where(qt < 0.0, -xt, xt)
    return out


def neglog_int(m, e0: int) -> np.ndarray:
    """`neglog_int_nb` on int64 arrays: the same operations, so the same bits.

    >>> float(neglog_int(np.array([1]), 1)[0]) == float(np.log(2.0))
    True
    """
    bits = np.asarray(m, dtype=np.int64).astype(np.float64).view(np.int64)  # exact: m < 2**53
    e = (bits >> 52) - 1023
    f = ((bits & _MANTISSA) | _EXPONENT_OF_ONE).view(np.float64)  # m 2**-e, in [1, 2), exact
    big = f > _SQRT2
    f = np.where(big, f * 0.5, f)
    e = e + big
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    p = np.full_like(s, _ATANH[0])
    for c in _ATANH[1:]:
        p = p * z + c
    s2 = s + s
    k = (e - e0).astype(np.float64)
    return -(k * LN2_HI + (k * LN2_LO + (s2 + s2 * (z * p))))


def _tail_finish(u: np.ndarray, s: np.ndarray) -> np.ndarray:
    """`ndtri_tail_finish_nb` on arrays (the same operations)."""
    r = np.sqrt(s)
    a, b = r - 1.6, r - 5.0
    x = np.where(r <= 5.0, _horner8_np(_C, a) / _horner8_np(_D, a), _horner8_np(_E, b) / _horner8_np(_F, b))
    return np.where(u - 0.5 < 0.0, -x, x)


def _philox_normals64(seeds, trajs, counter: int) -> np.ndarray:
    """Float64 Philox normals: AS241's central branch as `ndtri_as241`, its tails from `neglog_int`."""
    c = int(counter)
    w = philox_block(_single_seed(seeds), trajs, c // 2).astype(np.uint64)
    r = c % 2
    word = (w[..., 2 * r] << _S32) | w[..., 2 * r + 1]
    u = ((word >> _S11).astype(np.float64) + 0.5) * _TWO_M53
    q = u - 0.5
    rr = 0.180625 - q * q
    out = q * _horner8_np(_A, rr) / _horner8_np(_B, rr)
    tail = np.abs(q) > AS241_CENTRAL_BOUND
    if np.any(tail):
        k2 = (word[tail] >> _S11).astype(np.int64) * 2 + 1
        m2 = np.where(k2 < _HALF_K2, k2, 2 * _HALF_K2 - k2)
        out[tail] = _tail_finish(u[tail], neglog_int(m2, 54))
    return out


def normals(keys: np.ndarray, gammas: np.ndarray, counter: int, rng: str = "splitmix") -> np.ndarray:
    """Draw ``counter`` of every stream as standard normals (float64 variant of family ``rng``)."""
    if check_rng(rng) == "philox":
        return _philox_normals64(keys, gammas, counter)
    return ndtri_as241(uniforms(keys, gammas, counter, rng))


def normals32(keys: np.ndarray, gammas: np.ndarray, counter: int, rng: str = "splitmix") -> np.ndarray:
    """Draw ``counter`` of every stream as float32 normals of the float32 variant of family ``rng``."""
    out = np.empty(np.shape(keys), dtype=np.float32)
    if check_rng(rng) == "philox":
        _philox_normals_nb(_U(_single_seed(keys)), np.ascontiguousarray(gammas, dtype=np.uint64), _U(counter),
                           True, out)
        return out
    _normals32_nb(np.ascontiguousarray(keys, dtype=np.uint64), np.ascontiguousarray(gammas, dtype=np.uint64),
                  _U(counter), out)
    return out
