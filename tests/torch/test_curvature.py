"""Curvature tools against exact Hessians of tiny float64 networks (see conftest for tolerances)."""

from __future__ import annotations

import ast
import copy
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    ChunkedLoss,
    FlatParams,
    HessianOperator,
    SharpnessTracker,
    batch_sharpness,
    build_model,
    hessian_trace,
    hvp,
    lanczos_top,
    loss_function,
    ntk_trace,
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


# ---------------------------------------------------------------- modules with buffers, ties, several inputs


class _Tied(torch.nn.Module):
    """Two 3x3 layers sharing one weight matrix (biases separate), then a 2-output head."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 3)
        self.b = torch.nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.la = torch.nn.Linear(3, 3)
        self.lb = torch.nn.Linear(2, 3)
        self.head = torch.nn.Linear(6, 2)

    def forward(self, a, b):
        return self.head(torch.cat([torch.tanh(self.la(a)), torch.tanh(self.lb(b))], dim=-1))


def _net(kind):
    torch.manual_seed(1)
    if kind == "batchnorm+dropout":
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(),
                                  torch.nn.Dropout(0.3), torch.nn.Linear(4, 2)).double()
        with torch.no_grad():  # non-trivial running statistics, so eval and batch modes differ
            for _ in range(3):
                net(torch.randn(16, 3, dtype=torch.float64) * 2 + 1)
    elif kind == "layernorm":
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Tanh(),
                                  torch.nn.Linear(4, 2)).double()
    else:
        net = _Tied().double()
    return net.train()


def _data(n=9, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, generator=g, dtype=torch.float64),
            torch.randn(n, 2, generator=g, dtype=torch.float64))


def _reference_fn(net, x, y, mode):
    """Dense-Hessian reference on a deep copy: eval(), or train() with dropout off (batch statistics).
    Parameters are split out of theta by hand over the copy's (de-duplicated) named parameters."""
    ref = copy.deepcopy(net)
    ref.eval() if mode == "eval" else ref.train()
    for m in ref.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    named = list(ref.named_parameters())

    def fn(theta):
        params, o = {}, 0
        for name, p in named:
            params[name] = theta[o:o + p.numel()].reshape(p.shape)
            o += p.numel()
        out = torch.func.functional_call(ref, params, (x,))
        return 0.5 * (out - y).square().sum(dim=1).mean()

    return fn


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}, [m.training for m in net.modules()]


def _assert_unchanged(net, before):
    state, flags = before
    now = net.state_dict()
    assert list(now) == list(state)
    changed = [k for k in state if not torch.equal(state[k], now[k])]
    assert changed == [], f"measuring changed {changed}"
    assert [m.training for m in net.modules()] == flags


@pytest.mark.parametrize("kind", ["batchnorm+dropout", "layernorm", "tied"])
@pytest.mark.parametrize("mode", ["eval", "batch"])
def test_measurements_leave_the_model_unchanged_and_match_the_dense_hessian(kind, mode):
    """Issue: lanczos_top on a BatchNorm net in train mode changed running_mean and num_batches_tracked,
    and batch_sharpness / HessianOperator(method="func") raised functorch errors on it."""
    net = _net(kind)
    x, y = _data()
    before = _state(net)
    flat = FlatParams(net, mode=mode)
    theta = flat.flat()
    if kind == "tied":  # the shared matrix is one parameter: 9 + 3 + 3 + 6 + 2
        assert flat.size == 23
    fn = loss_function(flat, x, y, "mse")
    H = torch.autograd.functional.hessian(_reference_fn(net, x, y, mode), theta)
    top = float(torch.linalg.eigvalsh(H)[-1])
    for method in ("autograd", "func"):
        op = HessianOperator(fn, theta, method=method)
        v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        assert torch.linalg.vector_norm(op(v) - H @ v) <= HESS_RTOL * torch.linalg.norm(H) * torch.linalg.vector_norm(v)
        res = lanczos_top(op, op.dim, tol=1e-10, generator=torch.Generator().manual_seed(0))
        assert res.value == pytest.approx(top, rel=1e-10, abs=1e3 * np.finfo(float).eps * float(H.abs().max()))
    g = torch.autograd.functional.jacobian(_reference_fn(net, x, y, mode), theta)
    mean, _ = batch_sharpness(flat, x, y, "mse", theta, batch_size=9, n_batches=1)
    assert mean == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-10)
    exact = hessian_trace(fn, theta, method="exact")
    assert exact.value == pytest.approx(float(torch.trace(H)), rel=1e-10, abs=1e-12)
    if mode == "eval":
        ntk_trace(flat, x, theta)
    else:
        with pytest.raises(ParameterError, match="the per-example NTK needs FlatParams"):
            ntk_trace(flat, x, theta)
    _assert_unchanged(net, before)


