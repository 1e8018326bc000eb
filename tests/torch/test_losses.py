"""Losses: the named conventions refuse mismatched target shapes; callables give exact curvature.

References are independent of the Lanczos/HVP code: dense Hessians from
``torch.autograd.functional.hessian`` and explicit Jacobians from ``torch.autograd.functional.jacobian``
of the loss written out by hand, in float64 (tolerances: see conftest.py).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    FlatParams,
    HessianOperator,
    batch_sharpness,
    check_loss,
    lanczos_top,
    loss_function,
    ntk_trace,
    ntk_trace_per_example,
    output_hessian,
    per_example_loss,
)

HESS_RTOL = 1e-10  # float64 round-off with a ~10^3 margin (see conftest.py)
LANCZOS_TOL = 1e-10


def _regression(n=10, seed=0, n_out=1):
    """A one-hidden-layer tanh net R^3 -> R^n_out in float64, its inputs and (n, n_out) targets."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, n_out)).double()
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, n_out, generator=g, dtype=torch.float64)
    return model, x, y


def _reference_loss(model, x, y, loss):
    """theta -> loss(model(x), y) with the parameters written out of the flat vector by hand."""
    shapes = [p.shape for p in model.parameters()]

    def fn(theta):
        ws, o = [], 0
        for s in shapes:
            k = int(np.prod(s))
            ws.append(theta[o:o + k].reshape(s))
            o += k
        h = torch.tanh(x @ ws[0].T + ws[1])
        return loss(h @ ws[2].T + ws[3], y)

    return fn


def _lambda_max(fn, theta):
    op = HessianOperator(fn, theta)
    res = lanczos_top(op, op.dim, tol=LANCZOS_TOL, generator=torch.Generator().manual_seed(0))
    assert res.converged
    return res.value


# ---------------------------------------------------------------- wrong numbers (issue item 1)
def test_mse_targets_of_shape_n_against_outputs_n_1_are_refused():
    """Targets (n,) against outputs (n, 1) used to broadcast to an (n, n) residual: a loss, lambda_max and
    batch sharpness tens to hundreds of times too large, with exit status 0."""
    model, x, y = _regression()
    flat = FlatParams(model)
    theta = flat.flat()
    with pytest.raises(ParameterError, match=r"targets must have the outputs' shape \(10, 1\)"):
        loss_function(flat, x, y[:, 0], "mse")(theta)
    with pytest.raises(ParameterError, match="targets must have the outputs' shape"):
        batch_sharpness(flat, x, y[:, 0], "mse", theta, batch_size=4, n_batches=2)
    with pytest.raises(ParameterError, match="targets must have the outputs' shape"):
        per_example_loss(model(x), y[:, 0], "mse")


def test_ce_label_shape_is_checked():
    out = torch.zeros(4, 3)
    with pytest.raises(ParameterError, match=r"integer labels must have shape \(4,\)"):
        per_example_loss(out, torch.zeros(4, 1, dtype=torch.long), "ce")
    with pytest.raises(ParameterError, match="class-probability targets"):
        per_example_loss(out, torch.zeros(4), "ce")


def test_matching_shapes_give_the_exact_loss_and_lambda_max():
    model, x, y = _regression()
    flat = FlatParams(model)
    theta = flat.flat()
    ref = _reference_loss(model, x, y, lambda f, t: 0.5 * ((f - t) ** 2).sum(dim=1).mean())
    fn = loss_function(flat, x, y, "mse")
    assert float(fn(theta)) == pytest.approx(float(ref(theta)), rel=1e-14)
    H = torch.autograd.functional.hessian(ref, theta)
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert _lambda_max(fn, theta) == pytest.approx(top, rel=LANCZOS_TOL + 1e-12)


def test_bad_loss_is_one_line():
    with pytest.raises(ParameterError, match=r"loss must be one of \('mse', 'ce'\) or a callable"):
        check_loss("huber")
    with pytest.raises(ParameterError, match="or a callable loss"):
        check_loss(3)


# ---------------------------------------------------------------- callables (issue item 6)
CALLABLES = {
    "huber": (lambda: torch.nn.HuberLoss(delta=0.5), False),
    "mse_module": (lambda: torch.nn.MSELoss(), False),
    "bce_logits": (lambda: torch.nn.BCEWithLogitsLoss(), True),
    "custom_quartic": (lambda: (lambda f, t: ((f - t) ** 4).sum(dim=1).mean() + 0.1 * (f ** 2).mean()), False),
}


def _targets(y, binary):
    return (y > 0).to(y.dtype) if binary else y


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_callable_loss_lambda_max_and_batch_sharpness_match_the_dense_hessian(name):
    make, binary = CALLABLES[name]
    loss = make()
    model, x, y = _regression(n=8, n_out=2)
    y = _targets(y, binary)
    flat = FlatParams(model)
    theta = flat.flat()
    ref = _reference_loss(model, x, y, loss)
    H = torch.autograd.functional.hessian(ref, theta)
    fn = loss_function(flat, x, y, loss)
    assert float(fn(theta)) == pytest.approx(float(ref(theta)), rel=1e-14)
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert _lambda_max(fn, theta) == pytest.approx(top, rel=LANCZOS_TOL + 1e-12)
    # full-batch batch sharpness is the Rayleigh quotient of the gradient
    g = torch.func.grad(ref)(theta)
    expected = float(g @ H @ g / (g @ g))
    mean, _ = batch_sharpness(flat, x, y, loss, theta, batch_size=8, n_batches=2)
    assert mean == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", sorted(CALLABLES))
