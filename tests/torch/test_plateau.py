"""Plateau constants and the regime study: noise kernel K against the linear-model theory, the NTK trace
and top eigenvalues against exact Jacobians, the gradient-flow rate against -grad(lambda).grad(L)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos.theory import mean_square  # noqa: E402
from sdeeos.torch import FlatParams, loss_function  # noqa: E402
from sdeeos.torch._edge_directions import top_k_eigenpairs  # noqa: E402
from sdeeos.torch._curvature import HessianOperator  # noqa: E402
from sdeeos.torch._plateau import gradient_flow_rate, noise_kernel, ntk_trace, ntk_trace_per_example  # noqa: E402
from sdeeos.torch._quantities import sharpness_gradient  # noqa: E402
from sdeeos.studies.regime import k_direction_gap, run_config as run_regime  # noqa: E402
from sdeeos.studies.batch_sharpness_anchor import batch_sharpness_ci, run_config as run_anchor  # noqa: E402
from sdeeos.studies import load_study  # noqa: E402
from sdeeos import ParameterError  # noqa: E402


def test_noise_kernel_of_a_linear_model_is_the_theory_exactly():
    """Scalar-output linear model, n_top >= rank: no tail, K is the linear-model K of sdeeos.theory with
    Theta = X X^T / n (round-off only)."""
    g = torch.Generator().manual_seed(0)
    n, d = 12, 5
    x = torch.randn((n, d), generator=g, dtype=torch.float64)
    lin = torch.nn.Linear(d, 1, bias=False).to(torch.float64)
    flat = FlatParams(lin)
    theta = flat.flat()
    theta_ntk = (x @ x.T / n).numpy()
    eigs = np.linalg.eigvalsh(theta_ntk)[::-1][:d]
    eta, B = 0.1, 4
    K = noise_kernel(flat, x, theta, eta, B, n_top=d, tol=1e-10, generator=g)
    ref = mean_square.noise_kernel_norm(eta, np.clip(eigs, 0, None), B, n, sampling="without_replacement")
    assert K["trace"] == pytest.approx(float(np.trace(theta_ntk)), rel=1e-12)
    np.testing.assert_allclose(np.sort(K["top"]), np.sort(eigs), rtol=1e-8)
    assert K["K_lower"] == pytest.approx(ref, rel=1e-8)
    assert K["K_upper"] == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_ntk_trace_per_example_against_the_explicit_jacobian(tiny, loss):
    """tr(J_i^T Omega_i J_i) with Omega = I (MSE) or diag p - p p^T (cross-entropy), J_i by autograd.functional."""
    flat, x, _, _, theta = tiny("mlp-tanh", loss)
    values = ntk_trace_per_example(flat, x, theta, loss=loss, chunk=4)  # chunks of 4 over 9 examples
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda th: flat.call(th, x[i:i + 1]).reshape(-1), theta)  # (C, P)
        f = flat.call(theta, x[i:i + 1]).reshape(-1).detach()
        if loss == "mse":
            omega = torch.eye(f.numel(), dtype=torch.float64)
        else:
            p = torch.softmax(f, dim=-1)
            omega = torch.diag(p) - torch.outer(p, p)
        assert float(values[i]) == pytest.approx(float(torch.trace(J.T @ omega @ J)), rel=1e-12)


def test_noise_kernel_bounds_bracket_the_full_sum(tiny):
    """Multi-output MLP: trace and top eigenvalues against the exact Jacobian; K_lower <= K(all eigenvalues) <= K_upper."""
    flat, x, t, _, theta = tiny("mlp-tanh", "mse")
    n, C = x.shape[0], t.shape[1]

    def f(th):
        return flat.call(th, x).reshape(-1)

    J = torch.autograd.functional.jacobian(f, theta)  # (nC, P)
    ntk = (J @ J.T / n).numpy()
    eigs = np.clip(np.linalg.eigvalsh(ntk)[::-1], 0, None)
    eta, B = 0.05, 3
    K = noise_kernel(flat, x, theta, eta, B, n_top=3, tol=1e-10, generator=torch.Generator().manual_seed(1))
    assert ntk_trace(flat, x, theta) == pytest.approx(float(np.trace(ntk)), rel=1e-12)
    np.testing.assert_allclose(K["top"], eigs[:3], rtol=1e-7)
    # the full sum (1/C) * sum over all nC eigenvalues, from the same lambdified term
    full = sum(mean_square.noise_kernel_norm(eta, [lam], B, n, sampling="without_replacement") for lam in eigs if lam > 0) / C
    assert K["K_lower"] <= full * (1 + 1e-9) and full <= K["K_upper"] * (1 + 1e-9)


def test_gradient_flow_rate_is_minus_grad_lambda_dot_grad_loss(tiny):
    """Small-step GD from theta_dagger: d lambda_max/dt at t = 0 is -grad(lambda_1).grad(L) (chain rule).
    Tolerance from the data: 4 fit standard errors plus the curvature of lambda(t) over the window
    (|quadratic coefficient| * t_max, from a quadratic fit)."""
    flat, x, t, _, theta = tiny("mlp-tanh", "mse")
    fn = loss_function(flat, x, t, "mse")
    op = HessianOperator(fn, theta)
    eig = top_k_eigenpairs(op, op.dim, 2, tol=1e-10, max_hvp=200, generator=torch.Generator().manual_seed(0))
    eta = 1.0 / eig.values[0]
    gf = gradient_flow_rate(fn, theta, eig, eta, step=1e-3 * eta, n_steps=20, n_points=5, tol=1e-10)
    from sdeeos.torch._edge_directions import project_to_stable_set_k

    dagger, eig_d, _ = project_to_stable_set_k(fn, theta, eig, tol=1e-10)
    expected = float(-torch.dot(sharpness_gradient(fn, dagger, eig_d.vectors[0]), torch.func.grad(fn)(dagger)))
    quad = np.polyfit(gf["times"], gf["sharpness"], 2)
    tol = 4 * gf["rate_stderr"] + abs(quad[0]) * gf["times"][-1] + 1e-9 * abs(expected)
    assert abs(gf["rate"] - expected) <= tol
    assert gf["n_grad"] == 20 and gf["n_hvp"] > 0


def test_k_direction_gap_drops_directions_that_cannot_sit_at_the_edge():
    from sdeeos.theory import multi_direction as md

    G = np.array([[100.0, 90.0], [90.0, 100.0]])
    alpha = np.array([1.0, 0.1])  # (G^-1 alpha)_2 < 0: direction 2 leaves the active set
    gap, na = k_direction_gap(0.01, alpha, [4.0, 4.0], G)
    assert na == 1
    assert gap == pytest.approx(float(md.gap_exact(0.01, alpha[:1], [2.0], G[:1, :1])[0]), rel=1e-14)
    assert np.isnan(k_direction_gap(0.01, alpha[::-1], [4.0, 4.0], G, which="first")[0])  # direction 1 dropped
    first, _ = k_direction_gap(0.01, alpha, [4.0, 4.0], G, which="first")
    assert first == pytest.approx(gap, rel=1e-14)
    gap2, na2 = k_direction_gap(0.01, [1.0, 1.0], [4.0, 4.0], np.diag([100.0, 50.0]))
    assert na2 == 2 and gap2 == pytest.approx(float(np.min(md.gap_exact(0.01, [1, 1], [2, 2], np.diag([100.0, 50.0])))))


def test_regime_runner_tiny(tmp_path):
    """The study end to end on a tiny configuration: shapes, the GD reference, ratios, labels, files."""
    cfg = dict(settings=[{"dataset": "digits", "model": "mlp-tanh", "loss": "mse"}], batch_sizes=["full", 16],
               lrs=[0.4], seeds=[0, 1], n_train=48, width=8, n_steps=60, sharpness_every=20, n_snapshots=1, k=2, k_scan=[1],
               gf_steps=6, kernel_top=2, bs_batches=2)
    ds = run_regime(cfg, tmp_path, progress=False)
    assert ds.gap_from_2_over_eta.dims == ("setting", "eta", "batch_size", "seed") and ds.gap_from_2_over_eta.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(ds.gap_from_gd_sharpness.sel(batch_size="full").values, 0.0)
    sgd = ds.sel(batch_size="16")
    np.testing.assert_allclose(sgd.gap_from_2_over_eta.values, 2 / 0.4 - sgd.sharpness.values, rtol=1e-14)
    np.testing.assert_allclose(sgd.eta_times_gap.values, 0.4 * sgd.gap_from_2_over_eta.values, rtol=1e-14)
    r = sgd.gap_from_2_over_eta.values / sgd.predicted_gap_1d_topk_projected_alpha.values
    ok = np.isfinite(r) & (sgd.sharpness_stationary.values == 1)  # only stationary runs meet the theory
    mean = sgd.ratio_gap_from_2_over_eta_to_predicted_gap_1d_topk_projected_alpha_seed_mean.values.item()
    if ok.any():
        assert mean == pytest.approx(float(r[ok].mean()), rel=1e-12)
    else:
        assert np.isnan(mean)
    assert str(ds.regime.sel(batch_size="full").values.item()) == "GD"
    np.testing.assert_array_equal(ds.alpha_top1_projected.isel(seed=0).values.shape, (1, 1, 2))
    assert "alpha_used" in ds.attrs and (tmp_path / "regime.png").stat().st_size > 0
    root = pathlib.Path(__file__).resolve().parents[2] / "studies"
    loaded = load_study(root / "regime.toml", quick=True)
    assert loaded.kind == "regime" and loaded["n_steps"] <= 400

    with pytest.raises(ParameterError, match="unknown regime study keys"):
        run_regime(dict(cfg, bogus=1), tmp_path, progress=False)
    with pytest.raises(ParameterError, match=r"^batch_sizes must be 'full' or integers in \[1, n_train\)"):
        run_regime(dict(cfg, batch_sizes=["full", 48]), tmp_path, progress=False)
    with pytest.raises(ParameterError, match="must include 'full'"):
        run_regime(dict(cfg, batch_sizes=[16]), tmp_path, progress=False)


def test_batch_sharpness_anchor_runner_tiny(tmp_path, tiny):
    """Runs end to end; the batch-sharpness estimator is the mean of g_B^T H_B g_B/|g_B|^2 (checked against
    the exact batch Hessians of a tiny net)."""
    cfg = dict(n_train=40, width=6, lrs=[0.4], batch_sizes=[8], seeds=[0, 1], n_steps=40, every=20, bs_batches=3)
    ds = run_anchor(cfg, tmp_path, progress=False)
    # records every 20 steps: 3 in n_steps (plateau from record 1, windows of 2), and max_steps = 0 runs to the
    # fewest the gate can judge at, the plateau start and gate_span + 1 = 4 windows: 1 + 4 x 2 = 9 records
    assert ds.batch_sharpness.shape == (1, 1, 2, 9)
    stationary = ds.stationary.values == 1  # the ratio to 2/eta is reported for stationary runs only
    np.testing.assert_allclose(ds.bs_over_2_over_eta.values, np.where(stationary, ds.plateau_batch_sharpness.values * 0.2,
                                                                       np.nan), rtol=1e-14)
    assert (tmp_path / "batch_sharpness_anchor.png").exists()

    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=10)
    mean, half, ratios = batch_sharpness_ci(flat, x, t, "mse", theta, 4, 3, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    ref = []
    for _ in range(3):
        idx = torch.randperm(x.shape[0], generator=g)[:4]
        fn = loss_function(flat, x[idx], t[idx], "mse")
        gb = torch.func.grad(fn)(theta)
        H = torch.autograd.functional.hessian(fn, theta)
        ref.append(float(gb @ H @ gb / (gb @ gb)))
    np.testing.assert_allclose(ratios, ref, rtol=1e-10)
    assert mean == pytest.approx(np.mean(ref), rel=1e-10) and half > 0



@pytest.mark.parametrize("loss", ["ce", "huber"])
def test_ntk_trace_and_noise_kernel_use_the_loss_gauss_newton_matrix(tiny, loss):
    """Issue: on a cross-entropy model ntk_trace() returned the Jacobian (MSE) trace and noise_kernel
    gave K = NaN.  Reference: the dense Gauss-Newton matrix J^T Omega J / n from the explicit Jacobian
    (autograd.functional) and Omega_i (softmax's closed form; a dense Hessian for the Huber callable)."""
    flat, x, t, labels, theta = tiny("mlp-tanh", "ce" if loss == "ce" else "mse")
    loss_arg = "ce" if loss == "ce" else torch.nn.HuberLoss(delta=0.3)
    n = x.shape[0]
    J = torch.autograd.functional.jacobian(lambda th: flat.call(th, x), theta)  # (n, C, P)
    out = flat.call(theta, x).detach()
    if loss == "ce":
        p = torch.softmax(out, dim=-1)
        omega = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    else:
        omega = torch.stack([torch.autograd.functional.hessian(lambda o: loss_arg(o.unsqueeze(0), t[i:i + 1]), out[i])
                             for i in range(n)])
    gn = torch.einsum("ncp,ncd,ndq->pq", J, omega, J) / n
    eigs = np.linalg.eigvalsh(gn.numpy())[::-1]
    targets = None if loss == "ce" else t
    trace = ntk_trace(flat, x, theta, loss=loss_arg, targets=targets)
    assert trace == pytest.approx(float(torch.trace(gn)), rel=1e-12)
    jacobian_trace = float((J ** 2).sum()) / n
    assert jacobian_trace > 2 * trace  # what the loss-blind trace used to report instead
    eta, B = 0.5, 3
    K = noise_kernel(flat, x, theta, eta, B, loss=loss_arg, targets=targets, n_top=3, tol=1e-10,
                     generator=torch.Generator().manual_seed(1))
    assert K["trace"] == pytest.approx(float(torch.trace(gn)), rel=1e-12)
    np.testing.assert_allclose(K["top"], eigs[:3], rtol=1e-7)
    assert K["inside_domain"] and np.isfinite(K["K_lower"]) and np.isfinite(K["K_upper"])
    C = out.shape[1]
    full = sum(mean_square.noise_kernel_norm(eta, [lam], B, n, sampling="without_replacement")
               for lam in eigs if lam > 0) / C
    assert K["K_lower"] <= full * (1 + 1e-9) and full <= K["K_upper"] * (1 + 1e-9)


def test_noise_kernel_outside_its_domain_warns_and_says_so(tiny):
    """K = NaN used to come back without a word; the edge is 2 / (eta (1 + c_full)), c_full = -(n-B)/(B(n-1))."""
    flat, x, t, _, theta = tiny("mlp-tanh", "mse")
    n, B = x.shape[0], 3
    top = noise_kernel(flat, x, theta, 1e-3, B, n_top=1, tol=1e-10)["top"][0]
    eta = 1.01 * 2 / (top * (1 - (n - B) / (B * (n - 1))))  # just past the edge
    with pytest.warns(RuntimeWarning, match="K is NaN because the top Gauss-Newton eigenvalue"):
        K = noise_kernel(flat, x, theta, eta, B, n_top=1, tol=1e-10)
    assert not K["inside_domain"] and np.isnan(K["K_lower"])
    eta_in = 0.99 * 2 / (top * (1 - (n - B) / (B * (n - 1))))
    assert noise_kernel(flat, x, theta, eta_in, B, n_top=1, tol=1e-10)["inside_domain"]
