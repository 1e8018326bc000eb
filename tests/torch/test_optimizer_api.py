"""EoS-SGD and EdgeSGD as drop-in torch.optim optimizers: checkpoints that resume bit for bit, one set of
defaults (class = ``sdeeos train`` = study file), the standard closure, ``.grad``, parameter groups, LR
schedulers; a NaN step size is refused in one line.

References: bit identity (``torch.equal``) with the uninterrupted run and with ``torch.optim.SGD`` given the
same step size and gradient (the same floating-point operations, so no tolerance); the exact Hessian of
linear regression for the step size the groups' caps and schedulers act on.
"""

from __future__ import annotations

import inspect
import math
import pathlib
import tomllib

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from sdeeos import ParameterError  # noqa: E402
from sdeeos._optimizer_defaults import EDGE_SGD_DEFAULTS, EOS_SGD_DEFAULTS  # noqa: E402
from sdeeos.torch import (  # noqa: E402
    EdgeSGD,
    EoSSGD,
    NonFiniteCurvatureError,
    TrainConfig,
    build_model,
    load_data,
    per_example_loss,
    train,
)

N, B = 64, 8
STUDY = pathlib.Path(__file__).resolve().parents[2] / "studies" / "eos_sgd_vs_baselines.toml"


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 5, generator=g, dtype=torch.float64), torch.randn(N, 2, generator=g, dtype=torch.float64)


def _net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()


def _closure(opt, model, x, y):
    """The standard closure: zero_grad, backward, return the loss."""
    def closure():
        opt.zero_grad()
        loss = per_example_loss(model(x), y, "mse").mean()
        loss.backward()
        return loss
    return closure


def _batch(t):
    """Step t's training batch: a function of t alone, so a resumed run sees the same batches."""
    return torch.randperm(N, generator=torch.Generator().manual_seed(100 + t))[:B]


def _optimizer(kind, model, x, y):
    if kind == "eos":
        return EoSSGD(model.parameters(), eta_max=1.0, k=5, momentum=0.3, n_data=N, batch_size=B,
                      curvature_closure=lambda: per_example_loss(model(x[:32]), y[:32], "mse"))
    loader = DataLoader(TensorDataset(x, y), batch_size=B)
    refresh = dict(refresh="fixed", refresh_every=3) if kind == "edge-fixed" else dict(refresh_every=2)
    return EdgeSGD(model.parameters(), model=model, loss="mse", loader=loader, eta_max=1.0, max_overhead=None,
                   curvature_size=32, probe_size=16, seed=3, **refresh)


def _run(opt, model, x, y, steps):
    for t in steps:
        idx = _batch(t)
        opt.step(_closure(opt, model, x[idx], y[idx]))


@pytest.mark.parametrize("kind", ["eos", "edge-fixed", "edge-adaptive"])
def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(kind, tmp_path):
    """40 steps vs 17 + state_dict + torch.save/torch.load + a fresh model and optimizer + 23 steps
    (old code: parameters apart by 1.27 for EoS-SGD and 0.28 for EdgeSGD with a fixed refresh)."""
    x, y = _data()
    model = _net()
    opt = _optimizer(kind, model, x, y)
    _run(opt, model, x, y, range(40))

    model_a = _net()
    opt_a = _optimizer(kind, model_a, x, y)
    _run(opt_a, model_a, x, y, range(17))
    torch.save({"model": model_a.state_dict(), "optimizer": opt_a.state_dict()}, tmp_path / "ckpt.pt")
    del model_a, opt_a
    ckpt = torch.load(tmp_path / "ckpt.pt")  # weights_only: the checkpoint holds plain values and tensors
    model_b = _net()
    model_b.load_state_dict(ckpt["model"])
    opt_b = _optimizer(kind, model_b, x, y)
    opt_b.load_state_dict(ckpt["optimizer"])
    _run(opt_b, model_b, x, y, range(17, 40))

    assert opt_b.step_count == opt.step_count == 40
    for p, q in zip(model.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    assert opt_b.last_lr == opt.last_lr and opt_b.total_hvp == opt.total_hvp
    if kind != "eos":
        assert opt_b.measurements == opt.measurements and opt_b.intervals == opt.intervals


def test_a_saved_state_does_not_follow_the_run():
    """state_dict() is a snapshot: the controller's later steps do not change it."""
    x, y = _data()
    model = _net()
    opt = _optimizer("edge-adaptive", model, x, y)
    _run(opt, model, x, y, range(3))
    saved = opt.state_dict()["controller"]
    before = (dict(saved["estimates"]), dict(saved["next_refresh"]), saved["step_count"])
    _run(opt, model, x, y, range(3, 12))
    assert (saved["estimates"], saved["next_refresh"], saved["step_count"]) == before


def test_a_state_of_another_optimizer_is_refused():
    x, y = _data()
    model = _net()
    eos = _optimizer("eos", model, x, y)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ParameterError, match=r"^state_dict must be one saved by EoSSGD.state_dict\(\), got no "):
        eos.load_state_dict(sgd.state_dict())
    edge = _optimizer("edge-fixed", model, x, y)
    with pytest.raises(ParameterError, match=r"^state_dict must be one saved by EoSSGD.state_dict\(\), got EdgeSGD"):
        eos.load_state_dict(edge.state_dict())


