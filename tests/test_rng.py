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


# ------------------------------------------------------------------ Philox4x32-10 family
M32 = 2**32 - 1

#: Random123 kat_vectors, philox4x32_10: (counter, key) -> output, all as 32-bit words
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_py(ctr, key):
    """Philox4x32-10 in Python integers (Salmon et al. 2011, Fig. 2): an oracle independent of NumPy."""
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
    return tuple(c)


@njit
def _philox_many_nb(ctr, key):
    out = np.empty(ctr.shape, dtype=np.uint64)
    for i in range(ctr.shape[0]):
        w = _rng.philox4x32_nb(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
        for j in range(4):
            out[i, j] = w[j]
    return out


def test_philox_known_answers_numpy_numba_and_oracle():
    ctr = np.array([c for c, _, _ in PHILOX_KAT], dtype=np.uint32)
    key = np.array([k for _, k, _ in PHILOX_KAT], dtype=np.uint32)
    want = np.array([w for _, _, w in PHILOX_KAT], dtype=np.uint32)
    np.testing.assert_array_equal(_rng.philox4x32(ctr, key), want)
    np.testing.assert_array_equal(_philox_many_nb(ctr.astype(np.uint64), key.astype(np.uint64)), want)
    assert [philox_py(c, k) for c, k, _ in PHILOX_KAT] == [w for _, _, w in PHILOX_KAT]


@njit
def _philox_many_w32_nb(ctr, key):
    # the engine kernels' form: uint32 words in and out, in a loop LLVM vectorises
    out = np.empty(ctr.shape, dtype=np.uint32)
    for i in range(ctr.shape[0]):
        w0, w1, w2, w3 = _rng.philox4x32_w32_nb(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3], key[i, 0], key[i, 1])
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = w0, w1, w2, w3
    return out


def test_philox_uint32_form_matches_the_known_answers_and_the_oracle():
    ctr = np.array([c for c, _, _ in PHILOX_KAT], dtype=np.uint32)
    key = np.array([k for _, k, _ in PHILOX_KAT], dtype=np.uint32)
    want = np.array([w for _, _, w in PHILOX_KAT], dtype=np.uint32)
    got = _philox_many_w32_nb(ctr, key)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, want)
    g = np.random.default_rng(1)  # 1000 random counters and keys, with words at 0 and 2**32 - 1 mixed in
    ctr = g.integers(0, 2**32, (1000, 4), dtype=np.uint64).astype(np.uint32)
    key = g.integers(0, 2**32, (1000, 2), dtype=np.uint64).astype(np.uint32)
    ctr[::7] = np.uint32(M32)
    key[::11] = 0
    got = _philox_many_w32_nb(ctr, key)
    assert [tuple(int(x) for x in row) for row in got] == [
        philox_py(tuple(map(int, c)), tuple(map(int, k))) for c, k in zip(ctr, key)]


def test_philox_random_inputs_match_the_oracle_and_broadcast():
    g = np.random.default_rng(0)
    ctr = g.integers(0, 2**32, (300, 4), dtype=np.uint64).astype(np.uint32)
    key = g.integers(0, 2**32, (300, 2), dtype=np.uint64).astype(np.uint32)
    got = _rng.philox4x32(ctr, key)
    assert got.shape == (300, 4) and got.dtype == np.uint32
    assert [tuple(int(x) for x in row) for row in got] == [
        philox_py(tuple(map(int, c)), tuple(map(int, k))) for c, k in zip(ctr, key)]
    np.testing.assert_array_equal(_philox_many_nb(ctr.astype(np.uint64), key.astype(np.uint64)), got)
    one_key = _rng.philox4x32(ctr.reshape(3, 100, 4), key[0])  # (..., 4) against (2,)
    assert one_key.shape == (3, 100, 4)
    assert tuple(int(x) for x in one_key[2, 5]) == philox_py(tuple(map(int, ctr[205])), tuple(map(int, key[0])))


