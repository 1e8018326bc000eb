r"""EoS-SGD: SGD whose step size follows the edge of stability, widened by the measured gradient noise.

The algorithm (the proposal's, with its noise statistic made precise)
---------------------------------------------------------------------
Every ``k`` steps (and at the first step) the optimizer *refreshes* its curvature and noise
estimates on a curvature batch :math:`C` (``curvature_closure()``, e.g. a fixed subset of the training
set, or the current mini-batch), whose per-example losses :math:`\ell_i`, :math:`i\in C`, it
differentiates once with a free weight vector :math:`w` (:math:`L_w=\sum_iw_i\ell_i`, :math:`w_i=1/|C|`):

* :math:`\hat\lambda`: ``lanczos_steps`` Lanczos iterations on the Hessian of :math:`L_w`, warm-started
  from the previous top eigenvector :math:`u` (a Ritz value, so :math:`\hat\lambda\le\lambda_{\max}` of
  that Hessian); stops early once the relative residual is below ``lanczos_tol``;
* the per-example projected gradients :math:`p_i=u\cdot\nabla\ell_i=\partial(u\cdot\nabla_\theta L_w)/\partial w_i`,
  all :math:`|C|` of them from one more backward pass through the same graph.

The noise statistic is the **projected gradient-noise variance along** :math:`u` **at the training
batch size** :math:`B`, for batches drawn uniformly without replacement from :math:`n` examples
(``n_data``; docs/theory.md#batch-noise):

.. math::

    \hat s=\Big(\frac1B-\frac1n\Big)\,\frac{1}{|C|-1}\sum_{i\in C}(p_i-\bar p)^2,\qquad
    \mathbb E\,\hat s=u^\top\Sigma_Bu=\sigma_u^2(B)

(the ``ddof=1`` sample variance is unbiased for the finite-population variance :math:`\frac{n}{n-1}\sigma_1^2`;
with ``n_data=None`` the factor is :math:`1/B`).  :math:`\hat\sigma^2` is the bias-corrected
exponential moving average of :math:`\hat s` over refreshes with factor ``noise_ema`` (as Adam's
moments).  Why this statistic: the self-stabilization gap is :math:`\Delta S=\eta\beta\sigma_u^2/(4\alpha)`,
set by the projection of the noise covariance on :math:`u` — "not the trace, not the largest
eigenvalue" (Liao et al. 2026; docs/theory.md#leading-gap).  Being a spread of per-example gradients at one
:math:`\theta`, it is blind to the deterministic period-2 oscillation of :math:`u\cdot\nabla L` at
the edge of stability, which an EMA of :math:`(u\cdot g_B)^2` over steps would count as noise; and it
costs nothing between refreshes.

Step size and update (heavy-ball momentum :math:`\mu`, as ``torch.optim.SGD``):

.. math::

    \eta_t=\min\Big\{\frac{e+c\sqrt{\eta_{t-1}\hat\sigma_t^2}}{\hat\lambda},\ \eta_{\max}\Big\},\qquad
    b_t=\mu b_{t-1}+g_t,\qquad \theta_{t+1}=\theta_t-\eta_tb_t ,

with the edge :math:`e=2` (``edge``; the proposal's rule).  :math:`e=2` is the stability edge of
plain GD; heavy-ball momentum's edge on a quadratic is :math:`\eta\lambda=2(1+\mu)` (docs/theory.md#momentum-thresholds),
so with :math:`\mu>0` and :math:`e=2` the step keeps a safety factor :math:`1+\mu` below its own edge
(``edge=2*(1+momentum)`` puts it on the edge, which in our MNIST-1D trials diverged within a few
refreshes because sharpness rises between them).  :math:`\eta_{-1}=\min(e/\hat\lambda_0,\eta_{\max})`.
If :math:`\hat\lambda\le0`, :math:`\eta_t=\eta_{\max}`.

Scale of the noise term: :math:`c\sqrt{\eta\hat\sigma^2}` is not dimensionless (the rule is the
proposal's), so ``c`` carries units.  On MNIST-1D (MLP, MSE, :math:`B=64`) we measured
:math:`\hat\sigma^2\approx2\times10^{-3}` with :math:`\eta\approx0.7`, so at ``c = 1`` the
widening is :math:`\approx0.04`, i.e. it moves :math:`\eta_t` by about 2% from :math:`2/\hat\lambda`.

Extra cost over SGD with momentum: nothing on ordinary steps; on a refresh (every ``k`` steps) one
forward pass and one graph-keeping backward pass on the curvature batch, ``lanczos_steps`` HVPs and
one more backward pass.  It is measured by the ``eos_sgd_vs_baselines`` study and reported there.
"""

from __future__ import annotations

import math

import torch

