r"""The self-stabilization theory's quantities measured on a real network (docs/theory.md#self-stabilization-constants).

At parameters :math:`\theta` with sharpness :math:`S` and unit top eigenvector :math:`u`:

* :math:`\nabla S=\nabla^3L[u,u]=\nabla_\theta\big(u^\top\nabla^2L(\theta)\,u\big)\big|_{u\ \rm fixed}`
  (valid when :math:`\lambda_{\max}` is simple), by reverse-mode differentiation of the HVP;
* :math:`\nabla S^\perp=\nabla S-u(u^\top\nabla S)`;
* progressive-sharpening rate :math:`\alpha=-\nabla L\cdot\nabla S^\perp` and self-stabilization
  strength :math:`\beta=\lVert\nabla S^\perp\rVert^2` (Damian et al.'s ``constants_fn``);
* projected noise variance :math:`\sigma_u^2=u^\top\Sigma_Bu` for batches of size :math:`B` drawn
  uniformly **without replacement**: :math:`\sigma_u^2=\frac{n-B}{B(n-1)}\,\sigma_1^2` with
  :math:`\sigma_1^2=\frac1n\sum_i(u\cdot\nabla\ell_i-u\cdot\nabla L)^2` (docs/theory.md#batch-noise).  The :math:`n`
  directional derivatives :math:`u\cdot\nabla\ell_i` come from one forward-mode pass (a JVP of the
  vector of per-example losses), so no per-example gradient is ever stored;
* batch sharpness :math:`\mathbb E_B[g_B^\top H_Bg_B/\lVert g_B\rVert^2]` (Andreyev & Beneventano,
  docs/theory.md#batch-sharpness), by Monte Carlo over batches without replacement;
* the predicted gap :math:`\Delta S=\eta\beta\sigma_u^2/(4\alpha)` and its closure-exact version, taken
  from :mod:`sdeeos.theory.self_stabilization` (lambdified from the SymPy derivation, not retyped).

α measured *at an oscillating iterate* is contaminated by the oscillation itself: with
:math:`\theta=\theta^\dagger+xu`, :math:`\nabla L\cdot\nabla S^\perp` picks up
:math:`\tfrac12x^2\beta`, so the measured α averages to about zero at equilibrium (that is
self-stabilization).  :func:`project_to_stable_set` removes the oscillation first with the Newton step
along :math:`u` of Damian et al.'s projection, :math:`\theta\mapsto\theta-u\,(u\cdot\nabla L)/S`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch.func import grad, jvp

from .._validation import check_int, check_positive
from ..theory import batch_noise
from ..theory.self_stabilization import gap_exact, gap_leading
from ._curvature import ChunkedLoss, EigenResult, FlatParams, HessianOperator, lanczos_top, n_examples, take
from ._data import concatenated, data_batches
from ._losses import LossLike, check_loss, mean_loss, per_example_loss

__all__ = [
    "batch_sharpness_ratios",
    "loss_function",
    "per_example_loss_function",
    "sharpness_gradient",
    "SelfStabilizationConstants",
    "self_stabilization_constants",
    "projected_gradient_components",
    "projected_noise_variance",
    "without_replacement_factor",
    "batch_sharpness", "batch_sharpness_ratios",
    "project_to_stable_set",
    "predicted_gap",
]


def _on(t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Targets on ``theta``'s device, floating ones in its dtype (a float64 measurement of a float32 model)."""
    return t.to(device=theta.device, dtype=theta.dtype if t.is_floating_point() else None)


def _batch_loss(flat: FlatParams, x, targets, loss):
    def fn(theta):
        return mean_loss(flat.call(theta, x), _on(targets, theta), loss)

    return fn


