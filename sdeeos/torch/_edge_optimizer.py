r"""The base of the step-size controllers that follow a measured edge of stability (EoS-SGD, EdgeSGD).

A controller is heavy-ball SGD (``torch.optim.SGD`` with ``momentum``: :math:`b_t=\mu b_{t-1}+g_t`,
:math:`\theta_{t+1}=\theta_t-\eta_tb_t`) whose step size :math:`\eta_t` is set, every step, from
curvature estimates that it refreshes from time to time.  A subclass says *when* it refreshes and *what*
it measures (:meth:`EdgeStepOptimizer._before_gradient`) and how the estimates become a step size
(:meth:`EdgeStepOptimizer._step_size`); the base does the gradient, the update and the checks.

``step(closure)``: ``closure()`` returns the 1-D tensor of per-example losses of the mini-batch (with
graph); the controller differentiates their mean.  A step size that is not a finite positive number is
never applied: :class:`NonFiniteCurvatureError` stops the run, naming the step and the last estimates.
"""

from __future__ import annotations

import abc
import math
import time

import torch

from .._errors import SdeeosError
from .._validation import check_real
from ._curvature import EigenResult, lanczos_top

__all__ = ["EdgeStepOptimizer", "NonFiniteCurvatureError"]


class NonFiniteCurvatureError(SdeeosError, FloatingPointError):
    """A curvature estimate (or the step size made from it) is not finite: the run stops at this step."""


class EdgeStepOptimizer(torch.optim.Optimizer, abc.ABC):
    """Heavy-ball SGD with a measured step size (see the module docstring).

    Diagnostics after each step: ``step_count``, ``last_lr``, ``total_hvp`` (Hessian-vector products
    spent on measurements), ``overhead_seconds`` (time spent measuring), ``step_seconds`` (time spent in
    the plain step: the closure, its gradient and the update).
    """

    def __init__(self, params, defaults: dict):
        defaults = dict(defaults)
        defaults["momentum"] = check_real("momentum", defaults.get("momentum", 0.0), low=0.0, high=1.0,
                                          high_open=True)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"{type(self).__name__} supports one parameter group")
        self.step_count = 0
        self.last_lr = float("nan")
        self.total_hvp = 0
        self.overhead_seconds = 0.0
        self.step_seconds = 0.0
        self.clock = time.perf_counter

    def _params(self):
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    @staticmethod
    def _flat(tensors):
        return torch.cat([t.reshape(-1) for t in tensors])

    def _hessian_top(self, loss: torch.Tensor, v0, generator) -> tuple[EigenResult, torch.Tensor]:
        """Warm-started Lanczos (``lanczos_steps``, ``lanczos_tol`` of the group) on the Hessian of ``loss``;
        returns the estimate and the graph-keeping flat gradient (for further products)."""
        group = self.param_groups[0]
        params = self._params()
        with torch.enable_grad():
            flat_grads = self._flat(torch.autograd.grad(loss, params, create_graph=True))

        def hvp(v):
            with torch.enable_grad():
                hv = torch.autograd.grad(flat_grads, params, grad_outputs=v.to(flat_grads.dtype), retain_graph=True)
            return self._flat(hv).detach()

        res = lanczos_top(hvp, flat_grads.numel(), v0=v0, tol=group["lanczos_tol"], max_iter=group["lanczos_steps"],
                          dtype=torch.float64, generator=generator)
        self.total_hvp += res.n_hvp
        return res, flat_grads

    @abc.abstractmethod
    def _before_gradient(self, closure) -> None:
        """Refresh the estimates if one is due (called before the step's gradient)."""

    @abc.abstractmethod
    def _step_size(self, batch_size: int) -> float:
        """The step size of this step from the current estimates (``step_count`` already advanced)."""

    def _estimates(self) -> dict:
        """The last estimates, for error messages."""
        return {}

    @torch.no_grad()
    def step(self, closure):  # noqa: D401
        """One step; ``closure()`` returns the per-example losses of the mini-batch."""
        params = self._params()
        self._before_gradient(closure)
        t0 = self.clock()
        with torch.enable_grad():
            losses = closure()
            if losses.dim() != 1:
                raise ValueError(f"{type(self).__name__} closure must return the 1-D tensor of per-example losses")
            loss = losses.mean()
            grads = torch.autograd.grad(loss, params)
        self.step_count += 1
        lr = self._step_size(losses.numel())
        if not (math.isfinite(lr) and lr > 0):
            est = ", ".join(f"{k} = {v:.6g}" for k, v in self._estimates().items())
            raise NonFiniteCurvatureError(
                f"{type(self).__name__}: step size {lr!r} at step {self.step_count - 1} is not a finite positive "
                f"number; last estimates: {est or 'none'}")
        self.last_lr = lr
        mu = self.param_groups[0]["momentum"]
        for p, g in zip(params, grads):
            state = self.state[p]
            if mu > 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(mu).add_(g)
                g = buf
            p.add_(g, alpha=-lr)
        self.step_seconds += self.clock() - t0
        return loss.detach()