def test_flat_params_mode_is_checked():
    with pytest.raises(ParameterError, match=r"mode must be one of \('eval', 'batch'\)"):
        FlatParams(_net("layernorm"), mode="train")


def test_float64_measurement_of_a_float32_model_needs_no_casting():
    """Inputs, targets and buffers follow theta's dtype; the result is the float64 copy's (exact up-cast)."""
    net32 = _net("batchnorm+dropout").float()
    x, y = _data()
    flat = FlatParams(net32)
    theta = flat.flat(torch.float64)
    fn = loss_function(flat, x.float(), y.float(), "mse")
    net64 = copy.deepcopy(net32).double()
    H = torch.autograd.functional.hessian(_reference_fn(net64, x.float().double(), y.float().double(), "eval"), theta)
    op = HessianOperator(fn, theta)
    assert op(theta).dtype == torch.float64
    res = lanczos_top(op, op.dim, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert res.value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-10)


def test_a_model_with_two_inputs():
    torch.manual_seed(3)
    net = _TwoInputs().double()
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    y = torch.randn(7, 2, generator=g, dtype=torch.float64)
    flat = FlatParams(net)
    theta = flat.flat()

    def ref(th):
        ps, o = [], 0
        for p in net.parameters():
            ps.append(th[o:o + p.numel()].reshape(p.shape))
            o += p.numel()
        h = torch.cat([torch.tanh(a @ ps[0].T + ps[1]), torch.tanh(b @ ps[2].T + ps[3])], dim=-1)
        return 0.5 * ((h @ ps[4].T + ps[5] - y) ** 2).sum(dim=1).mean()

    H = torch.autograd.functional.hessian(ref, theta)
    fn = loss_function(flat, (a, b), y, "mse")
    assert float(fn(theta)) == pytest.approx(float(ref(theta)), rel=1e-14)
    op = HessianOperator(fn, theta)
    res = lanczos_top(op, op.dim, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert res.value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-10)
    gr = torch.func.grad(ref)(theta)
    mean, _ = batch_sharpness(flat, (a, b), y, "mse", theta, batch_size=7, n_batches=1)
    assert mean == pytest.approx(float(gr @ H @ gr / (gr @ gr)), rel=1e-10)
    J = torch.autograd.functional.jacobian(lambda th: flat.call(th, (a, b)).reshape(-1), theta)
    assert ntk_trace(flat, (a, b), theta) == pytest.approx(float((J ** 2).sum()) / 7, rel=1e-12)