def loss_function(flat: FlatParams, x, targets=None, loss: LossLike = "mse"):
    r""":math:`\theta\mapsto L(\theta)=\frac1n\sum_i\ell_i(\theta)` on the examples ``x``.

    ``loss``: ``"mse"``, ``"ce"`` or a callable ``loss(outputs, targets)`` returning the batch mean
    (:mod:`sdeeos.torch._losses`).  ``x`` may also be a ``DataLoader`` (or any iterable of
    ``(inputs, targets)`` batches, with ``targets=None``): the result is then a
    :class:`~sdeeos.torch.ChunkedLoss`, :math:`\sum_k\frac{n_k}{n}L_k`, whose Hessian products are
    accumulated chunk by chunk.
    """
    loss = check_loss(loss)
    parts = data_batches(x, targets)
    if len(parts) == 1:
        return _batch_loss(flat, *parts[0], loss)
    sizes = [n_examples(xb) for xb, _ in parts]
    total = sum(sizes)
    return ChunkedLoss([(nk / total, _batch_loss(flat, xb, tb, loss)) for nk, (xb, tb) in zip(sizes, parts)])


def per_example_loss_function(flat: FlatParams, x, targets=None, loss: LossLike = "mse"):
    r""":math:`\theta\mapsto(\ell_1(\theta),\dots,\ell_n(\theta))` (a ``DataLoader``'s batches concatenated)."""
    loss = check_loss(loss)
    x, targets = concatenated(x, targets)

    def fn(theta):
        return per_example_loss(flat.call(theta, x), _on(targets, theta), loss)

    return fn


