r"""The one random-number scheme of sdeeos: counter-based, keyed by (seed, trajectory, draw).

Scheme ``sdeeos-splitmix64-ctr-as241/1``:

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

``mix64`` is Stafford's variant 13 (the SplitMix64 finaliser).  Every backend implements the same
arithmetic; the CPU ones agree bit for bit (no FMA contraction), a GPU may differ in the last bit of
``log`` in the tail branch (|u - 1/2| > 0.425).

The functions below come in two forms: ``*_nb`` (Numba, scalar, used inside compiled kernels) and
NumPy array versions (used by the reference backend and tests).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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
]

RNG_SCHEME = "sdeeos-splitmix64-ctr-as241/1"

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
def uniform_nb(key, gamma, counter):
    """Uniform in (0, 1) for draw ``counter`` of the stream (key, gamma)."""
    w = mix64_nb(key + (_U(counter) + _ONE) * gamma)
    return (float(w >> _S11) + 0.5) * _TWO_M53


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
    if r <= 5.0:
        r = r - 1.6
        x = _horner8(_C, r) / _horner8(_D, r)
    else:
        r = r - 5.0
        x = _horner8(_E, r) / _horner8(_F, r)
    return -x if q < 0.0 else x


@njit(inline="always")
def ndtri_nb(u):
    if abs(u - 0.5) <= AS241_CENTRAL_BOUND:
        return ndtri_central_nb(u)
    return ndtri_tail_nb(u)


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


def stream_keys(seed, n_traj: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keys and increments of trajectories ``first .. first + n_traj - 1`` for ``seed``."""
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


def uniforms(keys: np.ndarray, gammas: np.ndarray, counter: int) -> np.ndarray:
    """Draw ``counter`` of every stream, as uniforms in (0, 1)."""
    with np.errstate(over="ignore"):
        w = mix64(keys + (_U(counter) + _ONE) * gammas)
    return ((w >> _S11).astype(np.float64) + 0.5) * _TWO_M53


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


def normals(keys: np.ndarray, gammas: np.ndarray, counter: int) -> np.ndarray:
    """Draw ``counter`` of every stream as standard normals."""
    return ndtri_as241(uniforms(keys, gammas, counter))
