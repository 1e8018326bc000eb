"""Curvature tools against exact Hessians of tiny float64 networks (see conftest for tolerances)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos.torch import (  # noqa: E402
    FlatParams,
    HessianOperator,
    SharpnessTracker,
    build_model,
    hvp,
    lanczos_top,
    loss_function,
    power_iteration_top,
)

HESS_RTOL = 1e-10  # float64 round-off with a ~10^3 margin (see conftest.py)

CASES = [("mlp-tanh", "mse", (5,)), ("mlp-relu", "ce", (5,)), ("cnn-tanh", "mse", (8,)),
         ("cnn-tanh", "ce", (4, 4))]


@pytest.mark.parametrize("model_name,loss,shape", CASES)
@pytest.mark.parametrize("method", ["autograd", "func"])
def test_hvp_matches_exact_hessian(model_name, loss, shape, method, tiny, hessian_of):
    flat, x, t, _, theta = tiny(model_name, loss, input_shape=shape)
    fn = loss_function(flat, x, t, loss)
    H = hessian_of(fn, theta)
    assert torch.allclose(H, H.T, rtol=0, atol=HESS_RTOL * torch.linalg.norm(H))
    op = HessianOperator(fn, theta, method=method)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        err = torch.linalg.vector_norm(op(v) - H @ v)
        assert err <= HESS_RTOL * torch.linalg.norm(H) * torch.linalg.vector_norm(v)
    assert op.n_hvp == 3
    # the stateless helper agrees too
    v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    assert torch.linalg.vector_norm(hvp(fn, theta, v) - H @ v) <= HESS_RTOL * torch.linalg.norm(H) * torch.linalg.vector_norm(v)


@pytest.mark.parametrize("model_name,loss,shape", CASES)
def test_lanczos_top_matches_eigvalsh(model_name, loss, shape, tiny, hessian_of):
    flat, x, t, _, theta = tiny(model_name, loss, input_shape=shape)
    fn = loss_function(flat, x, t, loss)
    H = hessian_of(fn, theta).numpy()
    evals = np.linalg.eigvalsh(H)
    op = HessianOperator(fn, theta)
    tol = 1e-10
    res = lanczos_top(op, op.dim, tol=tol, generator=torch.Generator().manual_seed(0))
    assert res.converged
    # residual <= tol*|theta| puts an eigenvalue within tol*|theta|; Ritz values never exceed
    # lambda_max, so that eigenvalue is lambda_max once the top of the spectrum is resolved.
    assert abs(res.value - evals[-1]) <= tol * abs(evals[-1]) + 1e3 * np.finfo(float).eps * np.abs(evals).max()
    # the vector is a unit eigenvector
    v = res.vector.numpy()
    assert abs(np.linalg.norm(v) - 1) < 1e-12
    assert np.linalg.norm(H @ v - res.value * v) <= 2 * tol * abs(res.value)
    assert res.n_hvp == op.n_hvp


def test_lanczos_agrees_with_scipy_eigsh(tiny):
    from scipy.sparse.linalg import eigsh

    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=12, width=6)
    fn = loss_function(flat, x, t, "mse")
    op = HessianOperator(fn, theta)
    ref = eigsh(op.as_linear_operator(), k=1, which="LA", tol=1e-13)[0][0]
    res = lanczos_top(HessianOperator(fn, theta), op.dim, tol=1e-11)
    assert abs(res.value - ref) <= 1e-10 * abs(ref)


def _indefinite(dim=30, seed=0):
    """Symmetric matrix whose largest-modulus eigenvalue is negative: -10 < top algebraic 4."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    evals = np.concatenate([[-10.0, 4.0, 3.9], rng.uniform(-3, 3, dim - 3)])
    a = (q * evals) @ q.T
    return torch.as_tensor((a + a.T) / 2), evals


def test_lanczos_finds_largest_algebraic_not_largest_modulus():
    a, evals = _indefinite()
    res = lanczos_top(lambda v: a @ v, a.shape[0], tol=1e-12, generator=torch.Generator().manual_seed(1))
    assert abs(res.value - evals.max()) <= 1e-11 * abs(evals.max())
    pw = power_iteration_top(lambda v: a @ v, a.shape[0], tol=1e-10, max_iter=5000,
                             generator=torch.Generator().manual_seed(1))
    assert abs(pw.value - (-10.0)) < 1e-8  # power iteration returns the largest |lambda|


def test_warm_start_from_eigenvector_stops_after_one_product():
    a, evals = _indefinite()
    w, v = np.linalg.eigh(a.numpy())
    calls = []

    def mv(x):
        calls.append(1)
        return a @ x

    res = lanczos_top(mv, a.shape[0], v0=torch.as_tensor(v[:, -1]), tol=1e-8)
    assert res.n_hvp == 1 == len(calls)
    assert abs(res.value - w[-1]) < 1e-12 * abs(w[-1]) * 100


def test_lanczos_exact_in_dim_steps_on_small_matrix():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=torch.float64))
    res = lanczos_top(lambda v: a @ v, 4, tol=1e-14, v0=torch.ones(4, dtype=torch.float64))
    assert abs(res.value - 5.0) < 1e-13
    assert res.n_hvp <= 4


def test_sharpness_tracker_warm_starts_and_counts(tiny, hessian_of):
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=10, width=5)
    fn = loss_function(flat, x, t, "mse")
    tracker = SharpnessTracker(tol=1e-9)
    first = tracker(fn, theta)
    second = tracker(fn, theta + 1e-9)  # nearly the same point: the warm start is nearly exact
    assert second.n_hvp < first.n_hvp
    assert tracker.total_hvp == first.n_hvp + second.n_hvp
    H = hessian_of(fn, theta).numpy()
    assert abs(first.value - np.linalg.eigvalsh(H)[-1]) <= 1e-8 * abs(first.value)


def test_flat_params_round_trip():
    model = build_model("cnn-relu", (8,), 3, channels=2, dtype=torch.float64)
    flat = FlatParams(model)
    theta = flat.flat()
    assert theta.numel() == sum(p.numel() for p in model.parameters()) == flat.size
    x = torch.randn(4, 8, dtype=torch.float64)
    assert torch.equal(flat.call(theta, x), model(x))
    flat.assign(theta * 2)
    assert torch.equal(flat.flat(), theta * 2)


def test_bad_solver_parameters_are_rejected():
    from sdeeos import ParameterError

    with pytest.raises(ParameterError, match="tol"):
        lanczos_top(lambda v: v, 3, tol=0.0)
    with pytest.raises(ParameterError, match="max_iter"):
        lanczos_top(lambda v: v, 3, max_iter=0)
