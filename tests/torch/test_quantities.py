"""The theory's quantities on real (tiny) networks against independent references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    FlatParams,
    HessianOperator,
    batch_sharpness,
    batch_sharpness_ratios,
    lanczos_top,
    loss_function,
    per_example_loss_function,
    predicted_gap,
    project_to_stable_set,
    projected_noise_variance,
    self_stabilization_constants,
    sharpness_gradient,
    without_replacement_factor,
)


def _top_eig(fn, theta, tol=1e-12):
    op = HessianOperator(fn, theta)
    return lanczos_top(op, op.dim, tol=tol, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_name,loss", [("mlp-tanh", "mse"), ("mlp-tanh", "ce")])
def test_grad_sharpness_matches_finite_differences_of_exact_top_eigenvalue(model_name, loss, tiny,
                                                                          hessian_of):
    flat, x, t, _, theta = tiny(model_name, loss, n=8, width=4)
    fn = loss_function(flat, x, t, loss)
    H = hessian_of(fn, theta).numpy()
    w, v = np.linalg.eigh(H)
    assert w[-1] - w[-2] > 1e-2 * abs(w[-1])  # simple top eigenvalue: S is differentiable here
    u = torch.as_tensor(v[:, -1])
    ds = sharpness_gradient(fn, theta, u).numpy()

    def S(th):
        return np.linalg.eigvalsh(hessian_of(fn, th).numpy())[-1]

    # central differences of the exact top eigenvalue along random directions.  Truncation error
    # h^2 |S'''| / 6 ~ 1e-10 for h = 1e-5 and O(1) third derivatives of S; round-off in eigvalsh of
    # the exact Hessian ~ eps * ||H|| / h ~ 1e-11.  rtol 1e-6 is 10^4 above both.
    g = np.random.default_rng(0)
    h = 1e-5
    for _ in range(4):
        d = g.standard_normal(theta.numel())
        d /= np.linalg.norm(d)
        dt = torch.as_tensor(d)
        fd = (S(theta + h * dt) - S(theta - h * dt)) / (2 * h)
        assert abs(fd - ds @ d) <= 1e-6 * max(1.0, np.linalg.norm(ds))


def _handmade(s0=3.0, a=0.7, b=-0.4, p=0.5, q=-1.2, r=0.2):
    r"""L(x, y, z) = 1/2 h(y,z) x^2 + p y + q z + r/2 (y^2+z^2), h = s0 exp(a y + b z).

    At x = 0: H = diag(h, r, r), S = h (h > r), u = e_x, grad S = (0, a h, b h) (already orthogonal
    to u), grad L = (0, p + r y, q + r z), so alpha = -h (a (p + r y) + b (q + r z)),
    beta = h^2 (a^2 + b^2).
    """

    def fn(theta):
        x, y, z = theta[0], theta[1], theta[2]
        hh = s0 * torch.exp(a * y + b * z)
        return 0.5 * hh * x**2 + p * y + q * z + 0.5 * r * (y**2 + z**2)

    def closed_form(y, z):
        hh = s0 * math.exp(a * y + b * z)
        alpha = -hh * (a * (p + r * y) + b * (q + r * z))
        beta = hh**2 * (a**2 + b**2)
        return hh, alpha, beta

    return fn, closed_form


def test_alpha_beta_closed_form_on_handmade_loss():
    fn, closed = _handmade()
    y, z = 0.3, -0.2
    theta = torch.tensor([0.0, y, z], dtype=torch.float64)
    eig = _top_eig(fn, theta)
    const = self_stabilization_constants(fn, theta, eig)
    hh, alpha, beta = closed(y, z)
    assert const.sharpness == pytest.approx(hh, rel=1e-12)
    assert const.alpha == pytest.approx(alpha, rel=1e-12)
    assert const.beta == pytest.approx(beta, rel=1e-12)
    assert const.alpha_full == pytest.approx(alpha, rel=1e-12)  # u . grad L = 0 at x = 0
    assert const.delta_sq == pytest.approx(2 * alpha / beta, rel=1e-12)


def test_projection_removes_oscillation_along_u():
    fn, closed = _handmade()
    theta = torch.tensor([0.05, 0.3, -0.2], dtype=torch.float64)  # oscillating off x = 0
    eig = _top_eig(fn, theta)
    # the Newton step along u ignores how u turns with x, so it converges linearly (ratio ~0.23
    # here): 30 steps reach round-off
    proj, eig_p, n_hvp = project_to_stable_set(fn, theta, eig, n_newton=30, tol=1e-12)
    g = torch.func.grad(fn)(proj)
    assert abs(float(torch.dot(eig_p.vector, g))) < 1e-10
    assert abs(float(proj[0])) < 1e-9
    assert n_hvp > 0
    # alpha measured at the projected point is the closed-form one; at the iterate it is not
    c_proj = self_stabilization_constants(fn, proj, eig_p)
    _, alpha, _ = closed(float(proj[1]), float(proj[2]))
    assert c_proj.alpha == pytest.approx(alpha, rel=1e-8)


def test_sigma_u_sq_matches_exhaustive_without_replacement_batches(tiny):
    """u^T Sigma_B u from the per-example JVP vs the exact average over all C(n, B) batches."""
    n, batch = 8, 3
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=n, width=4)
    fn = loss_function(flat, x, t, "mse")
    eig = _top_eig(fn, theta)
    u = eig.vector
    full_grad = torch.func.grad(fn)(theta)
    devs = []
    for subset in itertools.combinations(range(n), batch):
        idx = torch.tensor(subset)
        gb = torch.func.grad(loss_function(flat, x[idx], t[idx], "mse"))(theta)
        devs.append(float(torch.dot(u, gb - full_grad)))
    exhaustive = float(np.mean(np.square(devs)))
    res = projected_noise_variance(per_example_loss_function(flat, x, t, "mse"), theta, u, [batch, n])
    assert res["sigma_u_sq"][0] == pytest.approx(exhaustive, rel=1e-12)
    assert res["sigma_u_sq"][1] == 0.0  # B = n: no noise
    assert res["mean"] == pytest.approx(float(torch.dot(u, full_grad)), rel=1e-12, abs=1e-15)
    assert without_replacement_factor(n, batch) == pytest.approx((n - batch) / (batch * (n - 1)))


def test_batch_sharpness_full_batch_is_rayleigh_quotient_of_gradient(tiny, hessian_of):
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=6, width=4)
    fn = loss_function(flat, x, t, "mse")
    H = hessian_of(fn, theta)
    g = torch.func.grad(fn)(theta)
    expected = float(g @ H @ g / (g @ g))
    mean, se = batch_sharpness(flat, x, t, "mse", theta, batch_size=6, n_batches=3)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert se == pytest.approx(0.0, abs=1e-10 * abs(expected))


def test_batch_sharpness_one_batch_matches_exact_batch_hessian(tiny, hessian_of):
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=6, width=4)
    gen = torch.Generator().manual_seed(5)
    idx = torch.randperm(6, generator=torch.Generator().manual_seed(5))[:3]
    fb = loss_function(flat, x[idx], t[idx], "mse")
    Hb = hessian_of(fb, theta)
    gb = torch.func.grad(fb)(theta)
    expected = float(gb @ Hb @ gb / (gb @ gb))
    # batch_sharpness draws randperm(n, generator)[:B] with the same generator state: the same batch
    mean, _ = batch_sharpness(flat, x, t, "mse", theta, batch_size=3, n_batches=1, generator=gen)
    assert mean == pytest.approx(expected, rel=1e-10)


def test_predicted_gap_calls_theory():
    from sdeeos.theory.self_stabilization import gap_exact, gap_leading

    gap = predicted_gap(0.01, 1.0, 100.0, 4.0)
    assert gap["leading"] == pytest.approx(float(gap_leading(0.01, 1.0, 100.0, 2.0)), rel=1e-15)
    assert gap["leading"] == pytest.approx(0.01 * 100 * 4 / 4, rel=1e-14)
    assert gap["exact"] == pytest.approx(float(gap_exact(0.01, 1.0, 100.0, 2.0)), rel=1e-15)
    # alpha <= 0: no prediction
    assert math.isnan(predicted_gap(0.01, -1.0, 100.0, 4.0)["leading"])
    # outside the stationary domain eta^2 beta sigma^2 > 2 alpha: exact is NaN
    assert math.isnan(predicted_gap(0.1, 1.0, 100.0, 4.0)["exact"])



def test_batch_sharpness_adaptive_stop_against_the_exhaustive_expectation(tiny, hessian_of):
    """E_B over all C(7, 3) = 35 batches, each ratio from a dense batch Hessian.  Batches are drawn
    independently, so (mean - E) / SE is approximately standard normal once many are drawn: |z| < 4
    fails with probability 6e-5 for a correct estimator (fixed seed: deterministic)."""
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=7, width=4)
    ratios = []
    for idx in itertools.combinations(range(7), 3):
        idx = list(idx)
        fb = loss_function(flat, x[idx], t[idx], "mse")
        Hb = hessian_of(fb, theta)
        gb = torch.func.grad(fb)(theta)
        ratios.append(float(gb @ Hb @ gb / (gb @ gb)))
    exact = float(np.mean(ratios))
    mean, se = batch_sharpness(flat, x, t, "mse", theta, batch_size=3, n_batches=16, rel_se=0.02,
                               generator=torch.Generator().manual_seed(0))
    assert se <= 0.02 * abs(mean)
    assert abs(mean - exact) < 4 * se
    r = batch_sharpness_ratios(flat, x, t, "mse", theta, 3, n_batches=16, rel_se=0.02,
                               generator=torch.Generator().manual_seed(0))
    assert len(r) > 16  # the fixed default would have stopped at a larger error
    fixed = batch_sharpness_ratios(flat, x, t, "mse", theta, 3, n_batches=16, generator=torch.Generator().manual_seed(0))
    assert fixed.std(ddof=1) / 4 > 0.02 * abs(fixed.mean())


def test_batch_sharpness_evaluates_each_batch_once():
    """One forward pass per batch (the gradient's graph is reused for the product); it used to be two."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 2, generator=g, dtype=torch.float64)
    flat = FlatParams(net)
    batch_sharpness(flat, x, y, "mse", flat.flat(), 4, n_batches=5, generator=g)
    assert len(calls) == 5


def test_batch_sharpness_rel_se_is_checked(tiny):
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=6)
    with pytest.raises(ParameterError, match="rel_se"):
        batch_sharpness(flat, x, t, "mse", theta, 3, rel_se=-1.0)


def test_sigma_u_sq_of_a_callable_loss_matches_exhaustive_batches(tiny):
    """sigma_u^2 needs per-example losses: for a callable they come from torch.func.vmap of
    loss(outputs[i:i+1], targets[i:i+1]); the reference averages the callable's own batch gradients
    over all C(8, 3) batches."""
    n, batch = 8, 3
    huber = torch.nn.HuberLoss(delta=0.4)
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=n, width=4)
    fn = loss_function(flat, x, t, huber)
    u = _top_eig(fn, theta).vector
    full_grad = torch.func.grad(fn)(theta)
    devs = []
    for subset in itertools.combinations(range(n), batch):
        idx = torch.tensor(subset)
        gb = torch.func.grad(loss_function(flat, x[idx], t[idx], huber))(theta)
        devs.append(float(torch.dot(u, gb - full_grad)))
    res = projected_noise_variance(per_example_loss_function(flat, x, t, huber), theta, u, [batch])
    assert res["sigma_u_sq"][0] == pytest.approx(float(np.mean(np.square(devs))), rel=1e-12)
