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
Θ.  For another loss the same formula is applied to its Gauss–Newton matrix :math:`J^\top\Omega J/n`
(:math:`\Omega_i` the loss's Hessian in the outputs): the linearised model of that loss's quadratic
approximation, whose residuals are :math:`\Omega_i^{1/2}f_i`.

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
import warnings

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vjp, vmap

from .._errors import ParameterError
from .._validation import check_int, check_positive
from ..theory import mean_square
from ._curvature import FlatParams, HessianOperator, lanczos_top, n_examples, take
from ._data import concatenated, is_inputs
from ._edge_directions import TopKResult, project_to_stable_set_k, top_k_eigenpairs
from ._losses import LossLike, check_loss, check_mean_of_examples, loss_name, output_hessian

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
            e = lanczos_top(op, op.dim, v0=v, tol=tol, max_iter=max_iter, dtype=th.dtype, generator=generator,
                            device=th.device)
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


def _inputs_and_targets(x, targets, loss):
    """Inputs (a ``DataLoader``'s pooled), and targets where the loss's Gauss–Newton factor needs them."""
    if is_inputs(x):
        if targets is None and not isinstance(loss, str):
            raise ParameterError(f"targets must be given for the callable loss {loss_name(loss)} "
                                 "(its Gauss-Newton factor may depend on them)")
        return x, targets
    return concatenated(x, targets)


def ntk_trace_per_example(flat: FlatParams, x, theta: torch.Tensor, *, loss: LossLike = "mse",
                          targets: torch.Tensor | None = None, chunk: int = 64) -> torch.Tensor:
    r"""Per example :math:`\operatorname{tr}(J_i^\top\Omega_iJ_i)`, :math:`J_i=\partial f(x_i)/\partial\theta`
    (float64, one value per example).

    :math:`\Omega_i` is the Hessian of the loss in the outputs (:mod:`sdeeos.torch._losses`): :math:`I` for
    ``"mse"``, :math:`\operatorname{diag}p_i-p_ip_i^\top` for ``"ce"`` (the Gauss–Newton matrix of its quadratic
    model), ``torch.func.hessian`` of a callable loss (which needs ``targets``).  One ``vmap``-ed
    per-example gradient per output (on CPU cheaper than ``jacrev``, which materialises the whole
    Jacobian); for cross-entropy one more, of :math:`p_i\cdot f_i` with :math:`p_i` held fixed:
    :math:`\operatorname{tr}(J^\top\Omega J)=\sum_cp_c\lVert\nabla f_c\rVert^2-\lVert\nabla(p\cdot f)\rVert^2`.
    For a callable, with :math:`\Omega_i=\sum_k\mu_{ik}w_{ik}w_{ik}^\top` (``eigh``):
    :math:`\sum_k\mu_{ik}\lVert\nabla(w_{ik}\cdot f_i)\rVert^2`, again one gradient per output.
    Squares are summed in the parameters' dtype per example, the sums in float64.  ``x`` may be a
    ``DataLoader`` of ``(inputs, targets)`` batches.  Needs ``flat.mode == "eval"``: with batch
    statistics an example's output depends on the others' and has no per-example Jacobian.
    """
    loss = check_loss(loss)
    chunk = check_int("chunk", chunk, low=1)
    if flat.mode != "eval":
        raise ParameterError(f"the per-example NTK needs FlatParams(mode='eval'), got mode={flat.mode!r} "
                             "(with batch statistics the examples' outputs are coupled)")
    x, targets = _inputs_and_targets(x, targets, loss)
    theta = theta.detach()
    if targets is not None and not isinstance(loss, str):
        with torch.no_grad():
            check_mean_of_examples(flat.call(theta, x), targets.to(theta.device), loss)
    # differentiate per parameter tensor, not through the flat vector: scattering every per-example
    # gradient back into a length-P vector costs 3x the gradients themselves on CPU
    values = tuple(flat.unflatten(theta).values())

    def output(vals, xi):
        one = flat.inputs(tuple(t.unsqueeze(0) for t in xi) if isinstance(xi, tuple) else xi.unsqueeze(0), theta)
        return functional_call(flat.module, flat.tensors(theta, dict(zip(flat.names, vals))), one).squeeze(0)

    def squared_norms(fn, xs, *args):  # per-example squared norm of grad(fn), summed over the parameter tensors
        grads = vmap(grad(fn), in_dims=(None, 0) + (0,) * len(args))(values, xs, *args)
        return sum(g.reshape(g.shape[0], -1).square().sum(dim=1).to(torch.float64) for g in grads)

    parts = []
    with flat.measuring():
        for i in range(0, n_examples(x), chunk):
            xs = take(x, slice(i, i + chunk))
            with torch.no_grad():
                out = flat.call(theta, xs)
            n_out = int(out.shape[-1])
            if loss == "mse" or loss == "ce":
                norms = torch.stack([squared_norms(lambda vals, xi, c=c: output(vals, xi)[c], xs)
                                     for c in range(n_out)], dim=1)
            if loss == "mse":
                parts.append(norms.sum(dim=1))
            elif loss == "ce":
                p = torch.softmax(out.to(torch.float64), dim=-1)
                mixed = squared_norms(lambda vals, xi, pi: torch.dot(output(vals, xi), pi), xs, p.to(theta.dtype))
                parts.append((p * norms).sum(dim=1) - mixed)
            else:
                omega = output_hessian(out, targets[i:i + chunk].to(theta.device), loss).to(torch.float64)
                mu, w = torch.linalg.eigh(omega)
                total = torch.zeros(out.shape[0], dtype=torch.float64, device=theta.device)
                for k in range(n_out):
                    total = total + mu[:, k] * squared_norms(
                        lambda vals, xi, wi: torch.dot(output(vals, xi), wi), xs, w[:, :, k].to(theta.dtype))
                parts.append(total)
    return torch.cat(parts)


def ntk_trace(flat: FlatParams, x, theta: torch.Tensor, *, loss: LossLike = "mse",
              targets: torch.Tensor | None = None, chunk: int = 64) -> float:
    r"""Gauss–Newton trace :math:`\frac1n\sum_i\operatorname{tr}(J_i^\top\Omega_iJ_i)` of ``loss`` (`ntk_trace_per_example`).

    With the default ``loss="mse"`` this is :math:`\operatorname{tr}\Theta=\frac1n\sum_i\lVert\partial f(x_i)/
    \partial\theta\rVert_F^2`; for a cross-entropy model pass ``loss="ce"`` (:math:`\Omega_i\preceq I`, so the
    Jacobian trace overstates it, the more so as the softmax saturates).
    """
    return float(ntk_trace_per_example(flat, x, theta, loss=loss, targets=targets, chunk=chunk).mean())


def gauss_newton_top(flat: FlatParams, x, theta: torch.Tensor, n_top: int, *, loss: LossLike = "mse",
                     targets: torch.Tensor | None = None, tol: float = 1e-6, max_hvp: int = 400,
                     generator=None) -> TopKResult:
    r"""Top eigenvalues of the Gauss–Newton matrix :math:`J^\top\Omega J/n` (:math:`\Omega=I` for ``"mse"``:
    those of Θ) by block Lanczos on :math:`v\mapsto J^\top\Omega(Jv)/n` (one JVP and one VJP per product)."""
    loss = check_loss(loss)
    x, targets = _inputs_and_targets(x, targets, loss)
    n = n_examples(x)
    theta = theta.detach()

    def f(th):
        return flat.call(th, x)

    out, vjp_fn = vjp(f, theta)
    omega = None if loss == "mse" else output_hessian(out, None if targets is None else targets.to(theta.device),
                                                      loss).to(theta.dtype)

    def gn(v):
        jv = jvp(f, (theta,), (v.to(theta.dtype),))[1]
        if omega is not None:
            jv = torch.einsum("ncd,nd->nc", omega, jv)
        return vjp_fn(jv)[0].detach() / n

    return top_k_eigenpairs(gn, int(theta.numel()), n_top, tol=tol, max_hvp=max_hvp, dtype=theta.dtype,
                            generator=generator, device=theta.device)


def noise_kernel(flat: FlatParams, x, theta: torch.Tensor, eta: float, batch_size: int, *,
                 loss: LossLike = "mse", targets: torch.Tensor | None = None,
                 n_top: int = 8, n_classes: int | None = None, generator=None, tol: float = 1e-5) -> dict:
    r"""Noise kernel norm K (module doc) at ``theta`` for SGD with step ``eta`` and batches of ``batch_size``.

    ``loss`` other than ``"mse"``: the eigenvalues and trace are those of the loss's Gauss–Newton matrix
    :math:`J^\top\Omega J/n` (its quadratic model at ``theta``, whitened residuals :math:`\Omega_i^{1/2}f_i`),
    which is the matrix the linearised SGD recursion sees (for cross-entropy the Jacobian's own
    overstates it).  Returns ``K_lower``, ``K_upper``, ``K_trace``, ``trace``, ``top`` (the top
    eigenvalues), ``inside_domain``, ``n_hvp``, ``seconds``; K is NaN where a top eigenvalue is outside the
    kernel's domain (deterministic edge crossed; ``inside_domain`` False).
    """
    t0 = time.perf_counter()
    loss = check_loss(loss)
    x, targets = _inputs_and_targets(x, targets, loss)
    n = n_examples(x)
    batch_size = check_int("batch_size", batch_size, low=1, high=n)
    if n_classes is None:
        n_classes = int(flat.call(theta.detach(), take(x, slice(0, 1))).shape[-1])
    C = n_classes
    if n_top < 1:
        raise ParameterError(f"n_top must be >= 1, got {n_top}")
    top = gauss_newton_top(flat, x, theta, n_top, loss=loss, targets=targets, tol=tol, generator=generator)
    lam = np.clip(np.asarray(top.values, dtype=float), 0.0, None)
    tr = ntk_trace(flat, x, theta, loss=loss, targets=targets)
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
    if not np.isfinite(k_top):
        edge = 2 / (eta * (1 - (n - batch_size) / (batch_size * (n - 1))))
        warnings.warn(f"noise_kernel: K is NaN because the top Gauss-Newton eigenvalue {float(lam[0]):.6g} of loss "
                      f"{loss_name(loss)!r} is beyond the deterministic edge 2/(eta (1 + c_full)) = {edge:.6g}"
                      + (" (for a model trained with cross-entropy, pass loss='ce')" if loss == "mse" else ""),
                      RuntimeWarning, stacklevel=2)
    return {"K_lower": float(k_lower), "K_upper": float(k_upper),
            "K_trace": float(eta * c_diag / (2 * n * C) * tr), "trace": tr, "top": lam,
            "inside_domain": bool(np.isfinite(k_top)), "n_hvp": top.n_hvp,
            "seconds": time.perf_counter() - t0}