def test_philox_matches_randomgen():
    randomgen = pytest.importorskip("randomgen")  # an independent C implementation (Random123-derived)
    g = np.random.default_rng(1)
    for _ in range(20):
        ctr = [int(x) for x in g.integers(0, 2**32, 4)]
        key = [int(x) for x in g.integers(0, 2**32, 2)]
        ci = sum(w << (32 * i) for i, w in enumerate(ctr))
        # randomgen advances its counter before each block: start one below
        bg = randomgen.Philox(key=key[0] | key[1] << 32, counter=(ci - 1) % 2**128, number=4, width=32)
        np.testing.assert_array_equal(bg.random_raw(4).astype(np.uint32),
                                      _rng.philox4x32(np.array(ctr, np.uint32), np.array(key, np.uint32)))


def test_philox_bad_shapes():
    with pytest.raises(ParameterError, match="counter must be a uint32 array of shape"):
        _rng.philox4x32(np.zeros(3, np.uint32), np.zeros(2, np.uint32))
    with pytest.raises(ParameterError, match="key must be a uint32 array of shape"):
        _rng.philox4x32(np.zeros(4, np.uint32), np.zeros(2, np.int64))
    with pytest.raises(ParameterError, match="^rng must be one of"):
        _rng.stream_keys(0, 3, rng="mt19937")


