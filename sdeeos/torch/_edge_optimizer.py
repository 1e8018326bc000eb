r"""The base of the step-size controllers that follow a measured edge of stability (EoS-SGD, EdgeSGD).

A controller is heavy-ball SGD (``torch.optim.SGD`` with ``momentum``: :math:`b_t=\mu b_{t-1}+g_t`,
:math:`\theta_{t+1}=\theta_t-\eta_tb_t`) whose step size :math:`\eta_t` is set, every step, from
curvature estimates that it refreshes from time to time.  A subclass says *when* it refreshes and *what*
it measures (:meth:`EdgeStepOptimizer._before_gradient`) and how the estimates become a step size
(:meth:`EdgeStepOptimizer._step_size`); the base does the update, the checks and the checkpoint.

A drop-in ``torch.optim`` optimizer
-----------------------------------
* ``step(closure)`` takes the standard closure (``zero_grad``, ``backward``, return the loss) or none
  (``.grad`` already filled): the update reads ``p.grad``, so clipping, logging and gradient hooks work as
  with ``torch.optim.SGD``.  The curvature is measured on the controller's own batches (given to the
  constructor), never through the closure, and before the gradient is used.
* Every parameter group's ``lr`` is its step-size *cap* :math:`\eta_{\max}`: the group steps with
  :math:`\min(\eta_t,\ \mathrm{lr})`.  So several groups work (a smaller cap is never less stable: for
  :math:`D\preceq\eta I` and :math:`H\succeq0`, :math:`\lambda_{\max}(DH)\le\eta\lambda_{\max}(H)`), and
  ``torch.optim.lr_scheduler`` schedulers schedule the cap.  The rule's own :math:`\eta_{\max}` is the
  largest cap.  Every other hyperparameter is shared by all groups (the edge is one for all parameters).
* ``state_dict()`` holds the controller (step count, estimates, eigenvector, schedule, generator states)
  besides the momentum buffers, so a run saved, reloaded into a fresh optimizer and continued equals the
  uninterrupted run bit for bit (where its schedule does not depend on wall time).

A step size that is not a finite non-negative number is never applied: :class:`NonFiniteCurvatureError`
stops the run with one line naming the step and the last estimates.
"""

from __future__ import annotations

import abc
import math
import time

import torch

from .._errors import ParameterError, SdeeosError
from .._validation import check_positive, check_real
from ._curvature import EigenResult, lanczos_top

__all__ = ["EdgeStepOptimizer", "NonFiniteCurvatureError"]


class NonFiniteCurvatureError(SdeeosError, FloatingPointError):
    """A curvature estimate (or the step size made from it) is not finite: the run stops at this step."""


