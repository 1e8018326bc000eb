r"""The top-k edge directions of a network's Hessian and the k-direction model's constants.

At the edge of stability several Hessian eigenvalues sit within a few percent of :math:`\lambda_{\max}`
(:mod:`sdeeos.theory.multi_direction`).  This module measures, for the top k eigenpairs
:math:`(\lambda_j,u_j)` at a parameter vector :math:`\theta`:

* the eigenpairs themselves, by block Lanczos (:func:`top_k_eigenpairs`): Rayleigh–Ritz over a block
  Krylov basis :math:`[V_0, HV_0, H^2V_0,\dots]` with full re-orthogonalisation, warm-started from the
  previous eigenvectors, HVP counts reported, stopping when every one of the k residuals
  :math:`\lVert Hv_j-\theta_jv_j\rVert` is at most ``tol`` :math:`\cdot|\theta_j|`.  A solve that runs out of
  its budget raises :class:`EigenSolveError` with the residuals; it never returns silently;
* the sharpness gradients :math:`\nabla\lambda_j=\nabla^3L[u_j,u_j,\cdot]` (reverse mode over the
  HVP, as :func:`sdeeos.torch.sharpness_gradient`) and the coupling matrix
  :math:`G_{ij}=\nabla\lambda_i^\perp\cdot\nabla\lambda_j^\perp`, where :math:`\perp` removes the span of
  :math:`u_1..u_k` (as :math:`\beta=\lVert\nabla S^\perp\rVert^2` for one direction).  :math:`\nabla\lambda_j`
  is the gradient of the j-th eigenvalue only while it is simple; for nearly degenerate pairs the
  individual :math:`u_j` rotate quickly and only the block is well defined — report the eigengaps;
* the projection onto the k-direction stable set, :math:`\theta^\dagger=\theta-\sum_ju_j(u_j\cdot\nabla L)/\lambda_j`
  (the Newton step of :func:`sdeeos.torch.project_to_stable_set` along every :math:`u_j`), the
  oscillation coordinates :math:`x_j=u_j\cdot(\theta-\theta^\dagger)`, and the sharpening rates
  :math:`\alpha_j=-\nabla L(\theta^\dagger)\cdot\nabla\lambda_j^\perp` (:func:`edge_constants`);
* the projected gradient noise: the single-example covariance
  :math:`(\Sigma_1)_{jl}=\frac1n\sum_i(u_j\cdot\nabla\ell_i-u_j\cdot\nabla L)(u_l\cdot\nabla\ell_i-u_l\cdot\nabla L)`
  from k forward-mode passes, and :math:`\sigma_j^2(B)=\frac{n-B}{B(n-1)}(\Sigma_1)_{jj}` (uniform
  batches without replacement).  The off-diagonal correlations test the model's assumption that the
  noises along different :math:`u_j` are uncorrelated.

Cost (reported in :class:`EdgeConstants`): the eigen-solve's HVPs, k third-derivative contractions
(each about two HVPs), k JVPs of the per-example losses, one or two gradients.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch.func import grad

from .._errors import ParameterError, SdeeosError
from .._validation import check_int, check_positive
from ._curvature import HessianOperator
from ._quantities import projected_gradient_components, sharpness_gradient, without_replacement_factor

__all__ = ["EigenSolveError", "TopKResult", "top_k_eigenpairs", "EdgeConstants", "edge_constants",
           "project_to_stable_set_k", "projected_noise_covariance"]


class EigenSolveError(SdeeosError, RuntimeError):
    """An eigen-solve did not converge within its budget; ``residuals`` and ``values`` say how far it got."""

    # defaults: an exception is unpickled by calling its class with the message alone (then its
    # attributes are restored); a study's worker process sends it back that way
    def __init__(self, message: str, *, values=(), residuals=(), n_hvp: int = 0):
        super().__init__(message)
        self.values = np.asarray(values)
        self.residuals = np.asarray(residuals)
        self.n_hvp = int(n_hvp)


@dataclasses.dataclass
class TopKResult:
    """Top-k eigenpairs: ``values`` (descending), ``vectors`` (k × P, orthonormal rows), ``residuals``
    :math:`\\lVert Hv_j-\\lambda_jv_j\\rVert`, ``n_hvp`` products used, ``n_blocks`` Krylov blocks."""

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    n_hvp: int
    n_blocks: int
    converged: bool


def _orthonormalise(block: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Rows of ``block`` made orthonormal and orthogonal to the rows of ``basis`` (twice: "twice is enough");
    rows that vanish (linear dependence) are dropped."""
    for _ in range(2):
        if basis is not None and basis.shape[0]:
            block = block - (block @ basis.T) @ basis
        q, r = torch.linalg.qr(block.T)
        keep = torch.abs(torch.diagonal(r)) > 1e-10 * max(float(torch.abs(torch.diagonal(r)).max()), 1e-300)
        block = q.T[keep]
    return block


