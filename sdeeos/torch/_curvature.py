r"""Curvature of a loss as a function of a flat parameter vector: Hessian-vector products, Lanczos.

Conventions
-----------
A network's parameters are handled as one flat vector :math:`\theta\in\mathbb R^P`
(:class:`FlatParams` maps between the vector and the module's named tensors).  A *loss function* is
any callable ``theta -> scalar tensor``; :func:`hvp` differentiates it with ``torch.func``
(forward-over-reverse: :math:`Hv = \frac{d}{d\epsilon}\nabla L(\theta+\epsilon v)|_{\epsilon=0}`),
which costs about two gradient evaluations and never forms :math:`H`.

Sharpness is the largest *algebraic* eigenvalue :math:`S=\lambda_{\max}(H)` (Cohen et al. 2021;
docs/theory.md#notation), not the largest in magnitude: early in training, or with cross-entropy late in training,
:math:`H` can have negative eigenvalues of larger modulus, and power iteration would then return one of
those.  :func:`lanczos_top` therefore runs the Lanczos process (with full re-orthogonalisation) and
keeps the largest Ritz value.

Why not curvlinops?  ``curvlinops-for-pytorch`` provides Hessian and gradient-covariance
``LinearOperator``\ s that iterate over a ``DataLoader`` of an ``nn.Module``.  What this package needs
goes beyond that: third derivatives :math:`\nabla^3L[u,u]` (by differentiating :math:`u^\top Hu`),
per-example directional derivatives :math:`u^\top\nabla\ell_i` for all :math:`i` in one forward-mode
pass, and HVPs at points that are not the module's current parameters (the stable-set projection).
All three are one-liners on a pure function of the flat vector with ``torch.func``; wrapping them
around a ``DataLoader``-based operator would be more code, not less, and would add a dependency
(and a second copy of the same HVP) to the ``torch`` extra.  The Lanczos iteration is written here
(rather than calling ``scipy.sparse.linalg.eigsh``) because ARPACK cannot be told to stop as soon as
the *warm-started* vector is already converged: its first Lanczos factorisation costs ``ncv`` HVPs
(at least 3, default 20) whatever the starting vector, while tracking during training needs a few
HVPs when the previous eigenvector is still good.  ``eigsh`` is used in the tests as an independent
reference.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch.func import functional_call, grad, jvp

from .._errors import ParameterError
from .._validation import check_int, check_positive

__all__ = [
    "ChunkedLoss",
    "FlatParams",
    "MEASURE_MODES",
    "hvp",
    "HessianOperator",
    "EigenResult",
    "lanczos_top",
    "power_iteration_top",
    "SharpnessTracker",
    "disable_tf32",
]


def disable_tf32() -> None:
    """Turn off TensorFloat-32 matmuls/convolutions (they change eigenvalues at the 1e-3 level on GPUs)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


_NORMS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)
#: how a measurement evaluates the module (``FlatParams(mode=...)``)
MEASURE_MODES = ("eval", "batch")


def _tree_map(fn, x):
    return tuple(fn(xi) for xi in x) if isinstance(x, (tuple, list)) else fn(x)


def n_examples(x) -> int:
    """Number of examples (rows) of an input tensor or of the first tensor of a tuple of inputs."""
    return int((x[0] if isinstance(x, (tuple, list)) else x).shape[0])


def take(x, idx):
    """Rows ``idx`` of an input tensor or of every tensor of a tuple of inputs."""
    return _tree_map(lambda t: t[idx], x)


