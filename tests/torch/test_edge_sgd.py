"""EdgeSGD on linear regression, where every edge is known exactly: lambda_max from numpy.linalg, the NTK
trace from the data, the batch sharpness by enumerating every batch; the chosen step must equal the margin
times the analytic edge.  Plus the schedules, bad input and non-finite estimates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from sdeeos.theory import mean_square  # noqa: E402
from sdeeos.torch import EdgeSGD, EdgeStepOptimizer, EoSSGD, NonFiniteCurvatureError, per_example_loss  # noqa: E402

N, D = 12, 4


def _problem(seed=0):
    """Realizable-or-not linear regression f(x) = w.x with per-example scales that make the batches differ."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) * rng.uniform(0.3, 2.0, size=(N, 1))
    y = rng.normal(size=(N, 1))
    x_t, y_t = torch.tensor(X), torch.tensor(y)
    model = torch.nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(rng.normal(size=(1, D))))
    return X, y, x_t, y_t, model


def _exact_batch_sharpness(X, y, w, B):
    """Every ratio g_B^T H_B g_B / |g_B|^2 over all C(N, B) batches (mean of 1/2 (x.w - y)^2)."""
    ratios = []
    for idx in itertools.combinations(range(N), B):
        Xb, yb = X[list(idx)], y[list(idx)]
        r = Xb @ w - yb[:, 0]
        g = Xb.T @ r / B
        H = Xb.T @ Xb / B
        ratios.append(g @ H @ g / (g @ g))
    return np.asarray(ratios)


def _controller(x_t, y_t, model, B, seed=1, **kw):
    gen = torch.Generator().manual_seed(seed)

    def sample():
        idx = torch.randperm(N, generator=gen)[:B]
        return x_t[idx], y_t[idx]

    kw.setdefault("lanczos_steps", D)
    kw.setdefault("max_overhead", None)  # a schedule independent of timing
    kw.setdefault("lanczos_tol", 1e-12)
    return EdgeSGD(model.parameters(), model=model, loss="mse", n_data=N, batch_size=B, eta_max=100.0,
                   curvature_batch=(x_t, y_t), probe_batch=(x_t, y_t), sample_batch=sample, **kw)


def _one_step(opt, x_t, y_t, model):
    def closure():  # the standard one
        opt.zero_grad()
        loss = per_example_loss(model(x_t[:2]), y_t[:2], "mse").mean()
        loss.backward()
        return loss
    return opt.step(closure)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_curvature_edge_is_margin_times_the_analytic_edge(momentum):
    X, y, x_t, y_t, model = _problem()
    lam = np.linalg.eigvalsh(X.T @ X / N).max()
    opt = _controller(x_t, y_t, model, 3, terms=("curvature",), margin=0.7, momentum=momentum)
    _one_step(opt, x_t, y_t, model)
    # Lanczos run to exhaustion of the 4-dimensional space: round-off only
    assert opt.estimates["lambda_max"] == pytest.approx(lam, rel=1e-10)
    assert opt.last_lr == pytest.approx(0.7 * (2 + 2 * momentum) / lam, rel=1e-10)
    assert opt.binding_term == "curvature"


@pytest.mark.parametrize("B", [1, 3, 6])
def test_noise_kernel_edge_is_margin_times_the_analytic_edge(B):
    X, y, x_t, y_t, model = _problem()
    theta = X @ X.T / N  # the NTK of the mean loss; its trace and top eigenvalue are exact here
    eig = np.linalg.eigvalsh(theta)
    tau, lam = float(np.trace(theta)), float(eig.max())
    analytic = 2.0 / (tau * (N - B) / (B * (N - 1)) + lam * N * (B - 1) / (B * (N - 1)))
    opt = _controller(x_t, y_t, model, B, terms=("noise_kernel",), margin=0.8)
    _one_step(opt, x_t, y_t, model)
    assert opt.estimates["ntk_trace"] == pytest.approx(tau, rel=1e-12)
    assert opt.last_lr == pytest.approx(0.8 * analytic, rel=1e-10)
    # the bound: the closure K of the full NTK spectrum is at most K_up < 1 at the chosen step (equal at B = 1,
    # where every term is linear in lambda)
    k_closure = mean_square.noise_kernel_norm(opt.last_lr, np.clip(eig, 0, None), B, N, sampling="without_replacement")
    assert k_closure <= opt.estimates["noise_kernel_at_lr"] * (1 + 1e-12)
    a, b = (N - B) / (B * (N - 1)), N * (B - 1) / (B * (N - 1))
    eta = 0.8 * analytic  # K_up(eta) = eta a tau / (2 - eta b lambda)
    assert opt.estimates["noise_kernel_at_lr"] == pytest.approx(eta * a * tau / (2 - eta * b * lam), rel=1e-9)