def top_k_eigenpairs(matvec, dim: int, k: int, *, v0: torch.Tensor | None = None, block_size: int | None = None,
                     tol: float = 1e-4, max_hvp: int = 400, dtype=torch.float64,
                     generator: torch.Generator | None = None, raise_on_failure: bool = True,
                     device=None) -> TopKResult:
    r"""The k largest *algebraic* eigenvalues of a symmetric operator by block Lanczos (Rayleigh–Ritz).

    The basis :math:`Q` grows by one block :math:`HQ_{\rm last}` per iteration (re-orthogonalised against
    all of :math:`Q`); the products :math:`HQ` are kept, so the projected matrix :math:`Q^\top HQ` and the
    exact residuals :math:`\lVert HQs-\theta Qs\rVert` of the Ritz pairs cost no extra product.
    ``v0`` (rows) warm-starts the first block (the previous eigenvectors during training); the block
    size is ``max(k, len(v0))`` (default ``k + 2``: a little oversampling speeds up clustered
    eigenvalues), filled with random rows.  Stops when the k top residuals are all at most
    ``tol * |theta_j|``; after ``max_hvp`` products raises :class:`EigenSolveError` (or, with
    ``raise_on_failure=False``, returns with ``converged=False``).  Every vector lives on ``device``
    (default: ``v0``'s device, else the CPU); random rows are drawn on the generator's device.
    """
    dim = check_int("dim", dim, low=1)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= dim:
        raise ParameterError(f"k must be an integer in [1, {dim}] (the number of parameters), got {k!r}")
    k = int(k)
    tol = check_positive("tol", tol)
    max_hvp = check_int("max_hvp", max_hvp, low=k)
    b = min(dim, block_size if block_size is not None else k + 2)
    if b < k:
        raise ParameterError(f"block_size must be >= k = {k}, got {b}")
    if device is None:
        device = v0.device if torch.is_tensor(v0) else torch.device("cpu")
    rows = []
    if v0 is not None:
        v0 = torch.as_tensor(v0, dtype=dtype, device=device).reshape(-1, dim)
        rows.append(v0[torch.isfinite(v0).all(dim=1)])
    n_have = sum(int(r.shape[0]) for r in rows)
    if n_have < b:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        rows.append(torch.randn((b - n_have, dim), dtype=dtype, generator=generator, device=gen_device).to(device))
    block = _orthonormalise(torch.cat(rows), None)
    Q = torch.empty((0, dim), dtype=dtype, device=device)
    HQ = torch.empty((0, dim), dtype=dtype, device=device)
    n_hvp, n_blocks = 0, 0
    values = residuals = np.full(k, np.nan)
    vectors = None
    while True:
        hb = torch.stack([matvec(v).to(dtype=dtype, device=device) for v in block])
        n_hvp += block.shape[0]
        n_blocks += 1
        if not bool(torch.isfinite(hb).all()):
            raise EigenSolveError("a Hessian-vector product is not finite", values=values, residuals=residuals,
                                  n_hvp=n_hvp)
        Q = torch.cat([Q, block])
        HQ = torch.cat([HQ, hb])
        T = Q @ HQ.T
        T = 0.5 * (T + T.T)
        evals, evecs = torch.linalg.eigh(T)
        order = torch.argsort(evals, descending=True)[:k]
        values = evals[order].cpu().numpy()
        S = evecs[:, order]  # (m, k)
        vectors = S.T @ Q
        resid_vecs = S.T @ HQ - torch.as_tensor(values, dtype=dtype, device=device)[:, None] * vectors
        residuals = torch.linalg.vector_norm(resid_vecs, dim=1).cpu().numpy()
        converged = bool(np.all(residuals <= tol * np.abs(values)))
        if converged or Q.shape[0] >= dim:
            converged = True if Q.shape[0] >= dim else converged
            break
        if n_hvp + block.shape[0] > max_hvp:
            break
        block = _orthonormalise(hb, Q)
        if block.shape[0] == 0:  # invariant subspace: the Ritz values are exact
            converged = True
            break
    if not converged and raise_on_failure:
        raise EigenSolveError(
            f"top-{k} eigen-solve did not converge in {n_hvp} Hessian-vector products (max_hvp={max_hvp}): "
            f"residuals/|lambda| = {np.array2string(residuals / np.abs(values), precision=2)}, tol = {tol}",
            values=values, residuals=residuals, n_hvp=n_hvp)
    return TopKResult(values=values, vectors=vectors, residuals=residuals, n_hvp=n_hvp, n_blocks=n_blocks,
                      converged=converged)