class FlatParams:
    r"""The parameters of ``module`` as one flat vector, and back; the module evaluated without side effects.

    ``flat(dtype)`` copies the current parameters into a new vector (on the parameters' device);
    ``unflatten(theta)`` returns a ``{name: tensor}`` dictionary of *views* into ``theta`` (so
    gradients flow to ``theta``); ``call(theta, x)`` evaluates the module at ``theta`` with
    ``torch.func.functional_call``; and ``assign(theta)`` writes a vector back into the module's
    parameters.  Tied parameters appear once (``named_parameters`` de-duplicates them and
    ``functional_call`` ties them again).

    **Buffers and modes.**  A measurement never changes the module: ``call`` evaluates it with every
    submodule's ``training`` flag set for the measurement and restored afterwards, and no buffer is
    written.  ``mode="eval"`` (default): the module as in ``module.eval()``: batch-norm layers use their
    running statistics, dropout is off, so the loss is a deterministic function of :math:`\theta`.
    ``mode="batch"``: normalisation layers use the statistics of the batch being measured (the
    training-mode function of the parameters), their running statistics are neither used nor
    updated; dropout stays off.  ``x`` may be a tuple of inputs (passed positionally); floating inputs
    and buffers are cast to ``theta``'s dtype, so a float64 measurement of a float32 model needs no
    casting by hand.
    """

    def __init__(self, module: torch.nn.Module, *, mode: str = "eval"):
        if mode not in MEASURE_MODES:
            raise ParameterError(f"mode must be one of {MEASURE_MODES}, got {mode!r}")
        self.module = module
        self.mode = mode
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.size = int(sum(self.sizes))

    def flat(self, dtype=None) -> torch.Tensor:
        params = dict(self.module.named_parameters())
        vec = torch.cat([params[n].detach().reshape(-1) for n in self.names])
        return vec.to(dtype=dtype or vec.dtype).clone()

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = theta[offset:offset + size].view(shape)
            offset += size
        return out

    @contextlib.contextmanager
    def measuring(self):
        """Set the modules' flags for a measurement (see the class doc); restore them on exit."""
        saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in self.module.modules()]
        try:
            for m, _, _ in saved:
                if self.mode == "batch" and isinstance(m, _NORMS):
                    m.training = True
                    m.track_running_stats = False  # batch statistics, running ones neither read nor written
                else:
                    m.training = False
            yield
        finally:
            for m, training, track in saved:
                m.training = training
                if track is not None:
                    m.track_running_stats = track

    def tensors(self, theta: torch.Tensor, params: dict | None = None) -> dict[str, torch.Tensor]:
        """Parameters (views of ``theta``, or ``params``) and the buffers cast to ``theta``'s dtype."""
        out = {n: b.to(device=theta.device, dtype=theta.dtype if b.is_floating_point() else None)
               for n, b in self.module.named_buffers()}
        out.update(self.unflatten(theta) if params is None else params)
        return out

    def inputs(self, x, like: torch.Tensor) -> tuple:
        """``x`` as a tuple of positional inputs on ``like``'s device, floating ones in its dtype."""
        xs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        return tuple((xi.to(device=like.device, dtype=like.dtype if xi.is_floating_point() else None)
                      if torch.is_tensor(xi) else xi) for xi in xs)

    def call(self, theta: torch.Tensor, x) -> torch.Tensor:
        with self.measuring():
            return functional_call(self.module, self.tensors(theta), self.inputs(x, theta))

    def flat_grad(self) -> torch.Tensor:
        """The module's ``.grad`` fields as one flat vector (zeros where a grad is missing)."""
        params = dict(self.module.named_parameters())
        parts = []
        for n in self.names:
            g = params[n].grad
            parts.append(torch.zeros_like(params[n]).reshape(-1) if g is None else g.reshape(-1))
        return torch.cat(parts)

    @torch.no_grad()
    def assign(self, theta: torch.Tensor) -> None:
        params = dict(self.module.named_parameters())
        for name, view in self.unflatten(theta).items():
            params[name].copy_(view.to(params[name].dtype))