def sharpness_gradient(loss_fn, theta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r""":math:`\nabla^3L(\theta)[u,u]=\nabla_\theta\,(u^\top\nabla^2L(\theta)u)` with :math:`u` held fixed.

    Reverse mode over the forward-over-reverse HVP: about three to four gradient evaluations.
    Equal to :math:`\nabla S` when :math:`u` is the top eigenvector and :math:`\lambda_{\max}` is simple.
    """
    u = u.detach().to(theta.dtype)

    def quad(th):
        return torch.dot(u, jvp(grad(loss_fn), (th,), (u,))[1])

    return grad(quad)(theta.detach()).detach()


@dataclasses.dataclass
class SelfStabilizationConstants:
    """Measured constants at one point; ``alpha``/``beta`` as in Damian et al., ``alpha_full``
    :math:`=-\\nabla L\\cdot\\nabla S` (equal to ``alpha`` on the stable set, where :math:`u\\cdot\\nabla L=0`)."""

    sharpness: float
    alpha: float
    beta: float
    alpha_full: float
    grad_norm: float
    grad_dot_u: float
    grad_sharpness_dot_u: float
    eigenvector: torch.Tensor = dataclasses.field(repr=False)
    grad_sharpness: torch.Tensor = dataclasses.field(repr=False)

    @property
    def delta_sq(self) -> float:
        """Equilibrium oscillation variance :math:`\\delta^2=2\\alpha/\\beta`."""
        return 2 * self.alpha / self.beta


def self_stabilization_constants(loss_fn, theta: torch.Tensor, eig: EigenResult) -> SelfStabilizationConstants:
    r""":math:`\alpha=-\nabla L\cdot\nabla S^\perp`, :math:`\beta=\lVert\nabla S^\perp\rVert^2` at ``theta``.

    ``eig`` is the top eigenpair at ``theta`` (from :func:`~sdeeos.torch.lanczos_top`); its accuracy
    bounds that of :math:`\nabla S` (the eigenvector error enters linearly).
    """
    theta = theta.detach()
    u = eig.vector.to(theta.dtype)
    g = grad(loss_fn)(theta).detach()
    ds = sharpness_gradient(loss_fn, theta, u)
    ds_u = torch.dot(u, ds)
    ds_perp = ds - u * ds_u
    return SelfStabilizationConstants(
        sharpness=float(eig.value),
        alpha=float(-torch.dot(g, ds_perp)),
        beta=float(torch.dot(ds_perp, ds_perp)),
        alpha_full=float(-torch.dot(g, ds)),
        grad_norm=float(torch.linalg.vector_norm(g)),
        grad_dot_u=float(torch.dot(g, u)),
        grad_sharpness_dot_u=float(ds_u),
        eigenvector=u,
        grad_sharpness=ds,
    )


def projected_gradient_components(per_example_fn, theta: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    r"""The vector :math:`(u\cdot\nabla\ell_i(\theta))_{i=1..n}`: one JVP of the per-example losses."""
    return jvp(per_example_fn, (theta.detach(),), (u.detach().to(theta.dtype),))[1].detach()


def without_replacement_factor(n: int, batch_size: int) -> float:
    r""":math:`\operatorname{Cov}(\nabla L_B)=\frac{n-B}{B(n-1)}\Sigma_1` for uniform batches without replacement."""
    return float(batch_noise.centred_coefficient(batch_size, n, "without_replacement"))


def projected_noise_variance(per_example_fn, theta: torch.Tensor, u: torch.Tensor,
                             batch_sizes) -> dict:
    r"""Projected gradient-noise variance :math:`\sigma_u^2(B)=u^\top\Sigma_Bu` (without replacement).

    Returns ``sigma1_sq`` (:math:`\sigma_1^2`, the single-example population variance of
    :math:`u\cdot\nabla\ell_i`), ``mean`` (:math:`u\cdot\nabla L`) and ``sigma_u_sq`` (an array, one per
    batch size: :math:`\frac{n-B}{B(n-1)}\sigma_1^2`, exact for uniform sampling without replacement).
    """
    proj = projected_gradient_components(per_example_fn, theta, u).to(torch.float64)
    n = int(proj.numel())
    mean = proj.mean()
    sigma1_sq = float(((proj - mean) ** 2).mean())
    bs = np.atleast_1d(np.asarray(batch_sizes, dtype=np.int64))
    factors = np.array([without_replacement_factor(n, int(b)) for b in bs])
    return {"sigma1_sq": sigma1_sq, "mean": float(mean), "sigma_u_sq": factors * sigma1_sq, "n": n}


def batch_sharpness_ratios(flat: FlatParams, x, targets, loss: LossLike, theta: torch.Tensor, batch_size: int,
                           *, n_batches: int = 16, generator: torch.Generator | None = None,
                           rel_se: float | None = None, max_batches: int = 1000) -> np.ndarray:
    r"""The ratios :math:`g_B^\top H_Bg_B/\lVert g_B\rVert^2` of batches drawn uniformly without replacement
    (:math:`g_B, H_B` the gradient and Hessian of the batch mean loss).

    ``n_batches`` batches; with ``rel_se`` more, until the standard error of their mean is at most
    ``rel_se`` times its modulus (or ``max_batches`` are drawn).  Each batch costs one gradient (whose
    graph is kept) and one Hessian-vector product through it.
    """
    loss = check_loss(loss)
    x, targets = concatenated(x, targets)
    n = n_examples(x)
    batch_size = check_int("batch_size", batch_size, low=1, high=n)
    n_batches = check_int("n_batches", n_batches, low=1)
    if rel_se is not None:
        rel_se = check_positive("rel_se", rel_se)
        max_batches = check_int("max_batches", max_batches, low=max(n_batches, 2))
    theta = theta.detach()
    gen_device = generator.device if generator is not None else torch.device("cpu")  # indices follow the generator
    ratios = []
    while True:
        idx = torch.randperm(n, generator=generator, device=gen_device)[:batch_size]
        op = HessianOperator(_batch_loss(flat, take(x, idx), targets[idx], loss), theta)
        g = op.gradient
        hg = op(g)
        ratios.append(float(torch.dot(g, hg) / torch.dot(g, g)))
        m = len(ratios)
        if m < n_batches:
            continue
        if rel_se is None or m >= max_batches:
            break
        r = np.asarray(ratios)
        if m >= 2 and r.std(ddof=1) / math.sqrt(m) <= rel_se * abs(r.mean()):
            break
    return np.asarray(ratios)


def batch_sharpness(flat: FlatParams, x, targets, loss: LossLike, theta: torch.Tensor, batch_size: int,
                    *, n_batches: int = 16, generator: torch.Generator | None = None,
                    rel_se: float | None = None, max_batches: int = 1000) -> tuple[float, float]:
    r"""Batch sharpness :math:`\mathbb E_B\big[g_B^\top H_Bg_B/\lVert g_B\rVert^2\big]` (docs/theory.md#batch-sharpness).

    Average of the ratio over batches drawn uniformly without replacement (`batch_sharpness_ratios`):
    ``n_batches`` of them (16, the Andreyev–Beneventano code's default), or with ``rel_se`` as many as
    it takes for a standard error of at most ``rel_se`` times the mean (adaptive stop, at least
    ``n_batches``, at most ``max_batches``).  Returns ``(mean, standard error)``.  ``x`` may be a
    ``DataLoader`` (``targets=None``); its examples are pooled and batches drawn from them.  The
    adaptive stop looks at the data, which biases the reported error slightly low when few batches
    are drawn; ``n_batches`` (the minimum) of 16 or more keeps that negligible.
    """
    r = batch_sharpness_ratios(flat, x, targets, loss, theta, batch_size, n_batches=n_batches, generator=generator,
                               rel_se=rel_se, max_batches=max_batches)
    se = float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else float("nan")
    return float(r.mean()), se


def project_to_stable_set(loss_fn, theta: torch.Tensor, eig: EigenResult, *, n_newton: int = 1,
                          tol: float = 1e-6, max_iter: int = 100):
    r"""Remove the oscillation along :math:`u`: :math:`\theta\leftarrow\theta-u\,(u\cdot\nabla L)/S`.

    This is the second component of Damian et al.'s linearised projection onto the stable set
    :math:`\{u\cdot\nabla L=0\}` (docs/theory.md#projected-gd), repeated ``n_newton`` times with :math:`u,S` re-estimated
    (warm-started Lanczos) after each step.  Returns ``(theta_projected, eig_at_projected, n_hvp)``.
    """
    theta = theta.detach()
    n_hvp = 0
    for _ in range(check_int("n_newton", n_newton, low=0)):
        u = eig.vector.to(theta.dtype)
        g = grad(loss_fn)(theta).detach()
        theta = theta - u * (torch.dot(u, g) / eig.value)
        op = HessianOperator(loss_fn, theta)
        eig = lanczos_top(op, op.dim, v0=u, tol=tol, max_iter=max_iter, dtype=theta.dtype, device=theta.device)
        n_hvp += eig.n_hvp
    return theta, eig, n_hvp


def predicted_gap(eta, alpha, beta, sigma_u_sq) -> dict:
    r"""Predicted sharpness gap from measured constants: ``leading`` :math:`\eta\beta\sigma_u^2/(4\alpha)`
    and ``exact`` (closure), both NaN where the theory has no stationary state (or :math:`\alpha\le0`).

    Calls :func:`sdeeos.theory.self_stabilization.gap_leading`/``gap_exact`` (lambdified from SymPy).
    """
    check_positive("eta", eta)
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    s2 = np.asarray(sigma_u_sq, dtype=float)
    ok = (alpha > 0) & (beta > 0) & (s2 >= 0) & np.isfinite(alpha) & np.isfinite(beta) & np.isfinite(s2)
    a = np.where(ok, alpha, 1.0)
    b = np.where(ok, beta, 1.0)
    sig = np.sqrt(np.where(ok, s2, 0.0))
    lead = np.where(ok, gap_leading(eta, a, b, sig, outside="nan"), np.nan)
    exact = np.where(ok, gap_exact(eta, a, b, sig, outside="nan"), np.nan)
    return {"leading": lead[()], "exact": exact[()]}