# ---------------------------------------------------------------------- one set of defaults

def _signature_defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_the_class_the_cli_and_the_study_share_one_set_of_defaults():
    """Old code: EoSSGD momentum 0.9, k 10 against the CLI's and the study's 0, 50."""
    cfg = TrainConfig()
    study = tomllib.loads(STUDY.read_text())
    eos = _signature_defaults(EoSSGD)
    for key, value in EOS_SGD_DEFAULTS.items():
        if key in eos:
            assert eos[key] == value, key
        if hasattr(cfg, "eos_" + key):
            assert getattr(cfg, "eos_" + key) == value, key
        if "eos_" + key in study:
            assert study["eos_" + key] == value, key
    assert cfg.eos_curvature_batch_size == EOS_SGD_DEFAULTS["curvature_size"]
    edge = _signature_defaults(EdgeSGD)
    cli = {"refresh_every": cfg.edge_refresh_every, "refresh_max": cfg.edge_refresh_max, "margin": cfg.edge_margin,
           "momentum": cfg.edge_momentum, "refresh": cfg.edge_refresh, "eta_max": cfg.edge_eta_max,
           "batch_sharpness_batches": cfg.edge_bs_batches, "max_overhead": cfg.edge_max_overhead,
           "curvature_size": cfg.edge_curvature_batch_size, "probe_size": cfg.edge_probe_size}
    for key, value in EDGE_SGD_DEFAULTS.items():
        assert edge[key] == value, key
        if key in cli:
            assert cli[key] == value, key
    for key, name in (("refresh_every", "edge_refresh_every"), ("refresh_max", "edge_refresh_max"),
                      ("margin", "edge_margin"), ("max_overhead", "edge_max_overhead"),
                      ("curvature_size", "edge_curvature_batch_size"), ("probe_size", "edge_probe_size"),
                      ("batch_sharpness_batches", "edge_bs_batches")):
        if name in study:
            assert study[name] == EDGE_SGD_DEFAULTS[key], name


def _digits_run(loss, curvature, n_steps=200, **kw):
    """EoS-SGD at its defaults (but ``kw``) on digits, MLP-tanh of width 100, B = 32, seed 0; the training loss
    at step 0 and after ``n_steps`` (NaN if the run stopped)."""
    data = load_data("digits", loss=loss)
    x, t = data.x_train, data.targets_train
    model = build_model("mlp-tanh", data.input_shape, data.n_classes, width=100, depth=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    cur = {"idx": torch.randperm(data.n_train, generator=gen)[:32]}
    if curvature == "fixed":
        fixed = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(1))[:256]
        curvature_closure = lambda: per_example_loss(model(x[fixed]), t[fixed], loss)  # noqa: E731
    else:  # the current mini-batch
        curvature_closure = lambda: per_example_loss(model(x[cur["idx"]]), t[cur["idx"]], loss)  # noqa: E731
    opt = EoSSGD(model.parameters(), curvature_closure=curvature_closure, batch_size=32, n_data=data.n_train, **kw)

    def full_loss():
        with torch.no_grad():
            return float(per_example_loss(model(x), t, loss).mean())

    start = full_loss()
    try:
        for step in range(n_steps):
            if step:
                cur["idx"] = torch.randperm(data.n_train, generator=gen)[:32]
            opt.step(_closure_loss(opt, lambda: per_example_loss(model(x[cur["idx"]]), t[cur["idx"]], loss).mean()))
    except NonFiniteCurvatureError:
        return start, math.nan
    return start, full_loss()