class ChunkedLoss:
    r""":math:`L(\theta)=\sum_kw_kL_k(\theta)`: a loss over data given in chunks (a ``DataLoader``'s batches).

    Callable like any loss function; :class:`HessianOperator` recognises it and accumulates its
    gradient and products chunk by chunk, so memory is that of one chunk.  ``parts`` is a list of
    ``(weight, loss_fn)``; for the mean loss over :math:`n` examples in chunks of :math:`n_k`,
    :math:`w_k=n_k/n`.
    """

    def __init__(self, parts):
        self.parts = [(float(w), fn) for w, fn in parts]
        if not self.parts:
            raise ParameterError("data must hold at least one batch, got an empty iterable")

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        return sum(w * fn(theta) for w, fn in self.parts)


def hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
        v: torch.Tensor) -> torch.Tensor:
    r""":math:`\nabla^2L(\theta)\,v` by forward-over-reverse differentiation (``torch.func.jvp`` of ``grad``)."""
    return jvp(grad(loss_fn), (theta,), (v,))[1]


class HessianOperator:
    r"""The Hessian of ``loss_fn`` at ``theta`` as a matrix-free operator that counts its products.

    ``op(v)`` returns :math:`Hv` for a torch vector; ``op.n_hvp`` counts the products so far.
    ``as_linear_operator()`` wraps it as a ``scipy.sparse.linalg.LinearOperator`` (float64).

    ``method="autograd"`` (default) builds the graph of :math:`\nabla L(\theta)` once (double
    backward, ``create_graph=True``) and reuses it: each product is one backward pass through that
    graph, about twice the cost of a gradient.  ``method="func"`` is the stateless forward-over-reverse
    ``torch.func`` product of :func:`hvp` (about four gradients each on CPU, no graph kept).  Both are
    exact Hessian-vector products; they differ only in round-off.  A :class:`ChunkedLoss` (data given
    as a ``DataLoader``) is differentiated chunk by chunk, summing :math:`\sum_kw_kH_kv` with a double
    backward pass per chunk that keeps no graph between products: memory of one chunk, the same numbers
    up to round-off.  (Double backward rather than ``torch.func.jvp``: forward-mode AD is missing for
    some losses, e.g. ``huber_loss_backward``.)
    """

    def __init__(self, loss_fn, theta: torch.Tensor, *, method: str = "autograd"):
        if method not in ("autograd", "func"):
            raise ParameterError(f"method must be 'autograd' or 'func', got {method!r}")
        self.loss_fn = loss_fn
        self.theta = theta.detach()
        self.dim = int(theta.numel())
        self.n_hvp = 0
        self.method = method
        self._parts = None
        if isinstance(loss_fn, ChunkedLoss):
            self._parts = loss_fn.parts
        elif method == "func":
            self._grad_fn = grad(loss_fn)
        else:
            self._theta_leaf = self.theta.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(self._theta_leaf)
                (self._grad,) = torch.autograd.grad(loss, self._theta_leaf, create_graph=True)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        v = v.to(dtype=self.theta.dtype, device=self.theta.device)
        if self._parts is not None:
            return sum(w * _chunk_hvp(fn, self.theta, v) for w, fn in self._parts)
        if self.method == "func":
            return jvp(self._grad_fn, (self.theta,), (v,))[1].detach()
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(self._grad, self._theta_leaf, grad_outputs=v, retain_graph=True)
        return hv.detach()

    @property
    def gradient(self) -> torch.Tensor:
        r""":math:`\nabla L(\theta)` (``method="autograd"``: the gradient whose graph the products reuse, free)."""
        if self._parts is not None:
            return sum(w * _chunk_gradient(fn, self.theta) for w, fn in self._parts)
        if self.method == "func":
            return self._grad_fn(self.theta).detach()
        return self._grad.detach()

    def as_linear_operator(self):
        def matvec(x):
            v = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), dtype=self.theta.dtype,
                                device=self.theta.device)
            return self(v).to(torch.float64).cpu().numpy()

        return LinearOperator((self.dim, self.dim), matvec=matvec, dtype=np.float64)