def projected_noise_covariance(per_example_fn, theta: torch.Tensor, vectors: torch.Tensor) -> dict:
    r"""Single-example covariance of :math:`(u_j\cdot\nabla\ell_i)_j` (k JVPs): ``sigma1`` (k×k, population
    covariance over the n examples), ``mean`` (:math:`u_j\cdot\nabla L`), ``n``."""
    comps = torch.stack([projected_gradient_components(per_example_fn, theta, u) for u in vectors]).to(torch.float64)
    n = int(comps.shape[1])
    mean = comps.mean(dim=1)
    centred = comps - mean[:, None]
    cov = (centred @ centred.T) / n
    return {"sigma1": cov.cpu().numpy(), "mean": mean.cpu().numpy(), "n": n}


def project_to_stable_set_k(loss_fn, theta: torch.Tensor, eig: TopKResult, *, n_newton: int = 1, tol: float = 1e-4,
                            max_hvp: int = 400, generator=None):
    r""":math:`\theta\leftarrow\theta-\sum_ju_j(u_j\cdot\nabla L)/\lambda_j`, repeated ``n_newton`` times with the
    top-k pairs re-estimated (warm-started) after each step.  Returns ``(theta_dagger, eig_there, n_hvp)``."""
    theta = theta.detach()
    n_hvp = 0
    k = len(eig.values)
    for _ in range(check_int("n_newton", n_newton, low=0)):
        U = eig.vectors.to(theta.dtype)
        g = grad(loss_fn)(theta).detach()
        lam = torch.as_tensor(eig.values, dtype=theta.dtype, device=theta.device)
        theta = theta - ((U @ g) / lam) @ U
        op = HessianOperator(loss_fn, theta)
        eig = top_k_eigenpairs(op, op.dim, k, v0=U, tol=tol, max_hvp=max_hvp, dtype=theta.dtype, generator=generator,
                               device=theta.device)
        n_hvp += eig.n_hvp
    return theta, eig, n_hvp