class EdgeStepOptimizer(torch.optim.Optimizer, abc.ABC):
    """Heavy-ball SGD with a measured step size (see the module docstring).

    Diagnostics after each step: ``step_count``, ``last_lr`` (:math:`\\eta_t` before the group caps),
    ``total_hvp`` (Hessian-vector products spent on measurements), ``overhead_seconds`` (time spent
    measuring), ``step_seconds`` (time spent in the plain step: the closure and the update; without a
    closure, the time since the previous step returned).
    """

    #: attributes the checkpoint holds besides the momentum buffers (subclasses extend it)
    _CONTROLLER_STATE = ("step_count", "last_lr", "total_hvp", "overhead_seconds", "step_seconds", "eigenvector")

    def __init__(self, params, defaults: dict):
        defaults = dict(defaults)
        defaults["lr"] = check_positive("eta_max", defaults["lr"])
        defaults["momentum"] = check_real("momentum", defaults.get("momentum", 0.0), low=0.0, high=1.0,
                                          high_open=True)
        super().__init__(params, defaults)
        self.step_count = 0
        self.last_lr = float("nan")
        self.total_hvp = 0
        self.overhead_seconds = 0.0
        self.step_seconds = 0.0
        self.eigenvector = None
        self.clock = time.perf_counter
        self._last_end = None

    def add_param_group(self, param_group: dict) -> None:
        """As ``torch.optim.Optimizer``'s; a group may set its own ``lr`` (cap) only."""
        name = type(self).__name__
        for key, value in param_group.items():
            if key not in ("params", "lr") and key in self.defaults and value != self.defaults[key]:
                raise ParameterError(f"{key} must be the same in every parameter group of {name} (got {value!r}, "
                                     f"the optimizer's is {self.defaults[key]!r}): only lr, the step-size cap, may "
                                     "differ per group")
        super().add_param_group(param_group)
        check_positive("lr", self.param_groups[-1]["lr"])

    # ------------------------------------------------------------------ checkpoint
    def _controller_state(self) -> dict:
        """The controller's state as plain values and tensors (``torch.load(weights_only=True)`` reads it)."""
        out = {"kind": type(self).__name__}
        for key in self._CONTROLLER_STATE:
            value = getattr(self, key)
            out[key] = value.clone() if isinstance(value, torch.Tensor) else value
        for key, gen in self._generators().items():
            out[key] = gen.get_state()
        return out

    def _load_controller_state(self, state: dict) -> None:
        for key in self._CONTROLLER_STATE:
            value = state[key]
            setattr(self, key, value.clone() if isinstance(value, torch.Tensor) else value)
        for key, gen in self._generators().items():
            gen.set_state(state[key])

    def _generators(self) -> dict:
        """The random generators the controller owns (name -> generator); their states are checkpointed."""
        return {}

    def state_dict(self) -> dict:
        """``torch.optim.Optimizer.state_dict()`` plus ``"controller"``: everything a resumed run needs."""
        out = super().state_dict()
        out["controller"] = self._controller_state()
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict` of the same class (the constructor's arguments must be the same)."""
        name = type(self).__name__
        state_dict = dict(state_dict)
        controller = state_dict.pop("controller", None)
        if not isinstance(controller, dict) or controller.get("kind") != name:
            got = controller.get("kind") if isinstance(controller, dict) else "no controller state"
            raise ParameterError(f"state_dict must be one saved by {name}.state_dict(), got {got}")
        super().load_state_dict(state_dict)
        self._load_controller_state(controller)
        self._last_end = None

    # ------------------------------------------------------------------ measurement helpers
    def _params(self):
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @staticmethod
    def _flat(tensors):
        return torch.cat([t.reshape(-1) for t in tensors])

    def _hessian_top(self, loss: torch.Tensor, v0, generator) -> tuple[EigenResult, torch.Tensor]:
        """Warm-started Lanczos (``lanczos_steps``, ``lanczos_tol``) on the Hessian of ``loss`` in every
        parameter; returns the estimate and the graph-keeping flat gradient (for further products)."""
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
    def _before_gradient(self) -> None:
        """Refresh the estimates if one is due (called before the step's gradient)."""

    @abc.abstractmethod
    def _step_size(self, eta_max: float) -> float:
        """The step size of this step from the current estimates (``step_count`` already advanced)."""

    def _estimates(self) -> dict:
        """The last estimates, for error messages."""
        return {}

    @property
    def eta_max(self) -> float:
        """The rule's cap: the largest ``lr`` of the parameter groups."""
        return max(group["lr"] for group in self.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        """One step; ``closure`` (optional) is the standard one: ``zero_grad``, ``backward``, return the loss."""
        name = type(self).__name__
        t_start = self.clock()
        for i, group in enumerate(self.param_groups):  # an LR scheduler may have set it
            if not (math.isfinite(group["lr"]) and group["lr"] >= 0):
                raise ParameterError(f"lr of parameter group {i} of {name} (its step-size cap) must be a finite "
                                     f"number >= 0, got {group['lr']!r}")
        self._before_gradient()
        t0 = self.clock()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.step_count += 1
        lr = self._step_size(self.eta_max)
        if not (math.isfinite(lr) and lr >= 0):
            est = ", ".join(f"{k} = {v:.6g}" for k, v in self._estimates().items())
            raise NonFiniteCurvatureError(
                f"{name}: step size {lr!r} at step {self.step_count - 1} is not a finite number >= 0 (not applied); "
                f"last estimates: {est or 'none'}")
        self.last_lr = lr
        for group in self.param_groups:
            lr_g, mu = min(lr, group["lr"]), group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if mu > 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = g.detach().clone()
                    else:
                        buf.mul_(mu).add_(g)
                    g = buf
                p.add_(g, alpha=-lr_g)
        end = self.clock()
        between = t_start - self._last_end if closure is None and self._last_end is not None else 0.0
        self.step_seconds += end - t0 + between
        self._last_end = end
        return loss
