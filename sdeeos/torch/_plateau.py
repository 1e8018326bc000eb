r"""Constants on the edge-of-stability plateau: the gradient-flow sharpening rate and the noise kernel K.

**Sharpening rate by gradient-flow continuation** (:func:`gradient_flow_rate`).  In the reduced model
:math:`\alpha` is the rate :math:`dS/dt` of the sharpness along the *constrained* (non-oscillating)
trajectory, time :math:`t=\eta\times` steps.  From a plateau snapshot :math:`\theta` this function
first removes the oscillation (the k-direction Newton projection :math:`\theta^\dagger`,
:func:`sdeeos.torch.project_to_stable_set_k`), then runs GD with a small step ``step`` (default
:math:`\eta/5`, so :math:`\text{step}\cdot\lambda_{\max}\approx0.4\ll2`: no oscillation, close to
gradient flow) for ``n_steps`` steps, measures :math:`\lambda_{\max}` (warm-started Lanczos) at
``n_points`` equally spaced times and returns the least-squares slope :math:`d\lambda_{\max}/dt` with
its standard error.  Cost: ``n_steps`` gradients plus ``n_points`` Lanczos solves (reported).

**Noise kernel** (:func:`noise_kernel`).  Same definition as :func:`sdeeos.theory.mean_square.noise_kernel_norm`
(delocalisation closure of the exact second-moment recursion of SGD on the linearised model,
batches without replacement):

.. math:: \mathcal K=\eta\,\frac{c_{\rm diag}}{N}\sum_a\frac{\lambda_a}{2-\eta\lambda_a(1+c_{\rm full})},
          \qquad c_{\rm diag}=\frac{n(n-B)}{B(n-1)},\ c_{\rm full}=-\frac{n-B}{B(n-1)},

with :math:`\lambda_a` the eigenvalues of the NTK :math:`\Theta=JJ^\top/n` of the residuals
(:math:`J` the :math:`nC\times P` Jacobian of the C outputs of the n examples; :math:`\Theta`'s non-zero
eigenvalues are those of the Gauss–Newton matrix :math:`J^\top J/n` of the mean loss
:math:`\frac1n\sum_i\frac12\lVert f_i-e_{y_i}\rVert^2`), and :math:`N=n` residuals for a scalar output.  With
C outputs per example the C residuals of an example are sampled together; the closure
:math:`\operatorname{BlockDiag}(M)\approx\frac{\operatorname{tr}M}{nC}I` then gives the same sum with
:math:`N=nC`, i.e. :math:`\mathcal K=\frac1C\times` the one-output formula evaluated at the eigenvalues of
Θ.  Only MSE (the linear model's loss) is covered.

The sum needs every eigenvalue; we compute the top ``n_top`` exactly (Lanczos on Gauss–Newton products
:math:`J^\top(Jv)/n`) and :math:`\operatorname{tr}\Theta=\frac1n\lVert J\rVert_F^2` from per-example
Jacobians (``torch.func.vmap`` of ``jacrev``, in chunks).  Each term :math:`k(\lambda)` is convex with
:math:`k(0)=0`, so the tail (trace :math:`\tau` left after the top eigenvalues, each tail eigenvalue at most
:math:`\lambda_{\rm top}`) contributes between :math:`k'(0)\,\tau` (``K_lower``) and
:math:`\tau\,k(\lambda_{\rm top})/\lambda_{\rm top}` (``K_upper``).  Both bounds are returned; ``K_trace``
:math:`=\frac{\eta c_{\rm diag}}{2N}\operatorname{tr}\Theta` is the small-η form.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vjp, vmap

from .._errors import ParameterError
from .._validation import check_choice, check_int, check_positive
from ..theory import mean_square
from ._curvature import FlatParams, HessianOperator, lanczos_top
from ._edge_directions import TopKResult, project_to_stable_set_k, top_k_eigenpairs
from ._nets import LOSSES

__all__ = ["gradient_flow_rate", "noise_kernel", "ntk_trace", "ntk_trace_per_example", "gauss_newton_top"]


def gradient_flow_rate(loss_fn, theta: torch.Tensor, eig: TopKResult, eta: float, *, step: float | None = None,
                       n_steps: int = 100, n_points: int = 5, tol: float = 1e-6, max_iter: int = 100,
                       generator=None) -> dict:
    r"""Plateau sharpening rate :math:`d\lambda_{\max}/dt` along small-step GD from :math:`\theta^\dagger` (see module doc).

    ``eig``: top-k pairs at ``theta`` (defines the projection).  Returns ``rate``, ``rate_stderr``,
    ``times``, ``sharpness``, ``step``, ``n_steps``, ``n_grad``, ``n_hvp``, ``seconds``.
    """
    t0 = time.perf_counter()
    eta = check_positive("eta", eta)
    step = eta / 5 if step is None else check_positive("step", step)
    n_steps = check_int("n_steps", n_steps, low=1)
    n_points = check_int("n_points", n_points, low=3, high=n_steps + 1)
    th, eig_d, n_hvp = project_to_stable_set_k(loss_fn, theta, eig, n_newton=1, generator=generator)
    th = th.detach().clone()
    v = eig_d.vectors[0]
    marks = set(np.linspace(0, n_steps, n_points).round().astype(int).tolist())
    times, values = [], []
    g_fn = grad(loss_fn)
    for s in range(n_steps + 1):
        if s in marks:
            op = HessianOperator(loss_fn, th)
            e = lanczos_top(op, op.dim, v0=v, tol=tol, max_iter=max_iter, dtype=th.dtype, generator=generator)
            n_hvp += e.n_hvp
            v = e.vector
            times.append(s * step)
            values.append(e.value)
        if s < n_steps:
            th = th - step * g_fn(th).detach()
    t, y = np.asarray(times), np.asarray(values)
    A = np.vstack([t, np.ones_like(t)]).T
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = len(t) - 2
    s2 = float(resid @ resid) / dof if dof > 0 else float("nan")
    se = float(np.sqrt(s2 / np.sum((t - t.mean()) ** 2)))
    return {"rate": float(coef[0]), "rate_stderr": se, "times": t, "sharpness": y, "step": step,
            "n_steps": n_steps, "n_grad": n_steps, "n_hvp": int(n_hvp), "seconds": time.perf_counter() - t0}


def ntk_trace_per_example(flat: FlatParams, x: torch.Tensor, theta: torch.Tensor, *, loss: str = "mse",
                          chunk: int = 64) -> torch.Tensor:
    r"""Per example :math:`\operatorname{tr}(J_i^\top\Omega_iJ_i)`, :math:`J_i=\partial f(x_i)/\partial\theta`
    (float64, one value per row of ``x``).

    :math:`\Omega_i` is the Hessian of the loss in the outputs: :math:`I` for ``"mse"``,
    :math:`\operatorname{diag}p_i-p_ip_i^\top` for ``"ce"`` (the Gauss–Newton matrix of its quadratic
    model).  One ``vmap``-ed per-example gradient per output (on CPU cheaper than ``jacrev``, which
    materialises the whole Jacobian); for cross-entropy one more, of :math:`p_i\cdot f_i` with :math:`p_i`
    held fixed: :math:`\operatorname{tr}(J^\top\Omega J)=\sum_cp_c\lVert\nabla f_c\rVert^2-\lVert\nabla(p\cdot f)\rVert^2`.
    Squares are summed in the parameters' dtype per example, the sums in float64.
    """
    check_choice("loss", loss, LOSSES)
    chunk = check_int("chunk", chunk, low=1)
    theta = theta.detach()
    # differentiate per parameter tensor, not through the flat vector: scattering every per-example
    # gradient back into a length-P vector costs 3x the gradients themselves on CPU
    values = tuple(flat.unflatten(theta).values())

    def output(vals, xi):
        return functional_call(flat.module, dict(zip(flat.names, vals)), (xi.unsqueeze(0),)).squeeze(0)

    def squared_norms(fn, xs, *args):  # per-example squared norm of grad(fn), summed over the parameter tensors
        grads = vmap(grad(fn), in_dims=(None, 0) + (0,) * len(args))(values, xs, *args)
        return sum(g.reshape(g.shape[0], -1).square().sum(dim=1).to(torch.float64) for g in grads)

    parts = []
    for i in range(0, int(x.shape[0]), chunk):
        xs = x[i:i + chunk]
        with torch.no_grad():
            out = flat.call(theta, xs).to(torch.float64)
        n_out = int(out.shape[-1])
        norms = torch.stack([squared_norms(lambda vals, xi, c=c: output(vals, xi)[c], xs) for c in range(n_out)],
                            dim=1)
        if loss == "mse":
            parts.append(norms.sum(dim=1))
        else:
            p = torch.softmax(out, dim=-1)
            mixed = squared_norms(lambda vals, xi, pi: torch.dot(output(vals, xi), pi), xs, p.to(theta.dtype))
            parts.append((p * norms).sum(dim=1) - mixed)
    return torch.cat(parts)


def ntk_trace(flat: FlatParams, x: torch.Tensor, theta: torch.Tensor, *, chunk: int = 64) -> float:
    r""":math:`\operatorname{tr}\Theta=\frac1n\sum_i\lVert\partial f(x_i)/\partial\theta\rVert_F^2` from
    per-example gradients (`ntk_trace_per_example`, MSE)."""
    return float(ntk_trace_per_example(flat, x, theta, chunk=chunk).mean())


def gauss_newton_top(flat: FlatParams, x: torch.Tensor, theta: torch.Tensor, n_top: int, *, tol: float = 1e-6,
                     max_hvp: int = 400, generator=None) -> TopKResult:
    r"""Top eigenvalues of the Gauss–Newton matrix :math:`J^\top J/n` (= those of Θ) by block Lanczos on
    :math:`v\mapsto J^\top(Jv)/n` (one JVP and one VJP per product)."""
    n = int(x.shape[0])
    theta = theta.detach()

    def f(th):
        return flat.call(th, x)

    _, vjp_fn = vjp(f, theta)

    def gn(v):
        jv = jvp(f, (theta,), (v.to(theta.dtype),))[1]
        return vjp_fn(jv)[0].detach() / n

    return top_k_eigenpairs(gn, int(theta.numel()), n_top, tol=tol, max_hvp=max_hvp, dtype=theta.dtype,
                            generator=generator)


def noise_kernel(flat: FlatParams, x: torch.Tensor, theta: torch.Tensor, eta: float, batch_size: int, *,
                 n_top: int = 8, n_classes: int | None = None, generator=None, tol: float = 1e-5) -> dict:
    r"""Noise kernel norm K (module doc) at ``theta`` for SGD with step ``eta`` and batches of ``batch_size``.

    Returns ``K_lower``, ``K_upper``, ``K_trace``, ``trace``, ``top`` (Θ's top eigenvalues), ``n_hvp``,
    ``seconds``; K is NaN where a top eigenvalue is outside the kernel's domain (deterministic edge crossed).
    """
    t0 = time.perf_counter()
    n = int(x.shape[0])
    batch_size = check_int("batch_size", batch_size, low=1, high=n)
    if n_classes is None:
        n_classes = int(flat.call(theta.detach(), x[:1]).shape[-1])
    C = n_classes
    if n_top < 1:
        raise ParameterError(f"n_top must be >= 1, got {n_top}")
    top = gauss_newton_top(flat, x, theta, n_top, tol=tol, generator=generator)
    lam = np.clip(np.asarray(top.values, dtype=float), 0.0, None)
    tr = ntk_trace(flat, x, theta)
    tail = max(tr - float(lam.sum()), 0.0)
    sampling = "without_replacement"

    def k_of(values):
        return mean_square.noise_kernel_norm(eta, values, batch_size, n, sampling=sampling, outside="nan") / C

    k_top = k_of(lam)
    lam_min = float(lam[-1])
    eps = 1e-9 / eta
    slope0 = k_of([eps]) / eps
    k_lower = k_top + slope0 * tail
    k_upper = k_top + (tail / lam_min) * k_of([lam_min]) if lam_min > 0 else float("nan")
    c_diag = n * (n - batch_size) / (batch_size * (n - 1))
    return {"K_lower": float(k_lower), "K_upper": float(k_upper),
            "K_trace": float(eta * c_diag / (2 * n * C) * tr), "trace": tr, "top": lam, "n_hvp": top.n_hvp,
            "seconds": time.perf_counter() - t0}
