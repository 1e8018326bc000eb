"""The counter-based RNG: known answers from an independent big-integer implementation, the
SplitMix64 reference sequence, agreement of the Numba and NumPy versions, and distribution tests."""

import statistics

import numpy as np
import pytest
from numba import njit
from scipy import stats

from sdeeos import _rng
from sdeeos._errors import ParameterError

MASK = 2**64 - 1
G = 0x9E3779B97F4A7C15


def mix64_py(z: int) -> int:
    """Stafford variant 13 in Python integers: an oracle independent of NumPy's uint64 arithmetic."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def stream_key_py(seed: int, traj: int) -> tuple[int, int]:
    base = mix64_py((seed + G) & MASK)
    key = mix64_py((base + (traj + 1) * G) & MASK)
    g = (key + G) & MASK
    g = ((g ^ (g >> 33)) * 0xFF51AFD7ED558CCD) & MASK
    g = ((g ^ (g >> 33)) * 0xC4CEB9FE1A85EC53) & MASK
    g = (g ^ (g >> 33)) | 1
    if bin(g ^ (g >> 1)).count("1") < 24:
        g ^= 0xAAAAAAAAAAAAAAAA
    return key, g


def test_mix64_reproduces_the_splitmix64_reference_sequence():
    # SplitMix64 seeded with 0 (Vigna's reference splitmix64.c): state += G; out = mix64(state).
    reference = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    got = _rng.mix64(np.array([G * (k + 1) & MASK for k in range(3)], dtype=np.uint64))
    assert [int(v) for v in got] == reference


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**64 - 1])
def test_stream_keys_match_big_integer_oracle(seed):
    keys, gammas = _rng.stream_keys(seed, 50)
    for traj in range(50):
        assert (int(keys[traj]), int(gammas[traj])) == stream_key_py(seed, traj)
    assert np.all(gammas & np.uint64(1) == 1), "Weyl increments must be odd"


def test_stream_keys_with_offset_are_a_slice():
    k_all, g_all = _rng.stream_keys(7, 100)
    k_part, g_part = _rng.stream_keys(7, 30, first=60)
    np.testing.assert_array_equal(k_all[60:90], k_part)
    np.testing.assert_array_equal(g_all[60:90], g_part)


def test_uniforms_match_oracle_and_lie_in_open_interval():
    keys, gammas = _rng.stream_keys(3, 20)
    for counter in (0, 1, 2**40 + 5):
        u = _rng.uniforms(keys, gammas, counter)
        for i in range(20):
            word = mix64_py((int(keys[i]) + (counter + 1) * int(gammas[i])) & MASK)
            assert u[i] == ((word >> 11) + 0.5) * 2.0**-53
    assert np.all((u > 0) & (u < 1))


def test_numba_and_numpy_uniforms_are_bit_identical():
    keys, gammas = _rng.stream_keys(11, 1000)

    @njit
    def draw(keys, gammas, counter):
        out = np.empty(keys.size)
        for i in range(keys.size):
            out[i] = _rng.uniform_nb(keys[i], gammas[i], counter)
        return out

    for counter in (0, 17, 123456789):
        np.testing.assert_array_equal(draw(keys, gammas, counter), _rng.uniforms(keys, gammas, counter))


def test_ndtri_matches_python_statistics_as241():
    # CPython's statistics.NormalDist.inv_cdf is also Wichura's AS241 (an independent transcription).
    u = np.random.default_rng(0).random(20000)
    ours = _rng.ndtri_as241(u)
    ref = np.array([statistics.NormalDist().inv_cdf(v) for v in u])
    # same rational functions; the C implementation may fuse multiply-adds: a few ulp
    np.testing.assert_allclose(ours, ref, rtol=4 * np.finfo(float).eps, atol=4 * np.finfo(float).eps)


def test_ndtri_extreme_tails_and_symmetry():
    u = np.array([2.0**-53 * 0.5, 1e-300, 1e-20, 1e-5, 0.5, 1 - 1e-5])
    z = _rng.ndtri_as241(u)
    ref = stats.norm.ppf(u)
    np.testing.assert_allclose(z, ref, rtol=1e-14, atol=1e-15)
    v = np.random.default_rng(1).random(1000)
    np.testing.assert_allclose(_rng.ndtri_as241(v), -_rng.ndtri_as241(1 - v), rtol=0, atol=1e-12)


def test_numba_ndtri_equals_numpy_in_central_branch_and_within_an_ulp_in_tails():
    u = np.random.default_rng(2).random(100000)

    @njit
    def f(u):
        out = np.empty_like(u)
        for i in range(u.size):
            out[i] = _rng.ndtri_nb(u[i])
        return out

    a, b = f(u), _rng.ndtri_as241(u)
    central = np.abs(u - 0.5) <= _rng.AS241_CENTRAL_BOUND
    np.testing.assert_array_equal(a[central], b[central])
    # tails call log: NumPy's SIMD log and libm may differ by 1 ulp, amplified < 4x by sqrt/rational
    np.testing.assert_allclose(a[~central], b[~central], rtol=8 * np.finfo(float).eps)


def test_normals_distribution():
    # 2e5 draws spread over 200 trajectories x 1000 counters; every statistic at the 1e-3 level
    keys, gammas = _rng.stream_keys(2024, 200)
    z = np.concatenate([_rng.normals(keys, gammas, c) for c in range(1000)])
    n = z.size
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 3.3 * np.sqrt(1 / n)
    assert abs(z.var() - 1) < 3.3 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 3.3 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 3.3 * np.sqrt(24 / n)


def test_streams_are_uncorrelated_across_trajectories_and_steps():
    keys, gammas = _rng.stream_keys(5, 4000)
    z = np.stack([_rng.normals(keys, gammas, c) for c in range(50)])  # (step, traj)
    n = z.shape[0] * (z.shape[1] - 1)
    r_traj = np.sum(z[:, 1:] * z[:, :-1]) / n  # neighbouring trajectories, same step
    r_step = np.sum(z[1:] * z[:-1]) / (z[1:].size)  # same trajectory, neighbouring steps
    assert abs(r_traj) < 4 / np.sqrt(n)
    assert abs(r_step) < 4 / np.sqrt(z[1:].size)


def test_bad_seed():
    with pytest.raises(ParameterError, match="seed"):
        _rng.stream_keys(-1, 3)
    with pytest.raises(ParameterError, match="seed"):
        _rng.stream_keys(2**64, 3)
