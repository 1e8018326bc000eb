r"""The minimalist edge-of-stability example of Zhu et al. (ICLR 2023; docs/theory.md#minimalist).

.. math:: f(x, y) = \tfrac14\,(x^2y^2-1)^2 .

Everything the model `sdeeos.models.Minimalist` runs and every prediction it reports is derived here
by SymPy from this one expression:

* gradient :math:`\nabla f=(x^2y^2-1)\,(xy^2,\;x^2y)` and Hessian; the sharpness is the exact top
  eigenvalue of the 2x2 Hessian (closed form, `top_eigenvalue_2x2`);
* on the minimiser set :math:`x^2y^2=1` the Hessian is :math:`\tfrac12\nabla g\nabla g^\top`
  (:math:`g=x^2y^2-1`) and :math:`S=2(x^2+y^2)`;
* gradient flow conserves :math:`c=x^2-y^2`, so it converges to the minimiser with
  :math:`S_{\rm GF}=2\sqrt{c^2+4}`; the :math:`\eta`-EoS minimiser (:math:`S=2/\eta`) has
  :math:`c^2=\eta^{-2}-4` (Zhu et al.'s :math:`c^4=\eta^{-2}-4` with their :math:`c^2=|x^2-y^2|`);
* GD does not conserve :math:`c`, but exactly :math:`c_{t+1}=c_t\,(1-\eta^2g_t^2x_t^2y_t^2)`;
* SGD with multiplicative noise, :math:`\theta'=\theta-\eta(1+\sigma z)\nabla f`: a minimiser of
  sharpness :math:`S` is mean-square stable iff :math:`\eta S(1+\sigma^2)<2`, but *almost surely*
  stable iff the Lyapunov exponent :math:`\Lambda(\eta S)=\mathbb E\log|1-\eta S(1+\sigma z)|<0`,
  whose upper root :math:`s^*(\sigma)>2` (:math:`\approx2(1+\sigma^2)` for small :math:`\sigma`): such SGD
  can converge to minimisers *sharper* than :math:`2/\eta` (`lyapunov_sharpness_bound`).

>>> round(float(gf_limit_sharpness(6.0, 0.05)), 4)
72.106
>>> round(eos_c_squared(0.05), 9)
396.0
>>> float(mean_square_sharpness_bound(0.05, 0.5))
32.0
>>> round(lyapunov_sharpness_bound(0.05, 0.1), 3)
40.423
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from scipy import integrate, optimize

from .._validation import check_nonnegative, check_positive, check_real
from ._expectation import expectation
from ._symbolic_loss import gradient, gradient_step, hessian, top_eigenvalue_2x2

__all__ = [
    "symbols",
    "loss",
    "derive_gradient",
    "derive_hessian",
    "derive_sharpness",
    "derive_sharpness_on_minimisers",
    "derive_gf_invariant",
    "derive_gf_limit_sharpness",
    "derive_eos_minimiser",
    "derive_gd_invariant_factor",
    "derive_mean_square_bound",
    "update",
    "sharpness",
    "gf_limit_sharpness",
    "eos_c_squared",
    "mean_square_sharpness_bound",
    "lyapunov_exponent",
    "lyapunov_sharpness_bound",
]

x, y = sp.symbols("x y", real=True)
eta, sigma = sp.symbols("eta sigma", positive=True)
z, z1, z2 = sp.symbols("z z1 z2", real=True)  # standard normal noise inputs
c = sp.Symbol("c", real=True)  # x**2 - y**2


def symbols():
    """``(x, y, eta, sigma, z, z1, z2)``."""
    return x, y, eta, sigma, z, z1, z2


def loss() -> sp.Expr:
    """:math:`f=\\tfrac14(x^2y^2-1)^2`."""
    return (x**2 * y**2 - 1) ** 2 / 4


@functools.lru_cache(maxsize=None)
def derive_gradient() -> tuple[sp.Expr, sp.Expr]:
    """:math:`\\nabla f`, factored: ``(x*y**2*(x**2*y**2 - 1), x**2*y*(x**2*y**2 - 1))``."""
    return tuple(sp.factor(g) for g in gradient(loss(), (x, y)))


@functools.lru_cache(maxsize=None)
def derive_hessian() -> sp.Matrix:
    """:math:`\\nabla^2 f`."""
    return sp.simplify(hessian(loss(), (x, y)))


@functools.lru_cache(maxsize=None)
def derive_sharpness() -> sp.Expr:
    """Exact top Hessian eigenvalue :math:`S(x, y)` (closed form for 2x2)."""
    return top_eigenvalue_2x2(hessian(loss(), (x, y)))


@functools.lru_cache(maxsize=None)
def derive_sharpness_on_minimisers() -> sp.Expr:
    """:math:`S` on :math:`xy=1` (by symmetry also :math:`xy=-1`): ``2*x**2 + 2/x**2``."""
    xp = sp.Symbol("x", positive=True)
    on_min = derive_sharpness().subs({x: xp, y: 1 / xp})
    # the radicand is a perfect square there: factor it so that SymPy can take the root
    on_min = sp.simplify(on_min.replace(
        lambda a: isinstance(a, sp.Pow) and a.exp == sp.Rational(1, 2),
        lambda a: sp.sqrt(sp.factor(sp.together(sp.expand(a.base))))))
    assert sp.simplify(on_min - 2 * (xp**2 + xp**-2)) == 0
    return on_min.subs(xp, x)


@functools.lru_cache(maxsize=None)
def derive_gf_invariant() -> sp.Expr:
    """:math:`c=x^2-y^2`, checked: :math:`\\dot c=\\nabla c\\cdot(-\\nabla f)=0`."""
    inv = x**2 - y**2
    gx, gy = derive_gradient()
    assert sp.simplify(-(sp.diff(inv, x) * gx + sp.diff(inv, y) * gy)) == 0
    return inv


@functools.lru_cache(maxsize=None)
def derive_gf_limit_sharpness() -> sp.Expr:
    r"""Sharpness of the gradient-flow limit in terms of :math:`c=x_0^2-y_0^2`: ``2*sqrt(c**2 + 4)``.

    Solves :math:`X-Y=c`, :math:`XY=1` for :math:`X=x^2>0`, :math:`Y=y^2>0`, then :math:`S=2(X+Y)`.
    """
    X, Y = sp.symbols("X Y", positive=True)
    sols = sp.solve([X - Y - c, X * Y - 1], [X, Y], dict=True)
    # keep the root with X, Y > 0 (checked at c = 1; the other one has X + Y < 0)
    (sol,) = [s for s in sols if (s[X] + s[Y]).subs(c, 1) > 0]
    S = sp.simplify(2 * (sol[X] + sol[Y]))
    assert sp.simplify(S**2 - 4 * (c**2 + 4)) == 0
    return 2 * sp.sqrt(c**2 + 4)


@functools.lru_cache(maxsize=None)
def derive_eos_minimiser() -> sp.Expr:
    """:math:`c^2` of the minimiser with :math:`S=2/\\eta`: ``eta**(-2) - 4``."""
    c2 = sp.Symbol("c2", positive=True)
    (sol,) = sp.solve(sp.Eq(derive_gf_limit_sharpness().subs(c**2, c2), 2 / eta), c2)
    return sp.simplify(sol)


@functools.lru_cache(maxsize=None)
def derive_gd_invariant_factor() -> sp.Expr:
    r"""Exact GD factor :math:`c_{t+1}/c_t=1-\eta^2g^2x^2y^2` with :math:`g=x^2y^2-1`."""
    xn, yn = update("gd")
    ratio = sp.factor(sp.expand(xn**2 - yn**2)) / (x**2 - y**2)
    ratio = sp.simplify(ratio)
    expected = 1 - eta**2 * (x**2 * y**2 - 1) ** 2 * x**2 * y**2
    assert sp.simplify(ratio - expected) == 0
    return expected


@functools.lru_cache(maxsize=None)
def derive_mean_square_bound() -> sp.Expr:
    r"""Largest mean-square-stable sharpness of a minimiser under multiplicative noise.

    Linearised along the top eigenvector :math:`u` of a minimiser (where the Hessian is rank one),
    :math:`\delta'=(1-\eta(1+\sigma z)S)\delta`; :math:`\mathbb E\delta'^2<\mathbb E\delta^2` iff
    :math:`S<2/(\eta(1+\sigma^2))`.
    """
    S, d = sp.symbols("S delta", positive=True)
    growth = expectation((1 - eta * (1 + sigma * z) * S) ** 2 * d**2, (d,), (z,)) / sp.Symbol(f"E[{d**2}]")
    roots = [r for r in sp.solve(sp.Eq(growth, 1), S) if r != 0]
    (bound,) = roots
    return sp.simplify(bound)


def update(method: str) -> tuple[sp.Expr, sp.Expr]:
    """The update map of ``method`` (``gd``, ``sgd`` additive, ``sgd-mult`` multiplicative noise)."""
    f = loss()
    if method == "gd":
        return gradient_step(f, (x, y), eta)
    if method == "sgd":
        return gradient_step(f, (x, y), eta, noise_terms=(sigma * z1, sigma * z2))
    if method == "sgd-mult":
        return gradient_step(f, (x, y), eta, gradient_scale=1 + sigma * z)
    raise ValueError(f"unknown method {method!r}")


# --------------------------------------------------------------------------------------------- numeric
@functools.lru_cache(maxsize=None)
def _numeric():
    return {
        "sharpness": sp.lambdify((x, y), derive_sharpness(), "numpy"),
        "gf": sp.lambdify(c, derive_gf_limit_sharpness(), "numpy"),
        "eos_c2": sp.lambdify(eta, derive_eos_minimiser(), "numpy"),
        "ms": sp.lambdify((eta, sigma), derive_mean_square_bound(), "numpy"),
    }


def sharpness(x_val, y_val):
    """Exact top Hessian eigenvalue of :math:`f` at ``(x, y)`` (vectorised)."""
    return np.asarray(_numeric()["sharpness"](np.asarray(x_val, float), np.asarray(y_val, float)))[()]


def gf_limit_sharpness(x0, y0):
    """Sharpness of the gradient-flow limit from ``(x0, y0)`` (needs ``x0*y0 != 0``)."""
    x0, y0 = np.asarray(x0, float), np.asarray(y0, float)
    return np.asarray(_numeric()["gf"](x0**2 - y0**2))[()]


def eos_c_squared(eta_val):
    """:math:`c^2=(x^2-y^2)^2` of the minimiser whose sharpness is exactly :math:`2/\\eta` (needs ``eta < 1/2``)."""
    eta_val = check_real("eta", eta_val, low=0.0, high=0.5, low_open=True, high_open=True)
    return float(_numeric()["eos_c2"](eta_val))


def mean_square_sharpness_bound(eta_val, sigma_val):
    """:math:`2/(\\eta(1+\\sigma^2))`: the sharpest minimiser that multiplicative-noise SGD can hold in mean square."""
    return float(_numeric()["ms"](check_positive("eta", eta_val), check_nonnegative("sigma", sigma_val)))


def lyapunov_exponent(s, sigma_val) -> float:
    r""":math:`\Lambda(s)=\mathbb E\log|1-s(1+\sigma z)|`, :math:`z\sim N(0,1)`: the almost-sure growth rate
    per step of a perturbation along the top eigenvector of a minimiser with :math:`\eta S=s` under
    multiplicative noise (the linearisation of `update` ``("sgd-mult")`` there).

    One-dimensional Gaussian integral with an integrable log singularity at :math:`z=(1-s)/(s\sigma)`,
    done by adaptive quadrature on both sides of it (on :math:`|z|<40`).
    """
    s = check_positive("s", s)
    sigma_val = check_nonnegative("sigma", sigma_val)
    a, b = 1.0 - s, -s * sigma_val
    if b == 0.0:
        return float(np.log(abs(a)))
    # log|a + b z| = log|b| + log|z - z0|: the log singularity at z0 goes into QUADPACK's
    # algebraic-logarithmic weights ('alg-loga' / 'alg-logb'), so both halves are integrated exactly.
    z0 = -a / b
    cut = 40.0  # the Gaussian weight beyond |z| = 40 is below 1e-300
    dens = lambda t: np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)  # noqa: E731
    if abs(z0) >= cut:
        rest = integrate.quad(lambda t: np.log(abs(t - z0)) * dens(t), -cut, cut, limit=200)[0]
    else:
        right = integrate.quad(dens, z0, cut, weight="alg-loga", wvar=(0.0, 0.0), limit=200)[0]
        left = integrate.quad(dens, -cut, z0, weight="alg-logb", wvar=(0.0, 0.0), limit=200)[0]
        rest = left + right
    return float(np.log(abs(b)) + rest)


@functools.lru_cache(maxsize=256)
def _lyapunov_root(sigma_val: float) -> float:
    if sigma_val == 0.0:
        return 2.0
    # Lambda(0) = 0 and Lambda'(0) = -1: scan up from small s for the first sign change, then solve.
    lo, hi = 1e-3, 1e-3 + 0.05
    while lyapunov_exponent(hi, sigma_val) < 0:
        lo, hi = hi, hi + 0.05
    return float(optimize.brentq(lambda s: lyapunov_exponent(s, sigma_val), lo, hi, xtol=1e-13, rtol=1e-13))


def lyapunov_sharpness_bound(eta_val, sigma_val) -> float:
    r""":math:`s^*(\sigma)/\eta`: the sharpest minimiser that multiplicative-noise SGD converges to almost surely."""
    eta_val = check_positive("eta", eta_val)
    return _lyapunov_root(check_nonnegative("sigma", sigma_val)) / eta_val