from .._errors import ParameterError
from .._optimizer_defaults import EOS_SGD_DEFAULTS as _D
from .._validation import check_int, check_nonnegative, check_positive, check_real
from ..theory import batch_noise
from ._edge_optimizer import EdgeStepOptimizer

__all__ = ["EoSSGD"]


class EoSSGD(EdgeStepOptimizer):
    """EoS-SGD (see the module docstring for the exact rule); a drop-in ``torch.optim`` optimizer.

    It needs, besides the standard closure, ``curvature_closure`` (the per-example losses of its curvature
    batch, with graph) and the training ``batch_size`` (the noise is scaled to it).

    Parameters
    ----------
    params : iterable of tensors or of parameter groups (a group may set only its own ``lr``, the cap)
    curvature_closure : callable () -> 1-D tensor of the per-example losses of the curvature batch (with graph)
    batch_size : int >= 1, the training batch size :math:`B`
    eta_max : float > 0, the step-size cap :math:`\\eta_{\\max}` (the groups' ``lr``)
    c : float >= 0, noise widening coefficient
    k : int >= 1, curvature refresh period (steps)
    momentum : float in [0, 1)
    noise_ema : float in [0, 1), EMA factor (per refresh) of the projected noise variance
    lanczos_steps : int >= 1, Lanczos iterations (HVPs) per refresh (stops early at ``lanczos_tol``)
    lanczos_tol : float > 0, relative residual at which a refresh stops early
    n_data : int >= 2 or None, training-set size for the without-replacement factor
    edge : float > 0, the numerator's constant :math:`e` (2: the proposal)
    seed : int, seeds the random start vector of the first Lanczos refresh (reproducibility)

    The defaults are those of ``sdeeos train`` and the studies (``sdeeos._optimizer_defaults``, where the
    measurement that chose them is recorded).

    Notes
    -----
    ``step(closure)``: the standard closure (``zero_grad``, ``backward``, return the loss), or none with
    ``.grad`` already filled.  Diagnostics after each step: ``last_lr``, ``last_lambda``, ``noise_variance``
    (:math:`\\hat\\sigma^2`), ``per_example_variance``, ``total_hvp``, ``curvature_seconds`` (=
    ``overhead_seconds``, time spent in refreshes).  Its sibling is :class:`~sdeeos.torch.EdgeSGD`; both
    subclass :class:`~sdeeos.torch.EdgeStepOptimizer`.

    Examples
    --------
    A plain training loop (linear regression; the curvature batch is the whole data set):

    >>> import torch
    >>> from sdeeos.torch import EoSSGD
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(64, 3, generator=g), torch.randn(64, 1, generator=g)
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Linear(3, 1)
    >>> per_example = lambda xb, yb: ((model(xb) - yb) ** 2).sum(1) / 2
    >>> opt = EoSSGD(model.parameters(), curvature_closure=lambda: per_example(x, y), batch_size=16,
    ...              n_data=64, eta_max=10.0)
    >>> for step in range(30):
    ...     idx = torch.randperm(64, generator=g)[:16]
    ...     def closure():
    ...         opt.zero_grad()
    ...         loss = per_example(x[idx], y[idx]).mean()
    ...         loss.backward()
    ...         return loss
    ...     loss = opt.step(closure)
    >>> A = torch.cat([x, torch.ones(64, 1)], 1)  # the Hessian is A^T A / n: lambda_hat is its top eigenvalue
    >>> round(opt.last_lambda / float(torch.linalg.eigvalsh(A.T @ A / 64)[-1]), 5)
    1.0
    >>> opt.last_lr > 2 / opt.last_lambda  # the edge 2 / lambda_hat, widened by the noise (c = 1)
    True
    """

    _CONTROLLER_STATE = EdgeStepOptimizer._CONTROLLER_STATE + (
        "last_lambda", "prev_lr", "noise_variance", "per_example_variance", "_var_ema_raw", "refresh_count")

    def __init__(self, params, *, curvature_closure, batch_size: int, eta_max: float = _D["eta_max"],
                 c: float = _D["c"], k: int = _D["k"], momentum: float = _D["momentum"],
                 noise_ema: float = _D["noise_ema"], lanczos_steps: int = _D["lanczos_steps"],
                 lanczos_tol: float = _D["lanczos_tol"], n_data: int | None = None, edge: float = _D["edge"],
                 seed: int = 0):
        if not callable(curvature_closure):
            raise ParameterError("curvature_closure must be a callable returning the per-example losses (with "
                                 f"graph) of the curvature batch, got {type(curvature_closure).__name__}")
        eta_max = check_positive("eta_max", eta_max)
        c = check_nonnegative("c", c)
        k = check_int("k", k, low=1)
        noise_ema = check_real("noise_ema", noise_ema, low=0.0, high=1.0, high_open=True)
        lanczos_steps = check_int("lanczos_steps", lanczos_steps, low=1)
        lanczos_tol = check_positive("lanczos_tol", lanczos_tol)
        if n_data is not None:
            n_data = check_int("n_data", n_data, low=2)
        self.batch_size = check_int("batch_size", batch_size, low=1, high=n_data)
        self.edge = check_positive("edge", edge)
        seed = check_int("seed", seed, low=0)
        defaults = dict(lr=eta_max, c=c, k=k, momentum=momentum, noise_ema=noise_ema,
                        lanczos_steps=lanczos_steps, lanczos_tol=lanczos_tol)
        super().__init__(params, defaults)
        self.n_data = n_data
        self.curvature_closure = curvature_closure
        self.generator = torch.Generator().manual_seed(seed)
        self.last_lambda = float("nan")
        self.prev_lr = None
        self.noise_variance = 0.0
        self.per_example_variance = 0.0
        self._var_ema_raw = 0.0
        self.refresh_count = 0

    @property
    def curvature_seconds(self) -> float:
        """Time spent in refreshes (the name EoS-SGD's records use)."""
        return self.overhead_seconds

    def _generators(self) -> dict:
        return {"generator": self.generator}

    def _estimates(self) -> dict:
        return {"lambda_hat": self.last_lambda, "noise_variance": self.noise_variance}

    def _before_gradient(self) -> None:
        if self.step_count % self.param_groups[0]["k"] == 0:
            self._refresh()

    def _refresh(self):
        group = self.param_groups[0]
        t0 = self.clock()
        with torch.enable_grad():
            losses = self.curvature_closure()
            if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
                raise ValueError("EoSSGD curvature_closure must return the 1-D tensor of per-example losses")
            c = losses.numel()
            w = torch.full((c,), 1.0 / c, dtype=losses.dtype, requires_grad=True)
            loss = (w * losses).sum()
        res, flat_grads = self._hessian_top(loss, self.eigenvector, self.generator)
        self.eigenvector = res.vector
        self.last_lambda = res.value
        if c >= 2 and bool(torch.isfinite(res.vector).all()):
            with torch.enable_grad():
                (proj,) = torch.autograd.grad(flat_grads, w, grad_outputs=res.vector.to(flat_grads.dtype))
            var = float(proj.detach().to(torch.float64).var(unbiased=True))
        else:
            var = float("nan")
        if math.isfinite(var):
            self.refresh_count += 1
            rho = group["noise_ema"]
            self._var_ema_raw = rho * self._var_ema_raw + (1 - rho) * var
            self.per_example_variance = self._var_ema_raw / (1 - rho ** self.refresh_count)
        self.overhead_seconds += self.clock() - t0

    def _step_size(self, eta_max: float) -> float:
        group = self.param_groups[0]
        self.noise_variance = self.batch_noise_factor(self.batch_size, self.n_data) * self.per_example_variance
        lam = self.last_lambda
        if self.prev_lr is None:
            self.prev_lr = min(self.edge / lam, eta_max) if lam > 0 else eta_max
        lr = self.step_size_rule(lam, self.prev_lr, self.noise_variance, c=group["c"], eta_max=eta_max,
                                 edge=self.edge)
        if math.isfinite(lr):  # a non-finite one stops the run (the base) and is never a later step's eta_{t-1}
            self.prev_lr = lr
        return lr

    @staticmethod
    def batch_noise_factor(batch_size: int, n_data: int | None) -> float:
        r""":math:`1/B-1/n` (``n_data=None``: :math:`1/B`): turns the ``ddof=1`` per-example variance of
        :math:`u\cdot\nabla\ell_i` into :math:`\sigma_u^2(B)` for batches without replacement."""
        if n_data is None:  # an infinite population: independent draws
            return float(batch_noise.centred_coefficient(batch_size, batch_size, "with_replacement"))
        # a(B, n) multiplies the population variance, which is (n - 1)/n times the ddof=1 one
        return float(batch_noise.centred_coefficient(batch_size, n_data, "without_replacement")) * (n_data - 1) / n_data

    @staticmethod
    def step_size_rule(lam: float, prev_lr: float, noise_variance: float, *, c: float, eta_max: float,
                       edge: float = 2.0) -> float:
        r""":math:`\min\{(e+c\sqrt{\eta_{t-1}\hat\sigma^2})/\hat\lambda,\ \eta_{\max}\}` as a pure function
        (NaN when :math:`\hat\lambda` or :math:`\hat\sigma^2` is: the caller refuses it)."""
        if math.isnan(lam) or math.isnan(noise_variance):
            return math.nan
        if lam <= 0:
            return eta_max
        return min((edge + c * (prev_lr * noise_variance) ** 0.5) / lam, eta_max)