def _closure_loss(opt, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("loss,curvature", [("ce", "minibatch"), ("mse", "minibatch"), ("mse", "fixed")])
def test_eos_sgd_defaults_train_digits(loss, curvature):
    """The issue's cases: at the defaults the training loss after 200 steps is below its start (chance).
    The old defaults (momentum 0.9, k 10) fail the MSE ones: see the next test."""
    start, end = _digits_run(loss, curvature)
    assert end < start


@pytest.mark.parametrize("loss,curvature", [("mse", "minibatch"), ("mse", "fixed")])
def test_the_old_defaults_diverge_on_digits(loss, curvature):
    """The measurement that discards momentum 0.9, k 10 (the criterion above must be able to fail; with
    cross-entropy they end at 0.51 against the defaults' 0.024, below the start, so that case is not here)."""
    start, end = _digits_run(loss, curvature, momentum=0.9, k=10)
    assert not end < start


def test_a_nan_step_size_is_refused_in_one_line_and_never_applied():
    x, y = _data()
    model = _net()
    nan_losses = lambda: per_example_loss(model(x[:8]), y[:8], "mse") * math.nan  # noqa: E731
    opt = EoSSGD(model.parameters(), curvature_closure=nan_losses, batch_size=B)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteCurvatureError) as info:
        opt.step(_closure(opt, model, x[:B], y[:B]))
    assert "\n" not in str(info.value) and str(info.value).startswith("EoSSGD: step size nan at step 0")
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_sdeeos_train_stops_eos_sgd_on_a_non_finite_curvature():
    """Old code: train(on_nonfinite="stop") (what ``sdeeos train`` calls) raised for eos-sgd."""
    cfg = dict(dataset="digits", n_train=64, n_test=32, width=8, optimizer="eos-sgd", batch_size=16, n_steps=5,
               eval_every=5, sharpness_every=0, threads=1)
    n_params = sum(p.numel() for p in build_model("mlp-tanh", (64,), 10, width=8, depth=2, seed=0).parameters())
    ds = train(cfg, progress=False, on_nonfinite="stop", init_params=torch.full((n_params,), math.nan))
    assert ds.attrs["stopped_reason"].startswith("non-finite curvature at step 0: EoSSGD: step size nan")
    assert ds.attrs["diverged_step"] == 0


# ---------------------------------------------------------------------- drop-in torch.optim

def _linear(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(N, 3, generator=g, dtype=torch.float64), torch.randn(N, 2, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g, dtype=torch.float64))
        model.bias.zero_()
    return x, y, model


def _eos(params, model, x, y, **kw):
    kw.setdefault("eta_max", 10.0)
    return EoSSGD(params, curvature_closure=lambda: per_example_loss(model(x), y, "mse"), batch_size=B,
                  lanczos_steps=4, lanczos_tol=1e-14, **kw)


@pytest.mark.parametrize("kind", ["eos", "edge"])
def test_standard_closure_fills_grad_and_the_step_is_sgds(kind):
    """After step(closure) p.grad holds the mini-batch gradient and the update is torch.optim.SGD's at lr = last_lr;
    step() without a closure after a backward() does the same."""
    x, y, model = _linear()
    ref = _linear()[2]
    if kind == "eos":
        opt = _eos(model.parameters(), model, x, y)
    else:
        opt = EdgeSGD(model.parameters(), model=model, loss="mse", loader=DataLoader(TensorDataset(x, y), batch_size=B),
                      max_overhead=None)
    twin = _linear()[2]
    opt_twin = (_eos(twin.parameters(), twin, x, y) if kind == "eos" else
                EdgeSGD(twin.parameters(), model=twin, loss="mse", loader=DataLoader(TensorDataset(x, y), batch_size=B),
                        max_overhead=None))
    for t in range(3):
        idx = _batch(t)
        loss = opt.step(_closure(opt, model, x[idx], y[idx]))
        grads = [p.grad.clone() for p in model.parameters()]
        sgd = torch.optim.SGD(ref.parameters(), lr=opt.last_lr)
        sgd.zero_grad()
        ref_loss = per_example_loss(ref(x[idx]), y[idx], "mse").mean()
        ref_loss.backward()
        assert torch.equal(loss.detach(), ref_loss.detach())  # step returns the closure's loss
        for g, p in zip(grads, ref.parameters()):
            assert torch.equal(g, p.grad)
        sgd.step()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.equal(p, q)
        opt_twin.zero_grad()
        per_example_loss(twin(x[idx]), y[idx], "mse").mean().backward()
        opt_twin.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            assert torch.equal(p, q)


def test_gradient_clipping_in_the_closure_is_applied():
    x, y, model = _linear()
    ref = _linear()[2]
    opt = _eos(model.parameters(), model, x, y)

    def closure():
        opt.zero_grad()
        loss = per_example_loss(model(x[:B]), y[:B], "mse").mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
        return loss

    opt.step(closure)
    sgd = torch.optim.SGD(ref.parameters(), lr=opt.last_lr)
    per_example_loss(ref(x[:B]), y[:B], "mse").mean().backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 1e-3)
    sgd.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind", ["eos", "edge"])