def test_a_dataloader_is_accumulated_chunk_by_chunk():
    """Chunks of 4, 4, 1 examples: sum_k (n_k/n) H_k v is the full-batch Hessian product."""
    net = _net("layernorm")
    x, y = _data()
    flat = FlatParams(net)
    theta = flat.flat()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    fn = loss_function(flat, loader, None, "mse")
    assert isinstance(fn, ChunkedLoss) and len(fn.parts) == 3
    full = loss_function(flat, x, y, "mse")
    H = torch.autograd.functional.hessian(_reference_fn(net, x, y, "eval"), theta)
    op = HessianOperator(fn, theta)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.linalg.vector_norm(op(v) - H @ v) <= HESS_RTOL * torch.linalg.norm(H) * torch.linalg.vector_norm(v)
    assert torch.allclose(op.gradient, torch.func.grad(full)(theta), rtol=0, atol=1e-13)
    assert float(fn(theta)) == pytest.approx(float(full(theta)), rel=1e-14)
    assert hessian_trace(fn, theta, method="exact").value == pytest.approx(float(torch.trace(H)), rel=1e-10)
    kw = dict(batch_size=3, n_batches=4)
    bs_loader = batch_sharpness(flat, loader, None, "mse", theta, generator=torch.Generator().manual_seed(1), **kw)
    bs_tensor = batch_sharpness(flat, x, y, "mse", theta, generator=torch.Generator().manual_seed(1), **kw)
    assert bs_loader == pytest.approx(bs_tensor, rel=1e-12)
    assert ntk_trace(flat, loader, theta) == pytest.approx(ntk_trace(flat, x, theta), rel=1e-14)
    with pytest.raises(ParameterError, match="targets must be None when data is an iterable"):
        loss_function(flat, loader, y, "mse")
    with pytest.raises(ParameterError, match="targets must be given when data is a tensor"):
        loss_function(flat, x, None, "mse")


def test_a_dataloader_with_a_loss_that_has_no_forward_mode_derivative():
    """Huber's backward has no forward-mode (jvp) rule in PyTorch: the chunked products (double backward
    per chunk) still equal the dense Hessian of the full-batch loss; the old jvp-based chunks raised."""
    net = _net("layernorm")
    x, y = _data()
    flat = FlatParams(net)
    theta = flat.flat()
    huber = torch.nn.HuberLoss(delta=0.5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    op = HessianOperator(loss_function(flat, loader, None, huber), theta)
    full = loss_function(flat, x, y, huber)
    H = torch.autograd.functional.hessian(full, theta)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.linalg.vector_norm(op(v) - H @ v) <= HESS_RTOL * torch.linalg.norm(H) * torch.linalg.vector_norm(v)
    assert torch.allclose(op.gradient, torch.func.grad(full)(theta), rtol=0, atol=1e-13)


def test_hessian_operator_linear_operator_on_the_parameters_device():
    flat = FlatParams(_net("layernorm"))
    x, y = _data()
    op = HessianOperator(loss_function(flat, x, y, "mse"), flat.flat())
    out = op.as_linear_operator().matvec(np.ones(flat.size))
    assert out.dtype == np.float64 and out.shape == (flat.size,)


def test_every_tensor_factory_in_the_measurement_modules_names_its_device():
    """Vectors are made on the parameters' device: a factory without ``device=`` would make CPU tensors
    (the old ``_random_unit`` and Lanczos bases did).  Static check of the calls in the source."""
    import sdeeos.torch as pkg

    factories = {"randn", "rand", "randint", "randperm", "zeros", "ones", "empty", "eye", "arange", "full",
                 "linspace", "as_tensor", "tensor"}
    root = pathlib.Path(pkg.__file__).parent
    missing = []
    for name in ("_curvature", "_quantities", "_plateau", "_losses", "_trace", "_edge_directions"):
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in factories
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and not any(kw.arg == "device" for kw in node.keywords)):
                missing.append(f"{name}.py:{node.lineno} torch.{node.func.attr}")
    assert missing == []


def test_batch_mode_batch_sharpness_normalises_each_batch_with_its_own_statistics():
    net = _net("batchnorm+dropout")
    x, y = _data()
    before = _state(net)
    flat = FlatParams(net, mode="batch")
    theta = flat.flat()
    idx = torch.randperm(9, generator=torch.Generator().manual_seed(7))[:4]
    ref = _reference_fn(net, x[idx], y[idx], "batch")
    H = torch.autograd.functional.hessian(ref, theta)
    g = torch.autograd.functional.jacobian(ref, theta)
    # the same generator state draws the same batch
    mean, _ = batch_sharpness(flat, x, y, "mse", theta, 4, n_batches=1, generator=torch.Generator().manual_seed(7))
    assert mean == pytest.approx(float(g @ H @ g / (g @ g)), rel=1e-10)
    _assert_unchanged(net, before)
