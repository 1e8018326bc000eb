r"""Label-noise SGD: the noisy targets of one step and the projected gradient-noise variance they add.

With targets :math:`y_i+s\xi_i` (:math:`\xi_i` fresh i.i.d. standard normal, C outputs) the MSE step gradient
is :math:`g=\frac1B\sum_{i\in\mathcal B}\big(\nabla\ell_i-J_i^\top s\xi_i\big)`, :math:`J_i=\partial f(x_i)/\partial\theta`.
The noise has mean zero and is independent of the batch, so the cross term vanishes and, for batches
drawn uniformly without replacement,

.. math:: \sigma_u^2(B,s)=u^\top\operatorname{Cov}(g)\,u=\frac{n-B}{B(n-1)}\,\sigma_1^2
          +\frac{s^2}{B}\,\frac1n\sum_{i=1}^n\lVert J_iu\rVert^2 ,

with :math:`\sigma_1^2` the single-example variance of :math:`u\cdot\nabla\ell_i` (exact, no expansion).
The second term does not vanish at an interpolating minimum, where the first one does: the noise
persists at the stationary state.
"""

from __future__ import annotations

import torch
from torch.func import jvp

from .._validation import check_int, check_real
from ._curvature import FlatParams
from ._quantities import projected_noise_variance

__all__ = ["label_noise_targets", "output_jacobian_energy", "label_noise_projected_variance"]


def label_noise_targets(targets: torch.Tensor, s: float, generator: torch.Generator) -> torch.Tensor:
    r"""One step's targets :math:`y+s\,\xi`, :math:`\xi` fresh i.i.d. standard normal from ``generator``.

    The noise has its own generator (the batch stream never sees it): a run is reproducible by seed.
    """
    return targets + s * torch.randn(targets.shape, generator=generator, dtype=targets.dtype)


def output_jacobian_energy(flat: FlatParams, x: torch.Tensor, theta: torch.Tensor, u: torch.Tensor) -> float:
    r""":math:`\frac1n\sum_i\lVert J_iu\rVert^2` (one JVP of the outputs; equals :math:`u^\top Gu` for the
    Gauss–Newton matrix :math:`G=\frac1n\sum_iJ_i^\top J_i`)."""
    theta = theta.detach()
    ju = jvp(lambda th: flat.call(th, x), (theta,), (u.detach().to(theta.dtype),))[1]
    return float(ju.to(torch.float64).square().sum(dim=-1).mean())


def label_noise_projected_variance(flat: FlatParams, per_example_fn, x: torch.Tensor, theta: torch.Tensor,
                                   u: torch.Tensor, batch_size: int, s: float) -> dict:
    r""":math:`\sigma_u^2(B,s)` of the module doc, with its two parts.

    Returns ``sigma_u_sq`` (the total), ``sampling`` (:math:`\frac{n-B}{B(n-1)}\sigma_1^2`), ``label``
    (:math:`\frac{s^2}{B}\frac1n\sum_i\lVert J_iu\rVert^2`) and ``sigma1_sq``.
    """
    n = int(x.shape[0])
    b = check_int("batch_size", batch_size, low=1, high=n)
    s = check_real("s", s, low=0.0)
    clean = projected_noise_variance(per_example_fn, theta, u, [b])
    label = s * s / b * output_jacobian_energy(flat, x, theta, u) if s > 0 else 0.0
    sampling = float(clean["sigma_u_sq"][0])
    return {"sigma_u_sq": sampling + label, "sampling": sampling, "label": label, "sigma1_sq": clean["sigma1_sq"]}