def test_parameter_groups_cap_their_own_step(kind):
    """Two groups: the weight at the rule's step, the bias at its own smaller cap; the Hessian is over both."""
    x, y, model = _linear()
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr": 1e-3}]
    A = torch.cat([x, torch.ones(N, 1, dtype=torch.float64)], 1)
    lam = float(torch.linalg.eigvalsh(A.T @ A / N)[-1])  # the Hessian of the mean loss in (w_j, b_j)
    if kind == "eos":
        opt = _eos(groups, model, x, y, c=0.0)
    else:  # the curvature term alone, measured on the whole data set: the edge is 2 / lam
        opt = EdgeSGD(groups, model=model, loss="mse", loader=DataLoader(TensorDataset(x, y), batch_size=B),
                      terms=("curvature",), curvature_size=N, eta_max=10.0, lanczos_steps=4, lanczos_tol=1e-14,
                      max_overhead=None)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    opt.step(_closure(opt, model, x[:B], y[:B]))
    if kind == "eos":
        assert opt.last_lambda == pytest.approx(lam, rel=1e-10)
        assert opt.last_lr == pytest.approx(2 / lam, rel=1e-10)
    else:
        assert opt.estimates["lambda_max"] == pytest.approx(lam, rel=1e-10)
        assert opt.last_lr == pytest.approx(0.9 * 2 / lam, rel=1e-10)
    assert torch.equal(model.weight.detach(), torch.add(w0, model.weight.grad, alpha=-opt.last_lr))
    assert torch.equal(model.bias.detach(), torch.add(b0, model.bias.grad, alpha=-1e-3))


def test_a_group_with_its_own_momentum_is_refused():
    x, y, model = _linear()
    with pytest.raises(ParameterError, match=r"^momentum must be the same in every parameter group of EoSSGD"):
        _eos([{"params": [model.weight]}, {"params": [model.bias], "momentum": 0.5}], model, x, y)


@pytest.mark.parametrize("kind", ["eos", "edge"])
def test_an_lr_scheduler_schedules_the_cap(kind):
    """StepLR halves the cap every step; with the cap binding, the step size is the scheduled lr exactly."""
    x, y, model = _linear()
    if kind == "eos":
        opt = _eos(model.parameters(), model, x, y, eta_max=0.01)
    else:
        opt = EdgeSGD(model.parameters(), model=model, loss="mse", loader=DataLoader(TensorDataset(x, y), batch_size=B),
                      eta_max=0.01, max_overhead=None)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for t in range(4):
        opt.step(_closure(opt, model, x[:B], y[:B]))
        assert opt.last_lr == 0.01 * 0.5**t
        sched.step()
    if kind == "edge":
        assert opt.binding_term == "eta_max"


def test_a_non_finite_cap_is_refused_in_one_line():
    x, y, model = _linear()
    opt = _eos(model.parameters(), model, x, y)
    opt.param_groups[0]["lr"] = math.nan
    with pytest.raises(ParameterError, match=r"^lr of parameter group 0 of EoSSGD \(its step-size cap\) must be"):
        opt.step(_closure(opt, model, x[:B], y[:B]))


@pytest.mark.parametrize("kwargs,message", [
    (dict(curvature_closure=None, batch_size=8), "curvature_closure must be a callable"),
    (dict(curvature_closure=lambda: None, batch_size=0), "batch_size must be"),
    (dict(curvature_closure=lambda: None, batch_size=80, n_data=64), "batch_size must be"),
])
def test_eos_sgd_needs_a_curvature_closure_and_a_batch_size(kwargs, message):
    with pytest.raises(ParameterError, match="^" + message):
        EoSSGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_edge_sgd_takes_a_loader_or_the_batches_not_both():
    x, y, model = _linear()
    loader = DataLoader(TensorDataset(x, y), batch_size=B)
    with pytest.raises(ParameterError, match="^give either loader or n_data"):
        EdgeSGD(model.parameters(), model=model, loss="mse", loader=loader, n_data=N)
    with pytest.raises(ParameterError, match="^give loader, or n_data and batch_size"):
        EdgeSGD(model.parameters(), model=model, loss="mse")


def test_edge_sgd_loader_batches_are_the_data_sets():
    """The curvature batch drawn from the loader is curvature_size distinct examples of its data set, and
    lambda_max is the top eigenvalue of that batch's exact Hessian."""
    x, y, model = _linear()
    opt = EdgeSGD(model.parameters(), model=model, loss="mse", loader=DataLoader(TensorDataset(x, y), batch_size=B),
                  terms=("curvature",), curvature_size=20, lanczos_steps=4, lanczos_tol=1e-14, max_overhead=None)
    xc, yc = opt.curvature_batch
    rows = {tuple(r.tolist()) for r in xc}
    assert len(rows) == 20 and rows <= {tuple(r.tolist()) for r in x}
    opt.step(_closure(opt, model, x[:B], y[:B]))
    A = torch.cat([xc, torch.ones(20, 1, dtype=torch.float64)], 1)
    assert opt.estimates["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(A.T @ A / 20)[-1]), rel=1e-10)