@pytest.mark.parametrize("seed", [0, 2**64 - 1, 0x0123456789ABCDEF])
def test_philox_draws_follow_the_documented_layout(seed):
    """Draw c of trajectory i: key = seed, counter = (b, traj) with b = c // 4 (float32: word c % 4)
    or c // 2 (float64: words 2 (c % 2) [high] and 2 (c % 2) + 1 [low])."""
    first = 2**33 + 5  # trajectory indices above 2**32 use the fourth counter word
    keys, trajs = _rng.stream_keys(seed, 40, first=first, rng="philox")
    assert np.all(keys == seed) and np.array_equal(trajs, np.arange(first, first + 40, dtype=np.uint64))
    for c in (0, 1, 2, 3, 7, 2**40 + 3):
        u64 = _rng.uniforms(keys, trajs, c, rng="philox")
        z32 = _rng.normals32(keys, trajs, c, rng="philox")
        for i in (0, 17, 39):
            t = first + i
            kk = (seed & M32, seed >> 32)
            w = philox_py(((c // 2) & M32, (c // 2) >> 32, t & M32, t >> 32), kk)
            word = w[2 * (c % 2)] << 32 | w[2 * (c % 2) + 1]
            assert u64[i] == ((word >> 11) + 0.5) * 2.0**-53
            w32 = philox_py(((c // 4) & M32, (c // 4) >> 32, t & M32, t >> 32), kk)[c % 4]
            u32 = (w32 + 0.5) * 2.0**-32
            # float32 AS241 of u (exactly representable in float64): within a few float32 ulps
            ref = statistics.NormalDist().inv_cdf(u32)
            assert abs(z32[i] - ref) <= 8 * np.finfo(np.float32).eps * abs(ref)
    # float64: AS241 of u in the central branch; the tails from the exact min(u, 1 - u) = m 2**-54
    # (u itself is rounded above 1/2) with -log from `neglog_int`: within a few ulp of AS241 of it
    u = _rng.uniforms(keys, trajs, 5, rng="philox")
    z = _rng.normals(keys, trajs, 5, rng="philox")
    central = np.abs(u - 0.5) <= _rng.AS241_CENTRAL_BOUND
    assert central.any() and (~central).any()
    np.testing.assert_array_equal(z[central], _rng.ndtri_as241(u)[central])
    w = _rng.philox_block(seed, trajs, 2).astype(object)  # draw 5: block 2, words 2 (high) and 3
    k2 = np.array([(int(a) << 32 | int(b)) >> 11 for a, b in zip(w[:, 2], w[:, 3])], dtype=object) * 2 + 1
    m = np.array([min(k, 2**54 - k) for k in k2], dtype=np.float64)  # < 2**51: exact
    ref = np.where(u < 0.5, 1.0, -1.0) * _rng.ndtri_as241(m * 2.0**-54)
    np.testing.assert_allclose(z[~central], ref[~central], rtol=8 * np.finfo(float).eps, atol=0)


def test_neglog_int_within_an_ulp_of_libm_and_the_same_bits_in_numpy_and_numba():
    """-log(m 2**-e0) without libm (the Philox tails): measured <= 1 ulp from NumPy's log of the exact
    argument (itself < 1 ulp); bound 2 ulp.  NumPy and Numba versions: identical bits."""
    @njit
    def nb(ms, e0):
        out = np.empty(ms.size)
        for i in range(ms.size):
            out[i] = _rng.neglog_int_nb(ms[i], e0)
        return out

    g = np.random.default_rng(4)
    ms = np.concatenate([np.arange(1, 3000), [2**k + d for k in range(1, 53) for d in (-1, 0, 1)],
                         g.integers(1, 2**53, 10**6), 2**53 - g.integers(1, 2**20, 1000)]).astype(np.int64)
    ms = ms[(ms >= 1) & (ms < 2**53)]
    for e0 in (33, 54):
        a = nb(ms, e0)
        np.testing.assert_array_equal(a, _rng.neglog_int(ms, e0))
        ref = -np.log(ms.astype(np.float64) * 2.0**-e0)  # exact argument: a power-of-2 scaling
        ok = ref != 0
        assert np.max(np.abs(a - ref)[ok] / np.spacing(np.abs(ref[ok]))) <= 2.0


def test_rng_defaults_and_scheme_names():
    assert _rng.default_rng("float32") == "philox" and _rng.default_rng("float64") == "splitmix"
    names = {_rng.rng_scheme(d, r) for d in ("float64", "float32") for r in _rng.RNGS}
    assert names == {_rng.RNG_SCHEME, _rng.RNG_SCHEME_F32, _rng.RNG_SCHEME_PHILOX, _rng.RNG_SCHEME_PHILOX_F32}
    assert _rng.rng_scheme() == "sdeeos-splitmix64-ctr-as241/1"  # the name every existing dataset carries


# Statistical quality of the Philox streams.  Each test is a two-sided test at false-alarm rate
# 1e-4 with fixed seeds (deterministic: it either passes for these streams or points at a defect).
ALPHA = 1e-4
Z_ALPHA = stats.norm.isf(ALPHA / 2)  # 3.89


def _philox_block_normals(dtype, n_traj, n_draws, seed=2026):
    keys, trajs = _rng.stream_keys(seed, n_traj, rng="philox")
    draw = _rng.normals32 if dtype == "float32" else _rng.normals
    return np.stack([draw(keys, trajs, c, rng="philox") for c in range(n_draws)])  # (draw, traj)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_philox_chi_square_of_uniform_bins(dtype):
    """Phi(z) of 10^6 normals in 1000 equal bins: chi-square with 999 degrees of freedom."""
    z = _philox_block_normals(dtype, 2000, 500).astype(np.float64).ravel()
    counts = np.bincount(np.minimum((stats.norm.cdf(z) * 1000).astype(np.int64), 999), minlength=1000)
    chi2 = np.sum((counts - z.size / 1000) ** 2 / (z.size / 1000))
    p = stats.chi2.sf(chi2, 999)
    assert ALPHA / 2 < p < 1 - ALPHA / 2, (chi2, p)  # too good a fit is a defect too


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_philox_serial_correlation_across_draws_and_trajectories(dtype):
    """Lag-1 correlation along the draw counter (inside and across Philox blocks) and between
    neighbouring trajectories at the same draw: sqrt(n) r is N(0, 1) under independence."""
    z = _philox_block_normals(dtype, 4000, 64).astype(np.float64)
    for a, b in ((z[1:], z[:-1]), (z[:, 1:], z[:, :-1]), (z[4:], z[:-4]), (z[1:, 1:], z[:-1, :-1])):
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) * np.sqrt(a.size) < Z_ALPHA, r
    # the four words of one block: correlation of word j with word j+1 over blocks
    per = 4 if dtype == "float32" else 2
    blocks = z[: 64 - 64 % per].reshape(-1, per, z.shape[1])
    for j in range(per - 1):
        r = np.corrcoef(blocks[:, j].ravel(), blocks[:, j + 1].ravel())[0, 1]
        assert abs(r) * np.sqrt(blocks[:, j].size) < Z_ALPHA, (j, r)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_philox_tail_mass_at_4_sigma_sampled(dtype):
    """The count of |z| > 4 in 4e6 draws is Poisson with mean 4e6 * 2 Phi(-4) = 253."""
    z = _philox_block_normals(dtype, 20_000, 200, seed=7).ravel()
    expected = z.size * 2 * stats.norm.sf(4.0)
    k = int(np.sum(np.abs(z) > 4.0))
    p = 2 * min(stats.poisson.cdf(k, expected), stats.poisson.sf(k - 1, expected))
    assert p > ALPHA, (k, expected)


def test_philox_float32_tail_mass_at_4_and_6_sigma_exact():
    """The float32 normal is a monotone map of the 32-bit word: count exactly the words beyond 4 and 6
    sigma (bisection over all 2**32 words) and compare with 2**32 Phi(-s), which the grid of u can
    match to one word per side."""
    keys, trajs = _rng.stream_keys(0, 1, rng="philox")

    @njit
    def z_of(w):  # the scheme's float32 normal of word w (as the kernels compute it)
        w = np.uint64(w)
        q = _rng.philox32_q_nb(w)
        if abs(q) <= np.float32(0.425):
            return _rng.ndtri32_central_nb(q)
        return _rng.ndtri32_tail_finish_nb(_rng.philox32_n2_nb(w), _rng.philox_tail_s32_nb(w))

    # z_of is the scheme: it reproduces normals32 on the words of a block
    words = _rng.philox_block(0, trajs, 0)[0]
    assert [float(z_of(int(x))) for x in words] == [float(_rng.normals32(keys, trajs, c, rng="philox")[0]) for c in range(4)]

    def first_word_above(x):  # smallest w with z(w) > x
        lo, hi = 0, 2**32 - 1
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if z_of(mid) > x else (mid + 1, hi)
        return lo

    for s in (4.0, 6.0):
        upper = 2**32 - first_word_above(s)
        lower = first_word_above(-s)  # words 0 .. lower - 1 have z <= -s (up to the boundary word)
        want = 2**32 * stats.norm.sf(s)
        assert abs(upper - want) <= 1 and abs(lower - want) <= 1, (s, upper, lower, want)
    assert z_of(0) < -6.3 and z_of(2**32 - 1) > 6.3  # the 32-bit grid ends at |z| = 6.34


def test_philox_float32_q_from_float64_equals_the_exact_integer_route():
    """The kernel's q (word -> float64 -> float32) is the correctly rounded u - 1/2, as the integer n2 route."""
    @njit
    def both(ws):
        a = np.empty(ws.size, np.float32)
        b = np.empty(ws.size, np.float32)
        for i in range(ws.size):
            a[i] = _rng.philox32_q_nb(ws[i])
            b[i] = _rng.ndtri32_q_nb(_rng.philox32_n2_nb(ws[i]))
        return a, b

    edge = [0, 1, 2, 2**31 - 2, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 2, 2**32 - 1]
    edge += [2**31 + s * 2**k + d for k in range(8, 31) for s in (-1, 1) for d in (-1, 0, 1)]  # rounding ties
    ws = np.concatenate([np.array(edge, np.uint64), np.random.default_rng(3).integers(0, 2**32, 10**6, dtype=np.uint64)])
    a, b = both(ws)
    np.testing.assert_array_equal(a, b)
    u = (ws.astype(np.float64) + 0.5) * 2.0**-32
    np.testing.assert_array_equal(a, (u - 0.5).astype(np.float32))  # NumPy's own rounding of the exact value


def test_philox_float64_far_tail_same_bits_in_numpy_and_numba():
    """AS241's far branch (min(u, 1 - u) < e^-25, p ~ 3e-11 per draw: no sampled test reaches it):
    the NumPy and Numba tails agree bit for bit there too, and with AS241 of the exact argument."""
    @njit
    def nb(m, upper):
        out = np.empty(m.size)
        for i in range(m.size):
            u = 1.0 - m[i] * 2.0**-54 if upper[i] else m[i] * 2.0**-54  # only its side of 1/2 matters
            out[i] = _rng.ndtri_tail_finish_nb(u, _rng.neglog_int_nb(m[i], 54))
        return out

    m = np.concatenate([np.arange(1, 2000), 2 * np.random.default_rng(5).integers(0, 2**35, 2000) + 1]).astype(np.int64)
    upper = np.arange(m.size) % 2 == 1
    u = np.where(upper, 1.0 - m * 2.0**-54, m * 2.0**-54)
    got = nb(m, upper)
    np.testing.assert_array_equal(got, _rng._tail_finish(u, _rng.neglog_int(m, 54)))
    ref = np.where(upper, -1.0, 1.0) * _rng.ndtri_as241(m * 2.0**-54)
    assert np.sqrt(_rng.neglog_int(m, 54)).max() > 5.0  # the far branch is exercised
    np.testing.assert_allclose(got, ref, rtol=8 * np.finfo(float).eps, atol=0)


@njit
def _tail_by_lane_nb(u, s, single):
    out = np.empty(s.size, dtype=s.dtype)
    for i in range(s.size):
        out[i] = _rng.ndtri32_tail_finish_nb(u[i], s[i]) if single else _rng.ndtri_tail_finish_nb(u[i], s[i])
    return out


@njit
def _tail_pass_nb(u, s, n, single):
    out = np.full(s.size, np.nan, dtype=s.dtype)
    if single:
        _rng.ndtri32_tail_pass_nb(u, s, out, n)
    else:
        _rng.ndtri_tail_pass_nb(u, s, out, n)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tail_pass_equals_the_lane_by_lane_tail_with_and_without_far_lanes(dtype):
    """The kernels' tail pass (near branch for all lanes, the far one only in a pass that needs it) gives
    the bits of `ndtri_tail_finish_nb` on every lane: with no far lane, with one (at the boundary
    r = 5, where sqrt(25 + 1 ulp) rounds to 5: still the near branch), and with many."""
    real = np.dtype(dtype).type
    g = np.random.default_rng(2)
    near = g.uniform(1.7, 24.9, 200).astype(dtype)  # s = -log(min(u, 1 - u)) of tail lanes, r <= 5
    edge = np.array([25.0, np.nextafter(real(25.0), real(30)), np.nextafter(real(26.0), real(30))], dtype=dtype)
    far = g.uniform(25.0, 37.4, 50).astype(dtype)  # up to the float64 grid's end, -log(2**-54)
    single = dtype == "float32"
    for s in (near, np.concatenate([near, edge]), np.concatenate([near, far])):
        u = np.where(np.arange(s.size) % 2 == 0, 1e-3, 1.0 - 1e-3)  # both sides of 1/2
        sign = (u - 0.5).astype(dtype) if single else u  # the float32 pass takes the draws' signs
        want = _tail_by_lane_nb(sign, s, single)
        np.testing.assert_array_equal(_tail_pass_nb(sign, s, s.size, single), want)
        got = _tail_pass_nb(sign, s, 7, single)  # only the first n lanes are written
        np.testing.assert_array_equal(got[:7], want[:7])
        assert np.isnan(got[7:]).all()
    assert np.sqrt(far).min() > 5.0 and np.sqrt(near).max() <= 5.0


def test_uniform_at_a_running_weyl_sum_is_uniform_nb():
    """The kernels keep key + (c + 1) gamma and add gamma after each draw: the same words as
    `uniform_nb` and `ndtri32_word_nb` at every counter, across 2**64 wrap-around."""
    keys, gammas = _rng.stream_keys(11, 64)

    @njit
    def running(keys, gammas, c0, n):
        u = np.empty((n, keys.size))
        n2 = np.empty((n, keys.size), dtype=np.int64)
        weyl = keys + np.uint64(c0 + 1) * gammas
        for c in range(n):
            for i in range(keys.size):
                u[c, i] = _rng.uniform_at_nb(weyl[i])
                n2[c, i] = _rng.ndtri32_word_at_nb(weyl[i])
                weyl[i] += gammas[i]
        return u, n2

    @njit
    def direct(keys, gammas, c0, n):
        u = np.empty((n, keys.size))
        n2 = np.empty((n, keys.size), dtype=np.int64)
        for c in range(n):
            for i in range(keys.size):
                u[c, i] = _rng.uniform_nb(keys[i], gammas[i], c0 + c)
                n2[c, i] = _rng.ndtri32_word_nb(keys[i], gammas[i], c0 + c)
        return u, n2

    for c0 in (0, 5, 2**40 + 3):
        for a, b in zip(running(keys, gammas, c0, 300), direct(keys, gammas, c0, 300)):
            np.testing.assert_array_equal(a, b)
