r"""The largest stable step size for each edge an SGD run can hit: curvature, batch sharpness, noise kernel.

An edge-aware step-size rule (:class:`sdeeos.torch.EdgeSGD`) measures three quantities and turns each
into the step size at which its stability condition becomes an equality.  This module holds those
conversions; every one of them comes from a derivation elsewhere in `sdeeos.theory`.

**Curvature** (docs/theory.md#momentum-thresholds).  Heavy-ball momentum :math:`\mu` on a quadratic
of curvature :math:`\lambda` is stable iff :math:`\eta\lambda<h(\mu)`, :math:`h(\mu)=2+2\mu`
(`gd_stability.heavy_ball_threshold`; plain GD is :math:`\mu=0`).  With :math:`\lambda=\lambda_{\max}`
of the training loss: :math:`\eta_\lambda=h(\mu)/\lambda_{\max}`.

**Batch sharpness** (docs/theory.md#batch-sharpness).  The same threshold applied to the curvature of
the mini-batch loss along its own gradient, :math:`\eta_{\rm BS}=h(\mu)/\mathrm{BS}`.  Andreyev &
Beneventano's condition "batch sharpness below :math:`2/\eta`" is the case :math:`\mu=0`; for
:math:`\mu>0` this module applies the heavy-ball threshold to it, as to :math:`\lambda_{\max}`.

**Noise kernel** (docs/theory.md#noise-kernel).  The closure noise kernel norm of SGD (no momentum)
with batches of :math:`B` drawn without replacement from :math:`n` examples is
:math:`\mathcal K(\eta)=\frac1C\sum_a k(\eta,\lambda_a)` over the eigenvalues of the NTK :math:`\Theta`
(:math:`C` outputs per example; `mean_square.noise_kernel_norm`).  Each term is convex in
:math:`\lambda` with :math:`k(\eta,0)=0`, so if only the trace :math:`\tau=\operatorname{tr}\Theta`
and the top eigenvalue :math:`\lambda_{\rm top}` are known,

.. math:: \mathcal K(\eta)\le\mathcal K_{\rm up}(\eta)=\frac{\tau}{C\lambda_{\rm top}}\,k(\eta,\lambda_{\rm top})

(all of the trace placed at the top eigenvalue).  :math:`\mathcal K_{\rm up}` increases from 0 to
:math:`\infty` on the deterministic domain, and :math:`\mathcal K_{\rm up}(\eta_K)=1` at
(:func:`derive_noise_kernel_edge`, solved by SymPy)

.. math:: \eta_K=\frac{2}{\frac{\tau}{C}\,\frac{n-B}{B(n-1)}+\lambda_{\rm top}\,\frac{n(B-1)}{B(n-1)}} ,

so every :math:`\eta<\eta_K` has :math:`\mathcal K<1`.  At :math:`B=n` it is the GD edge
:math:`2/\lambda_{\rm top}`; at :math:`B=1` it is :math:`2C/\tau`, set by the trace alone.  The
derivation covers plain SGD only: :math:`\eta_K` is not defined for :math:`\mu>0`.

**The rule.**  With the edges that are switched on and a margin :math:`m\in(0,1)`,

.. math:: \eta=\min\{\eta_{\max},\ m\,\eta_\lambda,\ m\,\eta_{\rm BS},\ m\,\eta_K\}

(:func:`edge_step_size`), and the *binding* edge is the smallest of them (or the cap).

>>> round(noise_kernel_edge(ntk_trace=3.0, lambda_top=1.0, batch_size=1, n=10, n_outputs=1), 12)  # 2C/tau
0.666666666667
>>> round(noise_kernel_edge(ntk_trace=3.0, lambda_top=1.0, batch_size=10, n=10, n_outputs=1), 12)  # 2/lambda
2.0
>>> edge_step_size({"curvature": 2.0, "batch_sharpness": 1.5}, margin=0.9, eta_max=10.0)
(1.35, 'batch_sharpness')
"""

from __future__ import annotations

import functools
import math

import sympy as sp

from .._errors import ParameterError
from .._validation import check_int, check_positive, check_real
from . import batch_noise, gd_stability, mean_square

