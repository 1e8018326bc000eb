r"""EdgeSGD: SGD whose step size rides whichever edge of stability binds, measured as it trains.

The rule (docs/theory.md#step-size-edges; `sdeeos.theory.step_size_edges`)
------------------------------------------------------------------------
At each refresh the controller measures, at the current parameters,

* :math:`\hat\lambda`: the top Hessian eigenvalue of the loss on a fixed *curvature batch* (warm-started
  Lanczos, ``lanczos_steps`` products at most; a Ritz value, so :math:`\hat\lambda\le\lambda_{\max}`);
* :math:`\widehat{\mathrm{BS}}`: the batch sharpness :math:`\mathbb E_B[g_B^\top H_Bg_B/\lVert g_B\rVert^2]`
  at the training batch size, averaged over ``batch_sharpness_batches`` fresh batches from ``sample_batch``
  (one gradient and one Hessian-vector product each), with its standard error;
* :math:`\hat\tau`: the NTK trace :math:`\operatorname{tr}\Theta=\frac1n\sum_i\operatorname{tr}(J_i^\top
  \Omega_iJ_i)` from the per-example Jacobians :math:`J_i` of the network outputs on a fixed *probe batch*
  (``torch.func.vmap`` of per-example gradients), with :math:`\Omega_i` the Hessian of the loss in the outputs
  (:math:`I` for MSE; :math:`\operatorname{diag}p_i-p_ip_i^\top` for cross-entropy, i.e. the
  Gauss–Newton matrix of its quadratic model), and its standard error over the probe examples;

and turns each into the step size at which its stability condition is an equality:

.. math::

    \eta_\lambda=\frac{2+2\mu}{\hat\lambda},\qquad \eta_{\rm BS}=\frac{2+2\mu}{\widehat{\mathrm{BS}}},\qquad
    \eta_K=\frac{2}{\frac{\hat\tau}{C}\frac{n-B}{B(n-1)}+\hat\lambda\frac{n(B-1)}{B(n-1)}}

(:math:`\eta_K`: the noise kernel bound :math:`\mathcal K_{\rm up}=1`, with the top eigenvalue of
:math:`\Theta` taken as :math:`\hat\lambda`; defined for :math:`\mu=0` only).  Every step then uses

.. math:: \eta_t=\min\{\eta_{\max},\ m\,\eta_\lambda,\ m\,\eta_{\rm BS},\ m\,\eta_K\}

over the terms switched on (``terms``), with the margin :math:`m\in(0,1)` (``margin``).  Between
refreshes :math:`\eta_t` is constant.

Why a margin, and how often each edge is measured
-------------------------------------------------
Sitting *on* an edge is what plain GD does at the edge of stability: it oscillates along the top
direction and its loss goes down non-monotonically.  The margin keeps the step a factor :math:`m` below
the smallest edge, so the controller never relies on self-stabilization.  The headroom :math:`1-m` is
spent in two halves: one for the measurement error (a Ritz value underestimates :math:`\lambda`, the
batch sharpness and the trace are Monte Carlo means, the sharpness oscillates at the edge), one for the
drift of the edge between two measurements.

Each term has its own schedule (``refresh="adaptive"``).  After measuring term :math:`e` the controller
fits a line to :math:`\ln\eta_e` against the step over the term's last four measurements and keeps only
the significant part of its slope, :math:`\rho_e=\max(0,|\hat b|-2\,\mathrm{se}(\hat b))` (two
measurements: their difference quotient).  Its *allowance* is half the headroom plus its slack above the
step in use, :math:`a_e=\frac{1-m}2+\ln\frac{m\,\eta_e}{\eta_t}` (0 slack for the binding edge), and
its next interval is

.. math:: k_e\leftarrow\operatorname{clip}\big(a_e/\rho_e,\ 1,\ \min(2k_e,\ k_{\max})\big)

(at most doubling; :math:`\rho_e=0` doubles).  So an edge far above the binding one is measured rarely,
and the binding one as often as its drift needs.  :math:`\hat\lambda` is measured for the curvature and
the noise-kernel terms; every edge is recomputed from the latest estimates at every measurement.  With
``refresh="fixed"`` every term is measured every ``refresh_every`` steps.  All terms are measured at
step 0; ``refresh_every`` is the first interval and ``refresh_max`` is :math:`k_{\max}`.

Cost
----
Per measurement of :math:`\hat\lambda`: one graph-keeping gradient and ``lanczos_steps`` Hessian-vector
products on the curvature batch; of the batch sharpness: a gradient and one product per batch; of the trace: one ``vmap``-ed Jacobian of the probe
batch (:math:`C` per-example gradients, :math:`C+1` for cross-entropy).  Nothing between refreshes.  ``overhead_seconds``
counts it; the study ``eos_sgd_vs_baselines`` reports it as a fraction of training time.

**The cost budget** (``max_overhead``, default 0.15).  The schedule above asks for a measurement when
the edges move; the budget decides whether one can be afforded.  A due measurement waits while the time
spent measuring exceeds :math:`f/(1-f)` times the time spent in plain steps (:math:`f` =
``max_overhead``), so measuring takes at most a fraction :math:`f` of the optimizer's time, up to one
measurement.  Waiting counts in ``deferred_steps``.  The budget is in seconds, so with it the
measurement schedule (and hence the run) depends on the machine's speed: set ``max_overhead=None`` for
runs that are reproducible bit for bit, at the price of an unbounded cost (``1`` is the same).

Failure
-------
A non-finite estimate stops the run with :class:`NonFiniteCurvatureError`, naming the step and the last
estimates: a NaN never becomes a step size.
"""

