"""EoS-SGD: the step-size rule on a quadratic with known lambda_max, the update, bad input."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import EoSSGD  # noqa: E402

EIGS = torch.tensor([0.5, 1.5, 4.0, 2.5], dtype=torch.float64)  # lambda_max = 4 (third axis)


def _quadratic(n=10, seed=0):
    r"""Per-example losses l_i = 1/2 th^T A th - b_i . th with A = diag(EIGS): the Hessian of every
    batch is A (lambda_max = 4, u = e_3) and the gradient noise comes from the b_i alone."""
    g = torch.Generator().manual_seed(seed)
    b = torch.randn((n, len(EIGS)), generator=g, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.randn(len(EIGS), generator=g, dtype=torch.float64))

    def per_example(idx):
        quad = 0.5 * (EIGS * theta**2).sum()
        return quad - b[idx] @ theta

    return theta, b, per_example


def _closure(opt, loss_fn):
    """The standard closure: zero_grad, backward, return the loss."""
    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


class _Current:
    """The current mini-batch's indices: a curvature closure that measures on the training batch."""
    idx = None


@pytest.mark.parametrize("c,eta_max", [(0.0, 10.0), (0.7, 10.0), (0.7, 0.3)])
def test_step_size_rule_on_quadratic(c, eta_max):
    n, batch = 10, 4
    theta, b, per_example = _quadratic(n)
    cur = _Current()
    opt = EoSSGD([theta], eta_max=eta_max, c=c, k=2, momentum=0.0, noise_ema=0.5, lanczos_steps=4,
                 lanczos_tol=1e-14, n_data=n, batch_size=batch, curvature_closure=lambda: per_example(cur.idx))
    lam_max = float(EIGS.max())
    idx_seq = [torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 8, 9]), torch.tensor([4, 6, 0, 2])]
    prev_lr, ema_raw, refreshes = None, 0.0, 0
    for t, idx in enumerate(idx_seq):
        th0 = theta.detach().clone()
        cur.idx = idx
        opt.step(_closure(opt, lambda: per_example(idx).mean()))
        # Lanczos in 4 = dim steps is exact on the 4x4 Hessian
        assert opt.last_lambda == pytest.approx(lam_max, rel=1e-12)
        if t % 2 == 0:  # refresh on this batch: u = +-e_3, u . grad l_i = +-(4 th_3 - b_i3)
            refreshes += 1
            ema_raw = 0.5 * ema_raw + 0.5 * float(b[idx, 2].var(unbiased=True))
        sigma2 = (1 / batch - 1 / n) * ema_raw / (1 - 0.5**refreshes)
        assert opt.noise_variance == pytest.approx(sigma2, rel=1e-10)
        if prev_lr is None:
            prev_lr = min(2 / lam_max, eta_max)
        lr = min((2 + c * math.sqrt(prev_lr * sigma2)) / lam_max, eta_max)
        assert opt.last_lr == pytest.approx(lr, rel=1e-10)
        prev_lr = lr
        # plain SGD update with that step (momentum 0)
        grad = EIGS * th0 - b[idx].mean(0)
        assert torch.allclose(theta.detach(), th0 - lr * grad, rtol=0, atol=1e-14)
    assert opt.total_hvp >= 2


def test_noise_estimate_equals_sigma_u_sq_on_a_network(tiny):
    """With the whole training set as curvature batch and noise_ema = 0, sigma_hat^2 after one
    refresh is u^T Sigma_B u of docs/theory.md#batch-noise (without replacement) at the pre-step parameters."""
    from sdeeos.torch import per_example_loss, per_example_loss_function, projected_noise_variance

    n, batch = 9, 4
    flat, x, t, _, theta = tiny("mlp-tanh", "mse", n=n, width=4)
    flat.assign(theta)
    model = flat.module
    opt = EoSSGD(model.parameters(), eta_max=0.01, c=1.0, k=5, momentum=0.0, noise_ema=0.0,
                 lanczos_steps=6, n_data=n, batch_size=batch,
                 curvature_closure=lambda: per_example_loss(model(x), t, "mse"))
    theta0 = flat.flat()
    opt.step(_closure(opt, lambda: per_example_loss(model(x[:batch]), t[:batch], "mse").mean()))
    ref = projected_noise_variance(per_example_loss_function(flat, x, t, "mse"), theta0,
                                   opt.eigenvector, [batch])
    assert opt.noise_variance == pytest.approx(ref["sigma_u_sq"][0], rel=1e-10)


def test_momentum_buffer_is_heavy_ball():
    theta, b, per_example = _quadratic()
    idx = torch.arange(4)
    opt = EoSSGD([theta], eta_max=0.1, c=0.0, k=1, momentum=0.5, lanczos_steps=4, batch_size=4,
                 curvature_closure=lambda: per_example(idx))
    th0 = theta.detach().clone()
    opt.step(_closure(opt, lambda: per_example(idx).mean()))
    g0 = EIGS * th0 - b[idx].mean(0)
    th1 = theta.detach().clone()
    opt.step(_closure(opt, lambda: per_example(idx).mean()))
    g1 = EIGS * th1 - b[idx].mean(0)
    assert torch.allclose(theta.detach(), th1 - 0.1 * (0.5 * g0 + g1), rtol=0, atol=1e-14)


def test_step_size_rule_pure_function():
    assert EoSSGD.step_size_rule(4.0, 0.5, 0.0, c=1.0, eta_max=10.0) == 0.5
    assert EoSSGD.step_size_rule(4.0, 0.5, 8.0, c=1.0, eta_max=10.0) == pytest.approx((2 + 2) / 4)
    assert EoSSGD.step_size_rule(4.0, 0.5, 8.0, c=1.0, eta_max=0.1) == 0.1
    assert EoSSGD.step_size_rule(-1.0, 0.5, 8.0, c=1.0, eta_max=0.1) == 0.1


@pytest.mark.parametrize("kwargs,name", [
    (dict(eta_max=1.0, c=-0.1), "c"),
    (dict(eta_max=0.0), "eta_max"),
    (dict(eta_max=-1.0), "eta_max"),
    (dict(eta_max=1.0, k=0), "k"),
    (dict(eta_max=1.0, k=1.5), "k"),
    (dict(eta_max=1.0, momentum=1.0), "momentum"),
    (dict(eta_max=1.0, noise_ema=1.0), "noise_ema"),
    (dict(eta_max=1.0, lanczos_steps=0), "lanczos_steps"),
    (dict(eta_max=float("nan")), "eta_max"),
])
def test_bad_hyperparameters_are_rejected(kwargs, name):
    theta = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ParameterError) as info:
        EoSSGD([theta], curvature_closure=lambda: theta, batch_size=2, **kwargs)
    msg = str(info.value)
    assert msg.startswith(name + " ")
    # the allowed range is stated (or, for a non-integer or non-finite value, what is required)
    assert "[" in msg or "(" in msg or "finite" in msg or "integer" in msg


def test_curvature_closure_must_return_per_example_losses():
    theta, b, per_example = _quadratic()
    opt = EoSSGD([theta], eta_max=0.1, lanczos_steps=4, batch_size=4,
                 curvature_closure=lambda: per_example(torch.arange(4)).mean())  # a scalar, not per-example losses
    with pytest.raises(ValueError, match="per-example"):
        opt.step(_closure(opt, lambda: per_example(torch.arange(4)).mean()))