def test_callable_loss_ntk_trace_is_the_explicit_gauss_newton_trace(name):
    """(1/n) sum_i tr(J_i^T Omega_i J_i) with J_i from autograd.functional.jacobian and Omega_i the
    dense Hessian of the loss of example i in its outputs (float64)."""
    make, binary = CALLABLES[name]
    loss = make()
    model, x, y = _regression(n=7, n_out=2)
    y = _targets(y, binary)
    flat = FlatParams(model)
    theta = flat.flat()
    per = ntk_trace_per_example(flat, x, theta, loss=loss, targets=y, chunk=3)
    for i in range(x.shape[0]):
        J = torch.autograd.functional.jacobian(lambda th: flat.call(th, x[i:i + 1]).reshape(-1), theta)
        f = flat.call(theta, x[i:i + 1]).detach()
        omega = torch.autograd.functional.hessian(lambda o: loss(o.reshape(1, -1), y[i:i + 1]), f.reshape(-1))
        assert float(per[i]) == pytest.approx(float(torch.trace(J.T @ omega @ J)), rel=1e-12, abs=1e-14)
    assert ntk_trace(flat, x, theta, loss=loss, targets=y) == pytest.approx(float(per.mean()), rel=1e-14)


def test_output_hessian_of_the_named_losses():
    out = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 1, 1, 0])
    ce = output_hessian(out, labels, "ce")
    ref = output_hessian(out, labels, torch.nn.CrossEntropyLoss())
    assert torch.allclose(ce, ref, rtol=0, atol=1e-14)
    mse = output_hessian(out, torch.zeros_like(out), "mse")
    assert torch.equal(mse, torch.eye(3, dtype=torch.float64).expand(5, 3, 3))


def test_callable_with_sum_reduction_is_refused_where_per_example_losses_are_needed():
    model, x, y = _regression(n=6)
    flat = FlatParams(model)
    with pytest.raises(ParameterError, match="is not the mean of its per-example values"):
        ntk_trace(flat, x, flat.flat(), loss=torch.nn.MSELoss(reduction="sum"), targets=y)


def test_callable_ntk_needs_targets():
    model, x, _ = _regression(n=6)
    flat = FlatParams(model)
    with pytest.raises(ParameterError, match="targets must be given for the callable loss HuberLoss"):
        ntk_trace(flat, x, flat.flat(), loss=torch.nn.HuberLoss())


@pytest.mark.parametrize("norm", ["batchnorm+dropout", "layernorm"])
def test_user_model_and_loss_together(norm):
    """A BatchNorm+Dropout or LayerNorm net in train mode with BCE-with-logits: lambda_max, batch sharpness
    and Gauss-Newton trace equal the exact ones of the eval-mode function (dense Hessian, explicit
    Jacobian and per-example output Hessians), and the state_dict is unchanged."""
    import copy

    torch.manual_seed(4)
    mid = [torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Dropout(0.5)] if norm != "layernorm" else \
        [torch.nn.LayerNorm(4), torch.nn.Tanh()]
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), *mid, torch.nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        net(torch.randn(12, 3, generator=g, dtype=torch.float64) + 1)  # running statistics away from 0/1
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = (torch.randn(8, 2, generator=g, dtype=torch.float64) > 0).double()
    loss = torch.nn.BCEWithLogitsLoss()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    ref_net = copy.deepcopy(net).eval()
    names = [n for n, _ in ref_net.named_parameters()]
    shapes = [p.shape for _, p in ref_net.named_parameters()]

    def out_of(th, xs):
        ps, o = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            ps[n] = th[o:o + k].reshape(s)
            o += k
        return torch.func.functional_call(ref_net, ps, (xs,))

    def ref(th):
        return loss(out_of(th, x), y)

    flat = FlatParams(net)
    theta = flat.flat()
    H = torch.autograd.functional.hessian(ref, theta)
    fn = loss_function(flat, x, y, loss)
    assert _lambda_max(fn, theta) == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=LANCZOS_TOL + 1e-12)
    gr = torch.autograd.functional.jacobian(ref, theta)
    mean, _ = batch_sharpness(flat, x, y, loss, theta, batch_size=8, n_batches=1)
    assert mean == pytest.approx(float(gr @ H @ gr / (gr @ gr)), rel=1e-10)
    J = torch.autograd.functional.jacobian(lambda th: out_of(th, x), theta)  # (n, C, P)
    f = out_of(theta, x).detach()
    omega = torch.stack([torch.autograd.functional.hessian(lambda o: loss(o.unsqueeze(0), y[i:i + 1]), f[i])
                         for i in range(8)])
    gn_trace = float(torch.einsum("ncp,ncd,ndp->", J, omega, J)) / 8
    assert ntk_trace(flat, x, theta, loss=loss, targets=y) == pytest.approx(gn_trace, rel=1e-12)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert net.training


def test_a_loss_that_vmap_cannot_batch_is_refused_in_one_line():
    def branchy(f, t):  # a data-dependent Python branch: fine on a batch, not under vmap
        return ((f - t) ** 2).mean() if float((f - t).detach().abs().max()) < 1e9 else (f - t).abs().mean()

    out, t = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
    assert float(branchy(out, t)) == pytest.approx(float(((out - t) ** 2).mean()))
    with pytest.raises(ParameterError, match=r"per-example losses of loss branchy need torch.func.vmap"):
        per_example_loss(out, t, branchy)
    with pytest.raises(ParameterError, match=r"output Hessians of loss branchy need torch.func.vmap"):
        output_hessian(out, t, branchy)