__all__ = [
    "EDGE_TERMS",
    "ntk_trace_symbol",
    "lambda_top_symbol",
    "n_outputs_symbol",
    "derive_noise_kernel_upper",
    "derive_noise_kernel_edge",
    "curvature_edge",
    "batch_sharpness_edge",
    "noise_kernel_edge",
    "noise_kernel_upper",
    "edge_step_size",
    "check_terms",
    "prepare",
]

EDGE_TERMS = ("curvature", "batch_sharpness", "noise_kernel")

ntk_trace_symbol = sp.Symbol("tau", positive=True)
lambda_top_symbol = sp.Symbol("lambda_top", positive=True)
n_outputs_symbol = sp.Symbol("C", positive=True, integer=True)

_SAMPLING = "without_replacement"  # the training harness's sampler (docs/theory.md#batch-noise)


@functools.lru_cache(maxsize=None)
def derive_noise_kernel_upper(sampling: str = _SAMPLING) -> sp.Expr:
    r""":math:`\mathcal K_{\rm up}(\eta)=\frac{\tau}{C\lambda_{\rm top}}k(\eta,\lambda_{\rm top})` from the
    derived kernel term (`mean_square.derive_noise_kernel_term`)."""
    term = mean_square.derive_noise_kernel_term(sampling)["term"]
    lam = lambda_top_symbol
    return sp.factor(ntk_trace_symbol / (n_outputs_symbol * lam) * term.subs(mean_square.curvature, lam))


@functools.lru_cache(maxsize=None)
def derive_noise_kernel_edge(sampling: str = _SAMPLING) -> sp.Expr:
    r"""The step size solving :math:`\mathcal K_{\rm up}(\eta)=1` (the only root; :math:`\mathcal K_{\rm up}`
    is a Möbius function of :math:`\eta` through 0).

    >>> n, B = mean_square.n_sym, mean_square.B_sym
    >>> tau, lam, C = ntk_trace_symbol, lambda_top_symbol, n_outputs_symbol
    >>> expected = 2 / (tau / C * (n - B) / (B * (n - 1)) + lam * n * (B - 1) / (B * (n - 1)))
    >>> sp.simplify(derive_noise_kernel_edge() - expected)
    0
    """
    eta = mean_square.eta
    roots = sp.solve(sp.Eq(derive_noise_kernel_upper(sampling), 1), eta)
    if len(roots) != 1:  # pragma: no cover - guarded by the doctest
        raise AssertionError(f"expected one root of K_up = 1, got {roots}")
    return sp.factor(roots[0])


@functools.lru_cache(maxsize=None)
def _numeric():
    args = (ntk_trace_symbol, lambda_top_symbol, n_outputs_symbol, mean_square.n_sym, mean_square.B_sym)
    return {
        "edge": sp.lambdify(args, derive_noise_kernel_edge(), "math"),
        "upper": sp.lambdify((mean_square.eta,) + args, derive_noise_kernel_upper(), "math"),
    }


def check_terms(terms, name: str = "terms") -> tuple[str, ...]:
    """A non-empty tuple of distinct names from `EDGE_TERMS`, given as a sequence or a comma-separated string.

    >>> check_terms("curvature, noise_kernel")
    ('curvature', 'noise_kernel')
    >>> check_terms("curvature,sharpness", "edge_terms")
    Traceback (most recent call last):
    sdeeos._errors.ParameterError: edge_terms must be a comma-separated non-empty subset of curvature, batch_sharpness, noise_kernel; got 'curvature,sharpness' ('sharpness' is not a term)
    """
    allowed = ", ".join(EDGE_TERMS)
    if isinstance(terms, str):
        names = [t.strip() for t in terms.split(",")] if terms.strip() else []
    elif isinstance(terms, (list, tuple)) and all(isinstance(t, str) for t in terms):
        names = list(terms)
    else:
        raise ParameterError(f"{name} must be a comma-separated non-empty subset of {allowed}; got {terms!r}")
    bad = [t for t in names if t not in EDGE_TERMS]
    if not names or bad or len(set(names)) != len(names):
        why = ("empty" if not names else f"{bad[0]!r} is not a term" if bad and bad[0]
               else "an empty name" if bad else "a term named twice")
        raise ParameterError(f"{name} must be a comma-separated non-empty subset of {allowed}; got {terms!r} ({why})")
    return tuple(names)


def prepare() -> None:
    """Derive and lambdify the noise-kernel edge now (about 0.3 s, once per process), not at first use."""
    _numeric()
    gd_stability.heavy_ball_threshold(0.0)


