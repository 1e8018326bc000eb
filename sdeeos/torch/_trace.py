r"""The trace of the Hessian: Hutchinson's estimator with its standard error, or exact for small models.

Hutchinson (1990): for :math:`v` with independent Rademacher entries (:math:`\pm1`, each with
probability ½), :math:`\mathbb E[v^\top Hv]=\operatorname{tr}H` and

.. math:: \operatorname{Var}(v^\top Hv)=2\sum_{i\ne j}H_{ij}^2=2\big(\lVert H\rVert_F^2-\textstyle\sum_iH_{ii}^2\big),

the smallest variance of any i.i.d. unit-variance distribution of the entries.  The estimate is the
mean of :math:`m` samples, its standard error the sample standard deviation over :math:`\sqrt m`; with
``rel_se`` the sampling continues until that error is at most ``rel_se`` times the estimate's modulus.
``method="exact"`` sums :math:`e_i^\top He_i` over the :math:`P` coordinate vectors: :math:`P` products,
no sampling error.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .._errors import ParameterError
from .._validation import check_int, check_positive
from ._curvature import HessianOperator

__all__ = ["TraceResult", "hessian_trace"]

TRACE_METHODS = ("hutchinson", "exact")


@dataclasses.dataclass(frozen=True)
class TraceResult:
    """``value`` (the trace or its estimate), ``stderr`` (0 when exact), ``n_hvp`` products, ``method``."""

    value: float
    stderr: float
    n_hvp: int
    method: str


def _rademacher(dim: int, dtype, device, generator) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    bits = torch.randint(0, 2, (dim,), generator=generator, device=gen_device)
    return (2 * bits - 1).to(device=device, dtype=dtype)


def hessian_trace(loss_fn, theta: torch.Tensor, *, method: str = "hutchinson", n_samples: int = 100,
                  rel_se: float | None = None, max_samples: int = 10_000,
                  generator: torch.Generator | None = None) -> TraceResult:
    r""":math:`\operatorname{tr}\nabla^2L(\theta)` of ``loss_fn`` (a function of the flat parameters; see module doc).

    ``n_samples`` Rademacher samples (at least 2), or with ``rel_se`` as many as it takes for a
    standard error of at most ``rel_se`` times the estimate (at most ``max_samples``).  Accumulated in
    float64 whatever ``theta``'s dtype.
    """
    if method not in TRACE_METHODS:
        raise ParameterError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    n_samples = check_int("n_samples", n_samples, low=2)
    if rel_se is not None:
        rel_se = check_positive("rel_se", rel_se)
        max_samples = check_int("max_samples", max_samples, low=n_samples)
    theta = theta.detach()
    op = HessianOperator(loss_fn, theta)
    dim = op.dim
    if method == "exact":
        total = 0.0
        e = torch.zeros(dim, dtype=theta.dtype, device=theta.device)
        for i in range(dim):
            e[i] = 1
            total += float(op(e)[i].to(torch.float64))
            e[i] = 0
        return TraceResult(value=total, stderr=0.0, n_hvp=op.n_hvp, method=method)
    # running mean and sum of squared deviations (Welford), in float64
    m, mean, m2 = 0, 0.0, 0.0
    while True:
        v = _rademacher(dim, theta.dtype, theta.device, generator)
        q = float(torch.dot(v.to(torch.float64), op(v).to(torch.float64)))
        m += 1
        delta = q - mean
        mean += delta / m
        m2 += delta * (q - mean)
        if m < n_samples:
            continue
        se = math.sqrt(m2 / (m - 1) / m)
        if rel_se is None or m >= max_samples or se <= rel_se * abs(mean):
            return TraceResult(value=mean, stderr=se, n_hvp=op.n_hvp, method=method)