@pytest.mark.parametrize("B", [2, 4])
def test_batch_sharpness_edge_is_margin_times_the_analytic_edge_within_its_standard_error(B):
    X, y, x_t, y_t, model = _problem(seed=3)
    w = model.weight.detach().numpy()[0]
    ratios = _exact_batch_sharpness(X, y, w, B)
    n_batches = 400
    opt = _controller(x_t, y_t, model, B, terms=("batch_sharpness",), margin=0.9,
                      batch_sharpness_batches=n_batches)
    _one_step(opt, x_t, y_t, model)
    bs_exact = ratios.mean()
    se = ratios.std() / math.sqrt(n_batches)  # exact spread of one draw: independent uniform batches
    assert abs(opt.estimates["batch_sharpness"] - bs_exact) < 4 * se
    # eta = 0.9 * 2 / BS: its relative error is the relative error of BS
    assert abs(opt.last_lr / (0.9 * 2 / bs_exact) - 1) < 4 * se / bs_exact * 1.01


def test_all_terms_take_the_smallest_edge():
    X, y, x_t, y_t, model = _problem()
    B = 1
    opt = _controller(x_t, y_t, model, B, margin=0.6, batch_sharpness_batches=2)
    _one_step(opt, x_t, y_t, model)
    edges = {t: opt.edges[t] for t in ("curvature", "batch_sharpness", "noise_kernel")}
    binding = min(edges, key=edges.get)
    assert opt.binding_term == binding
    assert opt.last_lr == pytest.approx(0.6 * edges[binding], rel=1e-15)
    # at B = 1 the kernel edge is 2C/tau (the trace alone), and the trace bounds lambda_max
    tau = float(np.trace(X @ X.T / N))
    assert edges["noise_kernel"] == pytest.approx(2 / tau, rel=1e-12)
    assert edges["noise_kernel"] <= edges["curvature"]


def test_eta_max_caps_the_step():
    _, _, x_t, y_t, model = _problem()
    opt = _controller(x_t, y_t, model, 3, terms=("curvature",))
    opt.param_groups[0]["lr"] = 1e-3  # the cap
    _one_step(opt, x_t, y_t, model)
    assert opt.last_lr == 1e-3 and opt.binding_term == "eta_max"


def test_constant_curvature_doubles_the_interval_up_to_refresh_max():
    """lambda_max of linear regression does not move: every interval doubles, then stays at refresh_max."""
    _, _, x_t, y_t, model = _problem()
    opt = _controller(x_t, y_t, model, 3, terms=("curvature",), refresh_every=5, refresh_max=40)
    seen = []
    for s in range(200):
        before = opt.measurements["lambda_max"]
        _one_step(opt, x_t, y_t, model)
        if opt.measurements["lambda_max"] > before:
            seen.append(s)
    assert seen == [0, 5, 15, 35, 75, 115, 155, 195]


def test_fixed_refresh_measures_every_interval():
    _, _, x_t, y_t, model = _problem()
    opt = _controller(x_t, y_t, model, 3, refresh="fixed", refresh_every=7)
    for _ in range(30):
        _one_step(opt, x_t, y_t, model)
    assert opt.measurements == {"lambda_max": 5, "batch_sharpness": 5, "ntk_trace": 5}  # steps 0, 7, 14, 21, 28


def test_drift_rate_is_the_significant_slope():
    _, _, x_t, y_t, model = _problem()
    opt = _controller(x_t, y_t, model, 3, terms=("curvature",))
    history = opt._history["lambda_max"]
    for step in (0, 10, 20, 30):  # ln lambda moving by exactly 0.01 per step
        history.append((step, 1.0 + 0.01 * step))
    assert opt.drift_rate("lambda_max") == pytest.approx(0.01, rel=1e-12)
    history.clear()
    for step, v in ((0, 1.0), (10, 1.3), (20, 0.9), (30, 1.2)):  # scatter, no significant trend
        history.append((step, v))
    assert opt.drift_rate("lambda_max") == 0.0


def test_kernel_edge_sensitivities_match_the_closed_form():
    X, y, x_t, y_t, model = _problem()
    B = 3
    opt = _controller(x_t, y_t, model, B)
    _one_step(opt, x_t, y_t, model)
    tau, lam = opt.estimates["ntk_trace"], opt.estimates["lambda_max"]
    a, b = tau * (N - B) / (B * (N - 1)), lam * N * (B - 1) / (B * (N - 1))
    s_tau = opt.sensitivities("ntk_trace")
    s_lam = opt.sensitivities("lambda_max")
    assert s_tau == {"noise_kernel": pytest.approx(a / (a + b), rel=1e-6)}
    assert s_lam["noise_kernel"] == pytest.approx(b / (a + b), rel=1e-6)
    assert s_lam["curvature"] == pytest.approx(1.0, rel=1e-6)


class _FakeClock:
    """A clock that advances by a fixed amount per reading, the measurement's readings by more."""

    def __init__(self):
        self.now, self.tick = 0.0, 1.0

    def __call__(self):
        self.now += self.tick
        return self.now