def _momentum_threshold(momentum) -> float:
    return gd_stability.heavy_ball_threshold(momentum)


def curvature_edge(lambda_max, momentum=0.0) -> float:
    r""":math:`\eta_\lambda=h(\mu)/\lambda_{\max}` (:math:`h(\mu)=2+2\mu`); ``inf`` for :math:`\lambda_{\max}\le0`.

    >>> curvature_edge(4.0), curvature_edge(4.0, momentum=0.5), curvature_edge(-1.0)
    (0.5, 0.75, inf)
    """
    lam = check_real("lambda_max", lambda_max)
    return _momentum_threshold(momentum) / lam if lam > 0 else math.inf


def batch_sharpness_edge(batch_sharpness, momentum=0.0) -> float:
    r""":math:`\eta_{\rm BS}=h(\mu)/\mathrm{BS}`; ``inf`` for :math:`\mathrm{BS}\le0`."""
    bs = check_real("batch_sharpness", batch_sharpness)
    return _momentum_threshold(momentum) / bs if bs > 0 else math.inf


def _kernel_args(ntk_trace, lambda_top, batch_size, n, n_outputs):
    tau = check_real("ntk_trace", ntk_trace, low=0.0)
    lam = check_positive("lambda_top", lambda_top)
    n_outputs = check_int("n_outputs", n_outputs, low=1)
    B, n, _ = batch_noise.check_batch(batch_size, n, _SAMPLING)
    if n < 2:
        raise ParameterError(f"n must be >= 2 for sampling without replacement, got {n}")
    return tau, lam, n_outputs, n, B


def noise_kernel_edge(*, ntk_trace, lambda_top, batch_size, n, n_outputs=1) -> float:
    r""":math:`\eta_K`: the step at which the bound :math:`\mathcal K_{\rm up}` reaches 1 (module docstring).

    ``ntk_trace`` is :math:`\operatorname{tr}\Theta=\frac1n\sum_i\lVert\partial f(x_i)/\partial\theta\rVert_F^2`
    (mean loss normalisation, all ``n_outputs`` outputs), ``lambda_top`` its top eigenvalue.
    """
    tau, lam, C, n, B = _kernel_args(ntk_trace, lambda_top, batch_size, n, n_outputs)
    if tau == 0.0:
        return 2.0 / lam if B == n else math.inf
    return float(_numeric()["edge"](tau, lam, C, n, B))


def noise_kernel_upper(eta, *, ntk_trace, lambda_top, batch_size, n, n_outputs=1) -> float:
    r""":math:`\mathcal K_{\rm up}(\eta)`; ``inf`` outside the deterministic domain (the curvature edge crossed).

    >>> k = noise_kernel_upper(0.5, ntk_trace=3.0, lambda_top=1.0, batch_size=2, n=10)
    >>> ref = 3.0 * mean_square.noise_kernel_norm(0.5, [1.0], 2, 10, sampling="without_replacement")
    >>> abs(k - ref) < 1e-14
    True
    """
    eta = check_positive("eta", eta)
    tau, lam, C, n, B = _kernel_args(ntk_trace, lambda_top, batch_size, n, n_outputs)
    domain = 2.0 - eta * lam * n * (B - 1) / (B * (n - 1))  # 2 - eta*lambda*(1 + c_full)
    if domain <= 0:
        return math.inf
    return float(_numeric()["upper"](eta, tau, lam, C, n, B))


def edge_step_size(edges: dict, *, margin: float, eta_max: float) -> tuple[float, str]:
    r"""The rule :math:`\eta=\min\{\eta_{\max}, m\,\eta_e\}` over the given edges; returns ``(eta, binding)``,
    ``binding`` the name of the smallest edge or ``"eta_max"``.  Non-finite or non-positive edges are refused
    (a NaN must never become a step size); ``inf`` means "this edge does not bind"."""
    margin = check_real("margin", margin, low=0.0, high=1.0, low_open=True, high_open=True)
    eta_max = check_positive("eta_max", eta_max)
    eta, binding = eta_max, "eta_max"
    for name, value in edges.items():
        v = float(value)
        if math.isnan(v) or v <= 0:
            raise ParameterError(f"edge {name!r} must be a positive step size or inf, got {v!r}")
        if margin * v < eta:
            eta, binding = margin * v, name
    return eta, binding
