r"""Losses the measurements accept: the two named conventions, or any callable ``loss(outputs, targets)``.

Named losses (docs/theory.md#loss-conventions)
----------------------------------------------
* ``"mse"``: :math:`\ell_i=\tfrac12\lVert f(x_i)-y_i\rVert^2` summed over the outputs; the targets must
  have exactly the outputs' shape (a ``(n,)`` target against ``(n, 1)`` outputs would broadcast to an
  ``(n, n)`` residual and give a wrong loss without any error, so it is refused).
* ``"ce"``: softmax cross-entropy; integer labels of shape ``outputs.shape[:-1]`` or class
  probabilities of the outputs' shape.

Callables
---------
A callable is taken to be the *mean-over-examples* loss :math:`L=\frac1n\sum_i\ell_i` of a batch, as
``torch.nn.MSELoss()``, ``torch.nn.HuberLoss()``, ``torch.nn.BCEWithLogitsLoss()`` or
``torch.nn.CrossEntropyLoss()`` are with their default ``reduction="mean"``.  Where a quantity needs
the per-example losses, they are :math:`\ell_i=` ``loss(outputs[i:i+1], targets[i:i+1])``, evaluated
for all :math:`i` at once with ``torch.func.vmap``; :func:`check_mean_of_examples` refuses a callable
whose batch value is not the mean of these (``reduction="sum"``, say).  The loss's Gauss–Newton factor
is the Hessian of :math:`\ell_i` in the outputs,

.. math:: \Omega_i=\partial^2\ell_i/\partial f_i^2\qquad(C\times C),

:math:`I` for ``"mse"``, :math:`\operatorname{diag}p_i-p_ip_i^\top` for ``"ce"``, and ``torch.func.hessian``
of the callable otherwise.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch.func import hessian, vmap

from .._errors import ParameterError
from .._train_config import LOSSES

__all__ = ["LossLike", "check_loss", "loss_name", "per_example_loss", "mean_loss", "output_hessian",
           "check_mean_of_examples"]

LossLike = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def check_loss(loss: LossLike) -> LossLike:
    """``loss`` itself when it is one of the named losses or a callable; one line otherwise."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ParameterError(f"loss must be one of {LOSSES} or a callable loss(outputs, targets), got {loss!r}")
        return loss
    if callable(loss):
        return loss
    raise ParameterError(f"loss must be one of {LOSSES} or a callable loss(outputs, targets), "
                         f"got {type(loss).__name__}")


def loss_name(loss: LossLike) -> str:
    """A printable name: the string itself, or the callable's class/function name."""
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", type(loss).__name__)


def _check_targets(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> None:
    if loss == "mse":
        if tuple(targets.shape) != tuple(outputs.shape):
            raise ParameterError(
                f"targets must have the outputs' shape {tuple(outputs.shape)} for loss 'mse' (no broadcasting), "
                f"got {tuple(targets.shape)}")
    elif targets.is_floating_point():
        if tuple(targets.shape) != tuple(outputs.shape):
            raise ParameterError(f"class-probability targets must have the outputs' shape {tuple(outputs.shape)} "
                                 f"for loss 'ce', got {tuple(targets.shape)}")
    elif tuple(targets.shape) != tuple(outputs.shape[:-1]):
        raise ParameterError(f"integer labels must have shape {tuple(outputs.shape[:-1])} for loss 'ce' "
                             f"(outputs {tuple(outputs.shape)}), got {tuple(targets.shape)}")


def _one_example(loss):
    def ell(out_i, t_i):
        return loss(out_i.unsqueeze(0), t_i.unsqueeze(0))

    return ell


def per_example_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: LossLike) -> torch.Tensor:
    r"""Vector of :math:`\ell_i`, one per row of ``outputs``."""
    if isinstance(loss, str):
        check_loss(loss)
        _check_targets(outputs, targets, loss)
        if loss == "mse":
            return 0.5 * (outputs - targets).square().sum(dim=-1)
        return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
    return _vmapped(vmap(_one_example(check_loss(loss))), loss, "per-example losses")(outputs, targets)


def _vmapped(fn, loss, what: str):
    """``fn`` (a ``vmap``) with its failure turned into one line that says what is supported."""

    def run(*args):
        try:
            return fn(*args)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ParameterError(
                f"the {what} of loss {loss_name(loss)} need torch.func.vmap of loss(outputs[i:i+1], targets[i:i+1]), "
                f"which failed ({first}); write the loss with batched torch operations (no .item(), no "
                "data-dependent Python branches) or use 'mse'/'ce'") from exc

    return run


def mean_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: LossLike) -> torch.Tensor:
    r""":math:`L=\frac1n\sum_i\ell_i`; a callable is called once on the whole batch."""
    if isinstance(loss, str):
        return per_example_loss(outputs, targets, loss).mean()
    value = check_loss(loss)(outputs, targets)
    if value.ndim != 0:
        raise ParameterError(f"loss {loss_name(loss)} must return a scalar (reduction='mean'), "
                             f"got shape {tuple(value.shape)}")
    return value


def output_hessian(outputs: torch.Tensor, targets: torch.Tensor | None, loss: LossLike) -> torch.Tensor:
    r""":math:`\Omega_i=\partial^2\ell_i/\partial f_i^2` for every example: shape ``(n, C, C)`` (outputs ``(n, C)``)."""
    outputs = outputs.detach()
    n, c = int(outputs.shape[0]), int(outputs.shape[-1])
    if outputs.ndim != 2:
        raise ParameterError(f"the Gauss-Newton factor needs outputs of shape (n, C), got {tuple(outputs.shape)}")
    if isinstance(loss, str):  # neither factor depends on the targets, which may be omitted
        if targets is not None:
            _check_targets(outputs, targets, loss)
        if loss == "mse":
            return torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(n, c, c)
        p = torch.softmax(outputs, dim=-1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return _vmapped(vmap(hessian(_one_example(check_loss(loss)))), loss, "output Hessians")(outputs, targets).detach()


def check_mean_of_examples(outputs: torch.Tensor, targets: torch.Tensor, loss: LossLike) -> None:
    r"""Refuse a callable whose batch value is not :math:`\frac1n\sum_i\ell_i` (e.g. ``reduction="sum"``).

    The two sides are sums of the same :math:`n` terms in different orders; they agree to
    :math:`n\,u\sum_i|\ell_i|/n` (:math:`u` the unit round-off), and the tolerance is 8 times that.  A
    sum reduction is off by the factor :math:`n`, far outside it.
    """
    if isinstance(loss, str):
        return
    with torch.no_grad():
        batch = mean_loss(outputs, targets, loss)
        each = per_example_loss(outputs, targets, loss)
    n = int(each.shape[0])
    u = torch.finfo(each.dtype).eps if each.is_floating_point() else 0.0
    tol = 8 * n * u * float(each.abs().mean()) + torch.finfo(torch.float64).tiny
    if abs(float(batch) - float(each.mean())) > tol:
        raise ParameterError(
            f"loss {loss_name(loss)} on the batch ({float(batch):.6g}) is not the mean of its per-example values "
            f"loss(outputs[i:i+1], targets[i:i+1]) ({float(each.mean()):.6g}): give a loss with reduction='mean'")