from __future__ import annotations

import collections
import copy
import math
from typing import Callable

import numpy as np
import torch

from .._errors import ParameterError
from .._optimizer_defaults import EDGE_SGD_DEFAULTS as _D
from .._validation import check_choice, check_int, check_positive, check_real
from ..theory import step_size_edges
from ._curvature import FlatParams
from ._edge_optimizer import EdgeStepOptimizer, NonFiniteCurvatureError
from ._nets import LOSSES, per_example_loss
from ._plateau import ntk_trace_per_example

__all__ = ["EdgeSGD", "EDGE_TERMS", "REFRESH_MODES"]

EDGE_TERMS = step_size_edges.EDGE_TERMS
REFRESH_MODES = ("adaptive", "fixed")
_DRIFT_WINDOW = 4  # refreshes of a term in its drift regression


class EdgeSGD(EdgeStepOptimizer):
    """Heavy-ball SGD whose step size is the margin times the smallest measured edge (module docstring);
    a drop-in ``torch.optim`` optimizer.

    It needs, besides the standard closure, the ``model``, its ``loss`` and the training data: ``loader``
    (the training ``DataLoader``: it draws its own batches from ``loader.dataset`` with its own generator,
    which the checkpoint holds; an iterator over the loader itself could not be checkpointed), or
    ``n_data``, ``batch_size`` and the batches/callable below.

    Parameters
    ----------
    params : iterable of tensors or of parameter groups (the parameters of ``model``; a group may set
        only its own ``lr``, the cap)
    model : torch.nn.Module, evaluated on the batches below
    loss : "mse" | "ce"
    loader : torch.utils.data.DataLoader over a map-style data set of (input, target) pairs, with a
        ``batch_size``; gives :math:`n`, :math:`B` and every batch below (draws without replacement)
    n_data : int >= 2, training-set size :math:`n` (without ``loader``)
    batch_size : int in [1, n], the training batch size :math:`B` (without ``loader``)
    eta_max : float > 0, the step-size cap (the groups' ``lr``)
    margin : float in (0, 1)
    momentum : float in [0, 1) (the ``noise_kernel`` term needs 0)
    terms : subset of ``("curvature", "batch_sharpness", "noise_kernel")``
    refresh : "adaptive" | "fixed"; refresh_every : int >= 1 (first or fixed interval);
    refresh_max : int >= refresh_every (longest adaptive interval)
    curvature_batch : (inputs, targets) on which :math:`\\hat\\lambda` is measured (default with ``loader``:
        ``curvature_size`` examples drawn once)
    probe_batch : (inputs, targets), at most ``n_data`` examples, for the NTK trace (needed by
        ``noise_kernel``; default with ``loader``: ``probe_size`` examples drawn once)
    sample_batch : callable () -> (inputs, targets), a fresh training batch of size ``batch_size``
        (needed by ``batch_sharpness`` without ``loader``)
    curvature_size, probe_size : int >= 1, sizes of the batches drawn from ``loader`` (at most :math:`n`)
    batch_sharpness_batches : int >= 1
    lanczos_steps : int >= 1; lanczos_tol : float > 0
    max_overhead : float in (0, 1], or None: the cost budget (module docstring); 1 or None: no budget,
        and a schedule that depends on the data and the seed only
    seed : int >= 0 (the first Lanczos start vector, the batches drawn from ``loader``)

    The defaults are those of ``sdeeos train`` and the studies (``sdeeos._optimizer_defaults``).

    Notes
    -----
    ``step(closure)``: the standard closure (``zero_grad``, ``backward``, return the loss), or none with
    ``.grad`` already filled.  Diagnostics after each step: ``last_lr``, ``edges`` (term -> unmargined
    edge, ``inf`` if it does not bind or is off), ``binding_term``, ``estimates`` (``lambda_max``,
    ``lambda_residual`` (relative Lanczos residual), ``batch_sharpness``, ``batch_sharpness_stderr``,
    ``ntk_trace``, ``ntk_trace_stderr``, ``noise_kernel_at_lr``), ``refresh_count`` (steps with a
    measurement), ``measurements`` and ``intervals`` (per term), ``refresh_interval`` (the shortest
    interval), ``overhead_seconds``, ``step_seconds``, ``deferred_steps`` (steps at which a due measurement
    waited for the budget), ``total_hvp``.

    Examples
    --------
    A plain training loop over a ``DataLoader`` (linear regression; every term of the rule on):

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from sdeeos.torch import EdgeSGD
    >>> g = torch.Generator().manual_seed(0)
    >>> data = TensorDataset(torch.randn(64, 3, generator=g), torch.randn(64, 1, generator=g))
    >>> loader = DataLoader(data, batch_size=16, shuffle=True, generator=g)
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = EdgeSGD(model.parameters(), model=model, loss="mse", loader=loader, max_overhead=None)
    >>> for epoch in range(5):
    ...     for xb, yb in loader:
    ...         def closure():
    ...             opt.zero_grad()
    ...             loss = ((model(xb) - yb) ** 2).sum(1).mean() / 2
    ...             loss.backward()
    ...             return loss
    ...         loss = opt.step(closure)
    >>> opt.last_lr == 0.9 * min(opt.edges.values())  # the margin times the smallest measured edge
    True
    """

    _CONTROLLER_STATE = EdgeStepOptimizer._CONTROLLER_STATE + (
        "refresh_count", "intervals", "next_refresh", "measurements", "edges", "binding_term", "estimates", "_lr",
        "deferred_steps")

    def __init__(self, params, *, model: torch.nn.Module, loss: str, loader=None, n_data: int | None = None,
                 batch_size: int | None = None, eta_max: float = _D["eta_max"], margin: float = _D["margin"],
                 momentum: float = _D["momentum"], terms=EDGE_TERMS, refresh: str = _D["refresh"],
                 refresh_every: int = _D["refresh_every"], refresh_max: int = _D["refresh_max"],
                 curvature_batch=None, probe_batch=None, sample_batch: Callable | None = None,
                 curvature_size: int = _D["curvature_size"], probe_size: int = _D["probe_size"],
                 batch_sharpness_batches: int = _D["batch_sharpness_batches"],
                 lanczos_steps: int = _D["lanczos_steps"], lanczos_tol: float = _D["lanczos_tol"],
                 max_overhead: float | None = _D["max_overhead"], seed: int = 0):
        # every input is checked before any work
        eta_max = check_positive("eta_max", eta_max)
        margin = check_real("margin", margin, low=0.0, high=1.0, low_open=True, high_open=True)
        momentum = check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.terms = step_size_edges.check_terms(terms)
        if "noise_kernel" in self.terms and momentum > 0:
            raise ParameterError("the noise_kernel term is derived for plain SGD: momentum must be 0 with it, got "
                                 f"{momentum} (drop noise_kernel from terms or set momentum = 0)")
        self.loss = check_choice("loss", loss, LOSSES)
        seed = check_int("seed", seed, low=0)
        self.sample_generator = None
        if loader is not None:
            if n_data is not None or batch_size is not None or sample_batch is not None:
                raise ParameterError("give either loader or n_data, batch_size and sample_batch, not both "
                                     "(the loader sets them)")
            self._dataset, self._collate = loader.dataset, loader.collate_fn
            self._device = next(model.parameters()).device  # the batches go where the model is
            if not hasattr(self._dataset, "__getitem__") or not hasattr(self._dataset, "__len__"):
                raise ParameterError("loader.dataset must be a map-style data set (with __len__ and __getitem__)")
            n_data, batch_size = len(self._dataset), loader.batch_size
            if batch_size is None:
                raise ParameterError("loader.batch_size must be an integer (a loader with a batch_sampler has none)")
        elif n_data is None or batch_size is None:
            raise ParameterError("give loader, or n_data and batch_size (and the batches the terms need)")
        self.n_data = check_int("n_data", n_data, low=2)
        self.batch_size = check_int("batch_size", batch_size, low=1, high=self.n_data)
        self.refresh = check_choice("refresh", refresh, REFRESH_MODES)
        refresh_every = check_int("refresh_every", refresh_every, low=1)
        self.refresh_max = check_int("refresh_max", refresh_max, low=refresh_every)
        curvature_size = check_int("curvature_size", curvature_size, low=1)
        probe_size = check_int("probe_size", probe_size, low=1)
        n_bs = check_int("batch_sharpness_batches", batch_sharpness_batches, low=1)
        lanczos_steps = check_int("lanczos_steps", lanczos_steps, low=1)
        lanczos_tol = check_positive("lanczos_tol", lanczos_tol)
        if max_overhead is not None:
            max_overhead = check_real("max_overhead", max_overhead, low=0.0, high=1.0, low_open=True)
        self.max_overhead = None if max_overhead == 1.0 else max_overhead  # all of the time: no budget
        self.deferred_steps = 0
        if loader is not None:
            # fixed subsets drawn once from the seed; the batch-sharpness draws from a generator of its own
            subsets = torch.Generator().manual_seed(seed)
            if curvature_batch is None:
                curvature_batch = self._draw(min(curvature_size, self.n_data), subsets)
            if probe_batch is None and "noise_kernel" in self.terms:
                probe_batch = self._draw(min(probe_size, self.n_data), subsets)
            self.sample_generator = torch.Generator().manual_seed(seed + 1)
            sample_batch = self._sample_from_loader
        if curvature_batch is None:
            raise ParameterError("curvature_batch must be an (inputs, targets) pair (lambda_max is always measured)")
        if "noise_kernel" in self.terms:
            if probe_batch is None:
                raise ParameterError("probe_batch must be an (inputs, targets) pair when the noise_kernel term is on")
            size = int(probe_batch[0].shape[0])
            if not 1 <= size <= self.n_data:
                raise ParameterError(f"probe batch size must be in [1, {self.n_data}] (the training-set size), "
                                     f"got {size}")
        if "batch_sharpness" in self.terms and sample_batch is None:
            raise ParameterError("sample_batch must be given when the batch_sharpness term is on")
        super().__init__(params, dict(lr=eta_max, margin=margin, momentum=momentum,
                                      lanczos_steps=lanczos_steps, lanczos_tol=lanczos_tol))
        self.model = model
        self._flat_params = FlatParams(model)
        self.curvature_batch = curvature_batch
        self.probe_batch = probe_batch
        self.sample_batch = sample_batch
        self.batch_sharpness_batches = n_bs
        self.generator = torch.Generator().manual_seed(seed)
        self.refresh_count = 0
        # what is measured: lambda_max always (the curvature edge, and lambda_top of the kernel bound)
        self.quantities = tuple(q for q, used in (("lambda_max", True),
                                                  ("batch_sharpness", "batch_sharpness" in self.terms),
                                                  ("ntk_trace", "noise_kernel" in self.terms)) if used)
        self.intervals = {q: refresh_every for q in self.quantities}  # steps until it is measured again
        self.next_refresh = {q: 0 for q in self.quantities}
        self.measurements = {q: 0 for q in self.quantities}
        self._history = {q: collections.deque(maxlen=_DRIFT_WINDOW) for q in self.quantities}
        self.edges = {t: math.inf for t in EDGE_TERMS}
        self.binding_term = "eta_max"
        self.estimates = {k: float("nan") for k in ("lambda_max", "lambda_residual", "batch_sharpness",
                                                     "batch_sharpness_stderr", "ntk_trace", "ntk_trace_stderr",
                                                     "noise_kernel_at_lr")}
        self._lr = float("nan")
        self._n_out = None
        step_size_edges.prepare()  # the symbolic derivation runs here, not inside the first timed step

    # ------------------------------------------------------------------ data and checkpoint
    def _draw(self, size: int, generator: torch.Generator):
        """``size`` examples of the loader's data set, without replacement, as (inputs, targets)."""
        idx = torch.randperm(self.n_data, generator=generator)[:size]
        batch = self._collate([self._dataset[int(i)] for i in idx])
        return batch[0].to(self._device), batch[1].to(self._device)

    def _sample_from_loader(self):
        return self._draw(self.batch_size, self.sample_generator)

    def _generators(self) -> dict:
        gens = {"generator": self.generator}
        if self.sample_generator is not None:
            gens["sample_generator"] = self.sample_generator
        return gens

    def _controller_state(self) -> dict:
        out = super()._controller_state()
        out["history"] = {q: list(h) for q, h in self._history.items()}
        return copy.deepcopy(out)

    def _load_controller_state(self, state: dict) -> None:
        state = copy.deepcopy(state)
        super()._load_controller_state(state)
        for q, pts in state["history"].items():
            self._history[q] = collections.deque((tuple(p) for p in pts), maxlen=_DRIFT_WINDOW)

    # ------------------------------------------------------------------ measurements
    def _lambda_max(self) -> float:
        x, t = self.curvature_batch
        # measured like every sdeeos.torch measurement: no buffer written, dropout off (FlatParams.measuring)
        with torch.enable_grad(), self._flat_params.measuring():
            loss = per_example_loss(self.model(x), t, self.loss).mean()
        res, _ = self._hessian_top(loss, self.eigenvector, self.generator)
        if bool(torch.isfinite(res.vector).all()):
            self.eigenvector = res.vector
        # relative Lanczos residual: some eigenvalue lies within it of the estimate (not necessarily the top)
        self.estimates["lambda_residual"] = float(res.residual) / abs(float(res.value)) if res.value else float("nan")
        return float(res.value)

    def _batch_sharpness(self) -> tuple[float, float]:
        params = self._params()
        ratios = []
        for _ in range(self.batch_sharpness_batches):
            x, t = self.sample_batch()
            with torch.enable_grad(), self._flat_params.measuring():
                loss = per_example_loss(self.model(x), t, self.loss).mean()
                g = self._flat(torch.autograd.grad(loss, params, create_graph=True))
                gd = g.detach()
                hg = self._flat(torch.autograd.grad(g, params, grad_outputs=gd))
            self.total_hvp += 1
            ratios.append(float(torch.dot(gd.to(torch.float64), hg.to(torch.float64))
                                / torch.dot(gd.to(torch.float64), gd.to(torch.float64))))
        r = np.asarray(ratios)
        se = float(r.std(ddof=1) / math.sqrt(r.size)) if r.size > 1 else 0.0
        return float(r.mean()), se

    def _ntk_trace(self) -> tuple[float, float]:
        r"""Mean over the probe examples of :math:`\operatorname{tr}(J_i^\top\Omega_iJ_i)`, and its standard error."""
        x, _ = self.probe_batch
        v = ntk_trace_per_example(self._flat_params, x, self._flat_params.flat(), loss=self.loss).cpu().numpy()
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
        return float(v.mean()), se

    def _n_outputs(self) -> int:
        if self._n_out is None:
            x, _ = self.probe_batch
            with torch.no_grad(), self._flat_params.measuring():
                self._n_out = int(self.model(x[:1]).shape[-1])
        return self._n_out

    # ------------------------------------------------------------------ the rule
    def _refresh(self, due: list[str]) -> None:
        t0 = self.clock()
        est = self.estimates
        if "lambda_max" in due:
            est["lambda_max"] = self._lambda_max()
        if "batch_sharpness" in due:
            est["batch_sharpness"], est["batch_sharpness_stderr"] = self._batch_sharpness()
        if "ntk_trace" in due:
            est["ntk_trace"], est["ntk_trace_stderr"] = self._ntk_trace()
        for q in due:
            if not math.isfinite(est[q]):
                self._fail(q)
        self.edges = self._edges(est)
        self._lr, self.binding_term = self._rule(self.eta_max)
        if "noise_kernel" in self.terms and est["lambda_max"] > 0:
            est["noise_kernel_at_lr"] = step_size_edges.noise_kernel_upper(self._lr, **self._kernel_args(est))
        for q in due:
            self.measurements[q] += 1
            if est[q] > 0:
                self._history[q].append((self.step_count, math.log(est[q])))
            if self.refresh == "adaptive":
                self.intervals[q] = self._next_interval(q)
            self.next_refresh[q] = self.step_count + self.intervals[q]
        self.refresh_count += 1
        self.overhead_seconds += self.clock() - t0

    def _kernel_args(self, est: dict) -> dict:
        return dict(ntk_trace=max(est["ntk_trace"], 0.0), lambda_top=est["lambda_max"], batch_size=self.batch_size,
                    n=self.n_data, n_outputs=self._n_outputs())

    def _edges(self, est: dict) -> dict:
        """Every term's edge from the estimates (``inf`` where off or not binding)."""
        mu = self.param_groups[0]["momentum"]
        edges = {t: math.inf for t in EDGE_TERMS}
        if "curvature" in self.terms:
            edges["curvature"] = step_size_edges.curvature_edge(est["lambda_max"], mu)
        if "batch_sharpness" in self.terms:
            edges["batch_sharpness"] = step_size_edges.batch_sharpness_edge(est["batch_sharpness"], mu)
        if "noise_kernel" in self.terms and est["lambda_max"] > 0:
            edges["noise_kernel"] = step_size_edges.noise_kernel_edge(**self._kernel_args(est))
        return edges

    @property
    def refresh_interval(self) -> int:
        """The shortest of the quantities' current intervals."""
        return min(self.intervals.values())

    def drift_rate(self, quantity: str) -> float:
        r"""Significant drift of :math:`\ln` ``quantity`` per step over its last measurements (0 if none)."""
        pts = list(self._history[quantity])
        if len(pts) < 2:
            return 0.0
        steps = np.array([p[0] for p in pts], dtype=float)
        logs = np.array([p[1] for p in pts])
        if len(pts) == 2:
            return abs(logs[1] - logs[0]) / max(steps[1] - steps[0], 1.0)
        ds = steps - steps.mean()
        sxx = float(ds @ ds)
        slope = float(ds @ (logs - logs.mean())) / sxx
        resid = logs - logs.mean() - slope * ds
        slope_se = math.sqrt(float(resid @ resid) / (len(pts) - 2) / sxx)
        return max(abs(slope) - 2 * slope_se, 0.0)

    def sensitivities(self, quantity: str) -> dict:
        r""":math:`|\partial\ln\eta_e/\partial\ln q|` for every edge :math:`e` the quantity feeds (central differences)."""
        est, h = dict(self.estimates), 1e-4
        out = {}
        for sign in (1, -1):
            shifted = dict(est)
            shifted[quantity] = est[quantity] * (1 + sign * h)
            for t, v in self._edges(shifted).items():
                out.setdefault(t, []).append(v)
        return {t: abs(math.log(up / dn)) / (2 * h) for t, (up, dn) in out.items()
                if t in self.terms and math.isfinite(up) and math.isfinite(dn) and up != dn}

    def _next_interval(self, quantity: str) -> int:
        """A quantity's next interval: the smallest allowance of the edges it feeds over the drift it causes there.

        An edge's allowance is half the headroom plus its slack above the step in use."""
        k = self.intervals[quantity]
        if len(self._history[quantity]) < 2:  # no drift measured yet: the first interval is refresh_every
            return k
        upper = min(2 * k, self.refresh_max)
        rate = self.drift_rate(quantity)
        if rate == 0.0 or not self.estimates[quantity] > 0:
            return upper
        margin = self.param_groups[0]["margin"]
        steps = [upper]
        for term, sens in self.sensitivities(quantity).items():
            # the edge's slack above the step in use (infinite under a cap of 0)
            slack = math.log(margin * self.edges[term] / self._lr) if self._lr > 0 else math.inf
            allowance = (1 - margin) / 2 + max(slack, 0.0)
            steps.append(allowance / (sens * rate))
        return int(min(max(min(steps), 1), upper))

    def _fail(self, name: str) -> None:
        est = ", ".join(f"{k} = {v:.6g}" for k, v in self.estimates.items())
        raise NonFiniteCurvatureError(f"EdgeSGD: non-finite {name} estimate at step {self.step_count}; the run "
                                      f"stops (last estimates: {est}; last step size {self.last_lr:.6g})")

    def _estimates(self) -> dict:
        return dict(self.estimates)

    def over_budget(self) -> bool:
        """Whether measuring now would exceed ``max_overhead`` of the time so far (never at step 0)."""
        if self.max_overhead is None or self.step_count == 0:
            return False
        f = self.max_overhead
        return self.overhead_seconds > f / (1 - f) * self.step_seconds

    def _before_gradient(self) -> None:
        due = [q for q in self.quantities if self.step_count >= self.next_refresh[q]]
        if not due:
            return
        if self.over_budget():  # the quantities stay due and are measured once the budget allows
            self.deferred_steps += 1
            return
        self._refresh(due)

    def _rule(self, eta_max: float) -> tuple[float, str]:
        if eta_max == 0:  # an LR scheduler's cap of 0
            return 0.0, "eta_max"
        return step_size_edges.edge_step_size({t: self.edges[t] for t in self.terms},
                                              margin=self.param_groups[0]["margin"], eta_max=eta_max)

    def _step_size(self, eta_max: float) -> float:
        # the cap may have changed since the last refresh (an LR scheduler): the rule applies it at every step
        self._lr, self.binding_term = self._rule(eta_max)
        return self._lr
