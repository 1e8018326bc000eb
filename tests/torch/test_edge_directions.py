"""Top-k edge directions against exact Hessians and third-derivative tensors of tiny float64 networks.

Tolerances: float64 round-off (see conftest: HVPs agree with the exact Hessian to ~1e-13 relative);
eigenvalues from a converged solve are within ``tol``·|λ| of an exact eigenvalue by the residual bound
(symmetric operator), and the Ritz value error is ~residual²/gap, far below it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    EigenSolveError,
    HessianOperator,
    edge_constants,
    loss_function,
    per_example_loss_function,
    sharpness_gradient,
    top_k_eigenpairs,
)


def _setup(tiny, model_name="mlp-tanh", loss="mse", **kw):
    flat, x, t, _, theta = tiny(model_name, loss, **kw)
    fn = loss_function(flat, x, t, loss)
    return flat, x, t, theta, fn


@pytest.mark.parametrize("model_name,loss,shape", [("mlp-tanh", "mse", (5,)), ("cnn-tanh", "ce", (8,))])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_matches_exact_hessian(tiny, hessian_of, model_name, loss, shape, k):
    flat, x, t, theta, fn = _setup(tiny, model_name, loss, input_shape=shape)
    H = hessian_of(fn, theta)
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()[:k]
    op = HessianOperator(fn, theta)
    tol = 1e-8
    res = top_k_eigenpairs(op, op.dim, k, tol=tol, max_hvp=op.dim + 10, generator=torch.Generator().manual_seed(0))
    assert res.converged and res.n_hvp == op.n_hvp
    # residual bound: each Ritz value is within its residual of an eigenvalue; the top-k ones are the top-k
    np.testing.assert_allclose(res.values, exact, rtol=0, atol=float(np.max(res.residuals)) + 1e-12 * abs(exact[0]))
    # vectors: orthonormal, and H v = lambda v to the reported residual
    V = res.vectors
    np.testing.assert_allclose((V @ V.T).numpy(), np.eye(k), atol=1e-12)
    r = torch.linalg.vector_norm(V @ H - torch.as_tensor(res.values)[:, None] * V, dim=1).numpy()
    np.testing.assert_allclose(r, res.residuals, rtol=1e-6, atol=1e-12 * abs(exact[0]))
    assert np.all(res.residuals <= tol * np.abs(res.values))


def test_warm_start_converges_in_one_block(tiny):
    _, _, _, theta, fn = _setup(tiny)
    op = HessianOperator(fn, theta)
    first = top_k_eigenpairs(op, op.dim, 3, tol=1e-8, max_hvp=op.dim, generator=torch.Generator().manual_seed(1))
    op2 = HessianOperator(fn, theta)
    again = top_k_eigenpairs(op2, op2.dim, 3, v0=first.vectors, block_size=3, tol=1e-6, max_hvp=op2.dim)
    assert again.n_blocks == 1 and again.n_hvp == 3
    np.testing.assert_allclose(again.values, first.values, rtol=1e-10)


def test_bad_k_and_non_convergence_say_so(tiny):
    _, _, _, theta, fn = _setup(tiny)
    op = HessianOperator(fn, theta)
    for k in (0, op.dim + 1, 2.0):
        with pytest.raises(ParameterError, match=r"^k must be an integer in \[1, "):
            top_k_eigenpairs(op, op.dim, k)
    with pytest.raises(EigenSolveError, match="did not converge in .* residuals/|lambda|") as info:
        top_k_eigenpairs(op, op.dim, 4, tol=1e-12, max_hvp=6, generator=torch.Generator().manual_seed(0))
    assert info.value.residuals.shape == (4,) and np.all(np.isfinite(info.value.residuals))
    res = top_k_eigenpairs(op, op.dim, 4, tol=1e-12, max_hvp=6, generator=torch.Generator().manual_seed(0),
                           raise_on_failure=False)
    assert not res.converged


def _third_derivative(fn, theta):
    """The exact tensor T[a, b, c] = d^3 L / (d theta_a d theta_b d theta_c) (forward over the exact Hessian)."""
    return torch.func.jacfwd(torch.func.hessian(fn))(theta.detach())


def test_eigenvalue_gradients_and_coupling_match_the_exact_tensor(tiny, hessian_of):
    """grad lambda_j = T[u_j, u_j, .] (exact third-derivative tensor), and = the central finite difference
    of the exact j-th eigenvalue (simple eigenvalues; error O(h^2) + round-off/h)."""
    flat, x, t, theta, fn = _setup(tiny)
    H = hessian_of(fn, theta)
    evals, evecs = torch.linalg.eigh(H)
    k = 3
    U = evecs[:, -k:].flip(1).T  # top-k, descending
    T = _third_derivative(fn, theta)
    for j in range(k):
        exact = torch.einsum("abc,a,b->c", T, U[j], U[j])
        mine = sharpness_gradient(fn, theta, U[j])
        np.testing.assert_allclose(mine.numpy(), exact.numpy(), rtol=0, atol=1e-10 * float(exact.abs().max()))
    # finite differences of the j-th eigenvalue along random directions
    gaps = -np.diff(evals.flip(0).numpy()[: k + 1])
    assert np.all(gaps > 1e-3 * float(evals[-1])), "needs simple top eigenvalues"
    g = torch.Generator().manual_seed(3)
    h = 1e-4
    for _ in range(3):
        d = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        d = d / torch.linalg.vector_norm(d)
        lp = torch.linalg.eigvalsh(hessian_of(fn, theta + h * d)).flip(0)[:k]
        lm = torch.linalg.eigvalsh(hessian_of(fn, theta - h * d)).flip(0)[:k]
        fd = ((lp - lm) / (2 * h)).numpy()
        an = np.array([float(torch.dot(sharpness_gradient(fn, theta, U[j]), d)) for j in range(k)])
        third = float(torch.linalg.vector_norm(T.reshape(-1)))
        # truncation h^2/6 |d^3 lambda| (bounded via ~ |T| * |T| / gap scale) is ~1e-8 here; round-off 1e-16 |H|/h
        np.testing.assert_allclose(fd, an, rtol=0, atol=1e-6 * third)


def test_edge_constants_match_exact_quantities(tiny, hessian_of):
    """G, alpha, x, Sigma_1 from edge_constants against the exact Hessian / tensor / per-example gradients."""
    flat, x, t, theta, fn = _setup(tiny)
    pfn = per_example_loss_function(flat, x, t, "mse")
    k = 2
    ec = edge_constants(fn, pfn, theta, k, tol=1e-10, max_hvp=200, generator=torch.Generator().manual_seed(0))
    # the projected point and its exact top-k
    H0 = hessian_of(fn, theta)
    e0, v0 = torch.linalg.eigh(H0)
    U0 = v0[:, -k:].flip(1).T
    U0 = U0 * torch.sign((U0 * ec.vectors).sum(1, keepdim=True))
    g0 = torch.func.grad(fn)(theta)
    dagger = theta - ((U0 @ g0) / e0.flip(0)[:k]) @ U0
    np.testing.assert_allclose(np.abs(ec.x), np.abs((U0 @ (theta - dagger)).numpy()), rtol=1e-6, atol=1e-12)
    Hd = hessian_of(fn, dagger)
    ed, vd = torch.linalg.eigh(Hd)
    Ud = vd[:, -k:].flip(1).T
    np.testing.assert_allclose(ec.values_dagger, ed.flip(0)[:k].numpy(), rtol=1e-9)
    T = _third_derivative(fn, dagger)
    grads = torch.stack([torch.einsum("abc,a,b->c", T, u, u) for u in Ud])
    perp = grads - (grads @ Ud.T) @ Ud
    G = (perp @ perp.T).numpy()
    np.testing.assert_allclose(ec.coupling, G, rtol=1e-6, atol=1e-9 * np.abs(G).max())
    gd = torch.func.grad(fn)(dagger)
    alpha = (-(perp @ (gd - (Ud @ gd) @ Ud))).numpy()
    np.testing.assert_allclose(ec.alpha, alpha, rtol=1e-6, atol=1e-9 * np.abs(alpha).max())
    # per-example projected gradients from the full Jacobian
    J = torch.autograd.functional.jacobian(pfn, dagger)  # n x P
    P = (J @ Ud.T).numpy()
    Pc = P - P.mean(0)
    np.testing.assert_allclose(ec.sigma1, Pc.T @ Pc / P.shape[0], rtol=1e-8, atol=1e-14)
    assert ec.n_hvp > 0 and ec.seconds > 0
    n = x.shape[0]
    np.testing.assert_allclose(ec.sigma_sq(3), (n - 3) / (3 * (n - 1)) * np.diag(ec.sigma1), rtol=1e-15)