def _chunk_gradient(loss_fn, theta: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla L_k(\\theta)` of one chunk's loss, no graph kept."""
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(leaf), leaf)
    return g.detach()


def _chunk_hvp(loss_fn, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:math:`\\nabla^2L_k(\\theta)v` of one chunk's loss by double backward, the graph freed afterwards."""
    leaf = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(leaf), leaf, create_graph=True)
        (hv,) = torch.autograd.grad(g, leaf, grad_outputs=v)
    return hv.detach()


@dataclasses.dataclass
class EigenResult:
    """Top eigenpair estimate: ``value`` (float), unit ``vector`` (torch), ``n_hvp`` products used,
    ``residual`` :math:`\\lVert Hv-\\lambda v\\rVert`, ``converged`` (``residual <= tol * abs(value)``)."""

    value: float
    vector: torch.Tensor
    n_hvp: int
    residual: float
    converged: bool


def _random_unit(dim, dtype, generator=None, device=None):
    """A uniformly random unit vector on ``device``, drawn on the generator's device (CPU by default)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    v = torch.randn(dim, dtype=dtype, generator=generator, device=gen_device).to(device or gen_device)
    return v / torch.linalg.vector_norm(v)


def lanczos_top(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, *, v0=None,
                tol: float = 1e-6, max_iter: int = 100, min_iter: int = 1, dtype=torch.float64,
                generator: torch.Generator | None = None, callback=None, device=None) -> EigenResult:
    r"""Largest algebraic eigenvalue of a symmetric operator by Lanczos with full re-orthogonalisation.

    Builds the Krylov basis :math:`q_1=v_0/\lVert v_0\rVert`, :math:`q_{j+1}\propto(A-a_j)q_j-b_{j-1}q_{j-1}`
    (re-orthogonalised twice against all previous :math:`q`) and the tridiagonal
    :math:`T_j=\mathrm{tridiag}(b,a,b)`.  The estimate is the largest eigenvalue :math:`\theta` of
    :math:`T_j` with Ritz vector :math:`Q_js`; its residual is exactly
    :math:`\lVert A Q_js-\theta Q_js\rVert=b_j\lvert s_j\rvert`, available without another product.
    The iteration stops when that residual is at most ``tol * |theta|``.  For a symmetric operator
    some eigenvalue then lies within ``tol * |theta|`` of :math:`\theta` (and the Ritz value's error is
    of order residual²/gap).  Ritz values interlace, so the estimate never exceeds
    :math:`\lambda_{\max}`.

    ``v0`` warm-starts the process (the previous eigenvector during training): when it is already an
    eigenvector to within ``tol`` the iteration stops after ``min_iter`` products.
    ``callback(n_hvp, value)`` is called after every product with the current estimate.
    Every vector lives on ``device`` (default: ``v0``'s device, else the CPU).
    """
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter, low=1)
    min_iter = check_int("min_iter", min_iter, low=1)
    max_iter = min(max_iter, dim)
    if device is None:
        device = v0.device if v0 is not None else torch.device("cpu")
    q = (_random_unit(dim, dtype, generator, device) if v0 is None
         else v0.detach().to(dtype=dtype, device=device).clone())
    nrm = torch.linalg.vector_norm(q)
    if not torch.isfinite(nrm) or nrm == 0:
        q = _random_unit(dim, dtype, generator, device)
    else:
        q = q / nrm
    basis = torch.empty((max_iter + 1, dim), dtype=dtype, device=device)
    basis[0] = q
    alphas, betas = [], []
    value, ritz_vec, residual, converged = float("nan"), q, float("inf"), False
    n = 0
    for j in range(max_iter):
        w = matvec(basis[j]).to(dtype)
        n += 1
        if not bool(torch.isfinite(w).all()):
            value, residual, converged = float("nan"), float("nan"), False
            break
        a = torch.dot(basis[j], w)
        w = w - a * basis[j]
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        # full re-orthogonalisation, twice ("twice is enough", Parlett)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b = torch.linalg.vector_norm(w)
        alphas.append(float(a))
        betas.append(b)
        tri = np.diag(alphas) + np.diag([float(x) for x in betas[:-1]], 1) + np.diag(
            [float(x) for x in betas[:-1]], -1)
        evals, evecs = np.linalg.eigh(tri)
        value = float(evals[-1])
        s = evecs[:, -1]
        residual = abs(float(b) * float(s[-1]))
        ritz_vec = torch.as_tensor(s, dtype=dtype, device=device) @ basis[: j + 1]
        converged = residual <= tol * abs(value)
        if callback is not None:
            callback(n, value)
        exhausted = float(b) <= 1e-14 * max(abs(value), 1e-300)  # invariant subspace found
        if exhausted:
            converged = True
        if (converged and n >= min_iter) or exhausted:
            break
        basis[j + 1] = w / b
    ritz_vec = ritz_vec / torch.linalg.vector_norm(ritz_vec)
    return EigenResult(value=value, vector=ritz_vec, n_hvp=n, residual=residual, converged=converged)


def power_iteration_top(matvec, dim: int, *, v0=None, tol: float = 1e-6, max_iter: int = 1000,
                        dtype=torch.float64, generator: torch.Generator | None = None,
                        callback=None, device=None) -> EigenResult:
    r"""Power iteration, for comparison: converges to the eigenvalue of largest *modulus*.

    Estimate: the Rayleigh quotient :math:`\theta=v^\top Av`; stops when
    :math:`\lVert Av-\theta v\rVert\le` ``tol`` :math:`\cdot|\theta|` (the same criterion as
    :func:`lanczos_top`).  Its convergence factor is :math:`|\lambda_2/\lambda_1|` per product, against
    Lanczos's Chebyshev-accelerated rate; and it returns a negative eigenvalue when that one is largest
    in modulus, which is why sharpness uses Lanczos.
    """
    tol = check_positive("tol", tol)
    max_iter = check_int("max_iter", max_iter, low=1)
    if device is None:
        device = v0.device if v0 is not None else torch.device("cpu")
    v = _random_unit(dim, dtype, generator, device) if v0 is None else v0.detach().to(dtype=dtype, device=device).clone()
    v = v / torch.linalg.vector_norm(v)
    value, residual, n = float("nan"), float("inf"), 0
    for _ in range(max_iter):
        w = matvec(v).to(dtype)
        n += 1
        value = float(torch.dot(v, w))
        residual = float(torch.linalg.vector_norm(w - value * v))
        if callback is not None:
            callback(n, value)
        if residual <= tol * abs(value):
            break
        v = w / torch.linalg.vector_norm(w)
    return EigenResult(value=value, vector=v, n_hvp=n, residual=residual,
                       converged=residual <= tol * abs(value))


class SharpnessTracker:
    """Sharpness along a training run, warm-started from the previous top eigenvector.

    ``tracker(loss_fn, theta)`` returns an :class:`EigenResult` and remembers its vector;
    ``tracker.total_hvp`` counts every product so far.
    """

    def __init__(self, *, tol: float = 1e-4, max_iter: int = 100, seed: int = 0):
        self.tol = check_positive("sharpness_tol", tol)
        self.max_iter = check_int("sharpness_max_iter", max_iter, low=1)
        self.vector: torch.Tensor | None = None
        self.total_hvp = 0
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, loss_fn, theta: torch.Tensor) -> EigenResult:
        op = HessianOperator(loss_fn, theta)
        res = lanczos_top(op, op.dim, v0=self.vector, tol=self.tol, max_iter=self.max_iter,
                          dtype=theta.dtype, generator=self.generator, device=theta.device)
        self.vector = res.vector
        self.total_hvp += res.n_hvp
        return res