@dataclasses.dataclass
class EdgeConstants:
    r"""The k-direction model's constants at one point (see the module docstring).

    ``values`` :math:`\lambda_j` at :math:`\theta`; ``values_dagger`` at :math:`\theta^\dagger`; ``x``
    :math:`u_j\cdot(\theta-\theta^\dagger)`; ``alpha`` (at :math:`\theta^\dagger`, span of the :math:`u_j`
    removed from :math:`\nabla\lambda_j`); ``alpha_one_direction``: the same with only :math:`u_1` removed from
    :math:`\nabla L` and :math:`\nabla\lambda_1` (the one-direction recipe, for comparison); ``coupling`` G;
    ``sigma1`` (:math:`\Sigma_1` projected, k×k); ``grad_dot_u``; cost ``n_hvp``, ``seconds``.
    """

    values: np.ndarray
    values_dagger: np.ndarray
    x: np.ndarray
    alpha: np.ndarray
    alpha_one_direction: float
    coupling: np.ndarray
    sigma1: np.ndarray
    n: int
    grad_dot_u: np.ndarray
    residuals: np.ndarray
    n_hvp: int
    seconds: float
    vectors: torch.Tensor = dataclasses.field(repr=False)

    def sigma_sq(self, batch_size: int) -> np.ndarray:
        r""":math:`\sigma_j^2(B)=\frac{n-B}{B(n-1)}(\Sigma_1)_{jj}`."""
        return without_replacement_factor(self.n, batch_size) * np.diag(self.sigma1)

    @property
    def noise_correlation(self) -> np.ndarray:
        d = np.sqrt(np.diag(self.sigma1))
        return self.sigma1 / np.outer(d, d)


def edge_constants(loss_fn, per_example_fn, theta: torch.Tensor, k: int, *, v0=None, tol: float = 1e-4,
                   max_hvp: int = 400, n_newton: int = 1, generator=None) -> EdgeConstants:
    """Measure :class:`EdgeConstants` at ``theta`` (top-k solve, projection, G, α, Σ_1), with its cost."""
    t0 = time.perf_counter()
    theta = theta.detach()
    op = HessianOperator(loss_fn, theta)
    eig = top_k_eigenpairs(op, op.dim, k, v0=v0, tol=tol, max_hvp=max_hvp, dtype=theta.dtype, generator=generator,
                           device=theta.device)
    n_hvp = eig.n_hvp
    U0 = eig.vectors.to(theta.dtype)
    g0 = grad(loss_fn)(theta).detach()
    dagger, eig_d, n_proj = project_to_stable_set_k(loss_fn, theta, eig, n_newton=n_newton, tol=tol,
                                                    max_hvp=max_hvp, generator=generator)
    n_hvp += n_proj
    U = eig_d.vectors.to(theta.dtype)
    # sign-consistent x_j: u_j at theta (the Newton step is along those)
    x = (U0 @ (theta - dagger)).cpu().numpy()
    gd = grad(loss_fn)(dagger).detach()
    grads = torch.stack([sharpness_gradient(loss_fn, dagger, u) for u in U])  # k x P
    n_hvp += 2 * k  # each contraction: one HVP and its reverse-mode derivative
    perp = grads - (grads @ U.T) @ U
    G = (perp @ perp.T).cpu().numpy()
    g_perp = gd - (U @ gd) @ U
    alpha = (-(perp @ g_perp)).cpu().numpy()
    u1 = U[0]
    ds1 = grads[0] - torch.dot(grads[0], u1) * u1
    alpha_1d = float(-torch.dot(gd - torch.dot(gd, u1) * u1, ds1))
    noise = projected_noise_covariance(per_example_fn, dagger, U)
    return EdgeConstants(values=np.asarray(eig.values), values_dagger=np.asarray(eig_d.values), x=x, alpha=alpha,
                         alpha_one_direction=alpha_1d, coupling=G, sigma1=noise["sigma1"], n=noise["n"],
                         grad_dot_u=(U0 @ g0).cpu().numpy(), residuals=np.asarray(eig_d.residuals),
                         n_hvp=n_hvp, seconds=time.perf_counter() - t0, vectors=U)