def test_cost_budget_defers_measurements_until_the_fraction_allows():
    """With a fake clock a measurement costs 5 time units and a plain step 0.5: at max_overhead = 0.5 a due
    measurement must wait until the steps have taken as long as the measurements (every 10th step)."""
    _, _, x_t, y_t, model = _problem()
    opt = _controller(x_t, y_t, model, 3, terms=("curvature",), refresh="fixed", refresh_every=1,
                      max_overhead=0.5)
    clock = _FakeClock()
    opt.clock = clock
    measured_at = []
    for s in range(60):
        before = opt.measurements["lambda_max"]
        clock.tick = 5.0  # a measurement reads the clock at its start and end: 5 units
        opt._before_gradient()
        clock.tick = 0.5  # the plain step likewise: 0.5 units
        opt.next_refresh["lambda_max"] = min(opt.next_refresh["lambda_max"], 10**9)
        _one_step_without_refresh(opt, x_t, y_t, model)
        if opt.measurements["lambda_max"] > before:
            measured_at.append(s)
        # the budget: measuring time <= f/(1-f) x step time + one measurement
        assert opt.overhead_seconds <= opt.step_seconds + 5.0 + 1e-9
    assert measured_at == [0, 10, 20, 30, 40, 50]
    assert opt.deferred_steps == 60 - 6
    assert opt.overhead_seconds == 6 * 5.0 and opt.step_seconds == 60 * 0.5


def _one_step_without_refresh(opt, x_t, y_t, model):
    due, opt._before_gradient = opt._before_gradient, lambda: None
    try:
        _one_step(opt, x_t, y_t, model)
    finally:
        opt._before_gradient = due


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_max_overhead_outside_its_range_is_refused(value):
    _, _, x_t, y_t, model = _problem()
    with pytest.raises(ParameterError, match=r"^max_overhead must be in \(0.0, 1.0\]"):
        _controller(x_t, y_t, model, 3, max_overhead=value)


def test_both_controllers_share_the_base():
    assert issubclass(EdgeSGD, EdgeStepOptimizer) and issubclass(EoSSGD, EdgeStepOptimizer)


@pytest.mark.parametrize("kw,match", [
    (dict(margin=0.0), r"^margin must be in \(0.0, 1.0\)"),
    (dict(margin=1.0), r"^margin must be in \(0.0, 1.0\)"),
    (dict(refresh_every=0), r"^refresh_every must be"),
    (dict(refresh_every=50, refresh_max=10), r"^refresh_max must be"),
    (dict(terms=()), r"^terms must be a comma-separated non-empty subset .*\(empty\)"),
    (dict(terms=("curvature", "sharpness")), r"^terms must be"),
    (dict(terms="curvature,curvature"), r"^terms must be .*\(a term named twice\)"),
    (dict(momentum=0.9), r"^the noise_kernel term is derived for plain SGD"),
    (dict(refresh="sometimes"), r"^refresh must be"),
    (dict(batch_sharpness_batches=0), r"^batch_sharpness_batches must be"),
])
def test_bad_input_is_one_line_naming_the_parameter(kw, match):
    _, _, x_t, y_t, model = _problem()
    with pytest.raises(ParameterError, match=match):
        _controller(x_t, y_t, model, 3, **kw)


def test_probe_batch_larger_than_the_data_is_refused():
    _, _, x_t, y_t, model = _problem()
    big = (torch.cat([x_t, x_t]), torch.cat([y_t, y_t]))
    with pytest.raises(ParameterError, match=r"^probe batch size must be in \[1, 12\]"):
        EdgeSGD(model.parameters(), model=model, loss="mse", n_data=N, batch_size=3, eta_max=1.0,
                curvature_batch=(x_t, y_t), probe_batch=big, sample_batch=lambda: (x_t[:3], y_t[:3]))


def test_a_non_finite_estimate_stops_the_run_before_any_step():
    _, _, x_t, y_t, model = _problem()
    bad_x = x_t.clone()
    bad_x[0, 0] = float("nan")
    opt = EdgeSGD(model.parameters(), model=model, loss="mse", n_data=N, batch_size=3, eta_max=1.0,
                  terms=("curvature",), curvature_batch=(bad_x, y_t))
    before = model.weight.detach().clone()
    with pytest.raises(NonFiniteCurvatureError, match=r"non-finite lambda_max estimate at step 0"):
        _one_step(opt, x_t, y_t, model)
    assert torch.equal(model.weight.detach(), before)  # no NaN step was taken


def test_edge_sgd_measurements_leave_batch_norm_and_dropout_state_unchanged():
    """The controller's own measurements (lambda_max, batch sharpness, NTK trace) write no buffer and
    leave the training flags alone, like every sdeeos.torch measurement; the old code ran the module in
    train mode, so BatchNorm's running statistics moved and Dropout was active."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Dropout(0.3), torch.nn.Linear(6, 1)).double()
    model.train()
    X, y, x_t, y_t, _ = _problem()
    opt = _controller(x_t, y_t, model, 4, terms=("curvature", "batch_sharpness", "noise_kernel"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt._lambda_max()
    opt._batch_sharpness()
    opt._ntk_trace()
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
