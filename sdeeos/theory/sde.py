r"""SDE view: Ornstein–Uhlenbeck moments (continuous and Euler–Maruyama), Fokker–Planck, SME.

Ornstein–Uhlenbeck (OU) process, with rate :math:`\kappa`, long-run mean :math:`\mu` and diffusion
amplitude :math:`s`:

.. math:: dX_t=-\kappa(X_t-\mu)\,dt+s\,dW_t .

Everything is derived by SymPy from the generator :math:`\mathcal Lf=-\kappa(x-\mu)f'+\tfrac{s^2}2f''`
(:math:`\frac{d}{dt}\mathbb Ef(X_t)=\mathbb E\mathcal Lf(X_t)`), from the Fokker–Planck zero-flux
condition, or from the Euler–Maruyama recursion, then lambdified:

* mean :math:`\mu+(x_0-\mu)e^{-\kappa t}`, variance :math:`v_0e^{-2\kappa t}+\frac{s^2}{2\kappa}(1-e^{-2\kappa t})`
  (:math:`v_0+s^2t` at :math:`\kappa=0`), stationary autocovariance :math:`\frac{s^2}{2\kappa}e^{-\kappa|\tau|}`;
* stationary density (Fokker–Planck) :math:`N(\mu, s^2/(2\kappa))`, only for :math:`\kappa>0`;
* Euler–Maruyama with step :math:`h`, :math:`X_{k+1}=X_k-\kappa(X_k-\mu)h+s\sqrt h\,Z_k`: mean
  :math:`\mu+(x_0-\mu)(1-\kappa h)^k`, variance :math:`(1-\kappa h)^{2k}v_0+\frac{s^2}{\kappa(2-\kappa h)}(1-(1-\kappa h)^{2k})`,
  stationary only for :math:`0<\kappa h<2`, ratio to the continuous one :math:`2/(2-\kappa h)`.
* Multivariate: stationary covariance of :math:`dX=-AX\,dt+G\,dW` solves :math:`AC+CA^\top=GG^\top`.

The 1-D SGD correspondence (docs/theory.md#ou-process): :math:`\theta_{k+1}=(1-\eta\lambda)\theta_k-\eta\xi_k` *is*
Euler–Maruyama with :math:`h=\eta`, :math:`\kappa=\lambda`, :math:`s=\sqrt\eta\,\sigma_g` for the
stochastic modified equation :math:`d\theta=-\lambda\theta\,dt+\sqrt\eta\sigma_g\,dW` (time
:math:`t=k\eta`).

>>> round(float(ou_variance(1.0, rate=2.0, diffusion=2.0)), 12)  # (4/4)(1 - e^-4)
0.981684361111
>>> float(euler_maruyama_ou_stationary_variance(0.5, rate=2.0, diffusion=2.0))  # 4/(2*(2-1))
2.0
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp
from scipy.linalg import solve_continuous_lyapunov

from .._errors import OutsideDomainError, ParameterError
from .._validation import check_choice, check_nonnegative, check_positive, check_real

__all__ = [
    "ou_symbols",
    "ou_generator",
    "derive_ou_moments",
    "derive_ou_stationary_density",
    "derive_ou_autocovariance",
    "derive_euler_maruyama_ou",
    "derive_lyapunov_equation",
    "ou_mean",
    "ou_variance",
    "ou_stationary_variance",
    "ou_autocovariance",
    "ou_transition",
    "euler_maruyama_ou_mean",
    "euler_maruyama_ou_variance",
    "euler_maruyama_ou_stationary_variance",
    "ou_stationary_covariance",
]

t, tau = sp.symbols("t tau", nonnegative=True)
x = sp.Symbol("x", real=True)
x0, mu = sp.symbols("x0 mu", real=True)
v0 = sp.Symbol("v0", nonnegative=True)
kappa = sp.Symbol("kappa", real=True, nonzero=True)
s = sp.Symbol("s", positive=True)
h = sp.Symbol("h", positive=True)
k = sp.Symbol("k", integer=True, nonnegative=True)


def ou_symbols():
    """``(t, x, x0, v0, kappa, mu, s, h, k)``: time, state, initial mean/variance, rate, mean, diffusion, EM step, EM index."""
    return t, x, x0, v0, kappa, mu, s, h, k


def ou_generator(f: sp.Expr, drift=None, diffusion=None) -> sp.Expr:
    r"""Itô generator :math:`\mathcal Lf=b f'+\tfrac12\sigma^2f''` of a 1-D diffusion (default: the OU process)."""
    drift = -kappa * (x - mu) if drift is None else drift
    diffusion = s if diffusion is None else diffusion
    return sp.expand(drift * sp.diff(f, x) + diffusion**2 / 2 * sp.diff(f, x, 2))


@functools.lru_cache(maxsize=None)
def derive_ou_moments() -> dict[str, sp.Expr]:
    r"""Transient mean, second moment and variance of the OU process from the moment ODEs.

    :math:`\dot m_1=\mathbb E\mathcal Lx`, :math:`\dot m_2=\mathbb E\mathcal Lx^2` (both close on
    :math:`m_1,m_2` because the drift is linear), solved by ``dsolve`` with
    :math:`m_1(0)=x_0`, :math:`m_2(0)=v_0+x_0^2`.  Also the :math:`\kappa\to0` limit of the variance.
    """
    m1, m2 = sp.Function("m1"), sp.Function("m2")
    E = {x: m1(t), x**2: m2(t)}

    def expect(expr):  # replace monomials of x by moment functions (polynomial of degree <= 2)
        poly = sp.Poly(expr, x)
        return sum(c * (E[x**p] if p else 1) for (p,), c in poly.terms())

    ode1 = sp.Eq(m1(t).diff(t), expect(ou_generator(x)))
    sol1 = sp.dsolve(ode1, m1(t), ics={m1(0): x0}).rhs
    ode2 = sp.Eq(m2(t).diff(t), expect(ou_generator(x**2)).subs(m1(t), sol1))
    sol2 = sp.dsolve(ode2, m2(t), ics={m2(0): v0 + x0**2}).rhs
    mean = sp.simplify(sol1)
    var = sp.simplify(sp.expand(sol2 - sol1**2))
    var = sp.collect(sp.expand(var), [v0, s], sp.factor)
    var_zero_rate = sp.limit(var, kappa, 0)
    return {"mean": mean, "second_moment": sp.simplify(sol2), "variance": var,
            "variance_zero_rate": var_zero_rate}


@functools.lru_cache(maxsize=None)
def derive_ou_stationary_density() -> sp.Expr:
    r"""Stationary Fokker–Planck density for :math:`\kappa>0`: zero probability flux
    :math:`b\,p-\frac{s^2}2p'=0`, solved by ``dsolve`` and normalised by ``integrate``."""
    kp = sp.Symbol("kappa", positive=True)
    p = sp.Function("p")
    drift = -kp * (x - mu)
    flux = drift * p(x) - s**2 / 2 * p(x).diff(x)
    general = sp.dsolve(sp.Eq(flux, 0), p(x)).rhs
    (const,) = general.free_symbols - {x, mu, kp, s}
    norm = sp.integrate(general, (x, -sp.oo, sp.oo))
    density = sp.simplify(general / norm)
    return density.subs(kp, kappa)


@functools.lru_cache(maxsize=None)
def derive_ou_autocovariance() -> sp.Expr:
    r"""Stationary :math:`\operatorname{Cov}(X_t,X_{t+\tau})`: :math:`\frac{d}{d\tau}\mathbb E[X_tX_{t+\tau}\,|\,X_t]`
    follows the mean ODE, so :math:`C(\tau)=C(0)e^{-\kappa\tau}` with :math:`C(0)` the stationary variance."""
    mom = derive_ou_moments()
    stationary_var = sp.limit(mom["variance"].subs(kappa, sp.Symbol("kp", positive=True)), t, sp.oo)
    stationary_var = stationary_var.subs(sp.Symbol("kp", positive=True), kappa)
    # conditional mean of X_{t+tau} - mu given X_t is (X_t - mu) e^{-kappa tau}
    cond_mean = mom["mean"].subs({t: tau, x0: x}) - mu
    return sp.simplify(sp.diff(cond_mean, x) * stationary_var)


@functools.lru_cache(maxsize=None)
def derive_euler_maruyama_ou() -> dict[str, sp.Expr]:
    r"""Mean and variance of the Euler–Maruyama chain by ``rsolve`` of the moment recursions.

    :math:`\mu_{k+1}=(1-\kappa h)\mu_k+\kappa h\mu`, :math:`v_{k+1}=(1-\kappa h)^2v_k+s^2h`.
    Keys ``mean``, ``variance``, ``stationary_variance`` (:math:`|1-\kappa h|<1`) and
    ``ratio_to_continuous`` (:math:`2/(2-\kappa h)`).
    """
    mk, vk = sp.Function("mk"), sp.Function("vk")
    zsym = sp.Symbol("z", real=True)
    step = x - kappa * (x - mu) * h + s * sp.sqrt(h) * zsym
    # E step and Var step with z ~ N(0,1) independent of x
    e_step = sp.expand(step).coeff(zsym, 0)
    var_coeff_x = sp.expand(e_step).coeff(x, 1) ** 2
    var_noise = sp.expand(step).coeff(zsym, 1) ** 2
    mean = sp.rsolve(mk(k + 1) - e_step.subs(x, mk(k)), mk(k), {mk(0): x0})
    var = sp.rsolve(vk(k + 1) - var_coeff_x * vk(k) - var_noise, vk(k), {vk(0): v0})
    stationary = sp.factor(sp.simplify(var_noise / (1 - var_coeff_x)))
    continuous = s**2 / (2 * kappa)
    return {"mean": sp.simplify(mean), "variance": sp.simplify(var), "stationary_variance": stationary,
            "ratio_to_continuous": sp.factor(sp.simplify(stationary / continuous))}


@functools.lru_cache(maxsize=None)
def derive_lyapunov_equation(dim: int = 2) -> tuple[sp.Matrix, sp.Matrix]:
    r"""Stationarity of :math:`\mathbb E[XX^\top]` for :math:`dX=-AX\,dt+G\,dW` (Itô):
    :math:`\frac d{dt}C=-AC-CA^\top+GG^\top=0`.  Returns the symbolic ``(A, C)`` solution for ``dim``
    (generic symbols; ``G G^T`` is the symbolic symmetric matrix ``D``)."""
    A = sp.Matrix(dim, dim, lambda i, j: sp.Symbol(f"a{i}{j}", real=True))
    D = sp.Matrix(dim, dim, lambda i, j: sp.Symbol(f"d{min(i, j)}{max(i, j)}", real=True))
    C = sp.Matrix(dim, dim, lambda i, j: sp.Symbol(f"c{min(i, j)}{max(i, j)}", real=True))
    eqs = list(-A * C - C * A.T + D)
    unknowns = sorted(C.free_symbols, key=str)
    sol = sp.solve(eqs, unknowns, dict=True)[0]
    return A, C.subs(sol)


# --------------------------------------------------------------------------------------------- numeric
@functools.lru_cache(maxsize=None)
def _numeric():
    mom = derive_ou_moments()
    em = derive_euler_maruyama_ou()
    kp = kappa
    return {
        "mean": sp.lambdify((t, x0, kp, mu), mom["mean"], "numpy"),
        "var": sp.lambdify((t, v0, kp, s), mom["variance"], "numpy"),
        "var0": sp.lambdify((t, v0, s), mom["variance_zero_rate"], "numpy"),
        "acov": sp.lambdify((tau, kp, s), derive_ou_autocovariance(), "numpy"),
        "em_mean": sp.lambdify((k, h, x0, kp, mu), em["mean"], "numpy"),
        "em_var": sp.lambdify((k, h, v0, kp, s), em["variance"], "numpy"),
        "em_stat": sp.lambdify((h, kp, s), em["stationary_variance"], "numpy"),
    }


def _arr(v):
    return np.asarray(v, dtype=float)


def ou_mean(time, initial_mean, rate, long_run_mean=0.0):
    r""":math:`\mathbb EX_t=\mu+(x_0-\mu)e^{-\kappa t}` (any real rate; vectorised over ``time``)."""
    rate = check_real("rate", rate)
    return _numeric()["mean"](_arr(time), _arr(initial_mean), rate, _arr(long_run_mean))[()]


def ou_variance(time, rate, diffusion, initial_variance=0.0):
    r""":math:`\operatorname{Var}X_t=v_0e^{-2\kappa t}+\frac{s^2}{2\kappa}(1-e^{-2\kappa t})` (:math:`v_0+s^2t` at :math:`\kappa=0`)."""
    rate = check_real("rate", rate)
    diffusion = check_nonnegative("diffusion", diffusion)
    f = _numeric()
    tt = _arr(time)
    if rate == 0.0:
        return np.asarray(f["var0"](tt, _arr(initial_variance), diffusion) + 0 * tt, dtype=float)[()]
    return np.asarray(f["var"](tt, _arr(initial_variance), rate, diffusion), dtype=float)[()]


def _stationary_guard(rate, what, outside):
    check_choice("outside", outside, ("raise", "nan"))
    if rate <= 0:
        if outside == "raise":
            raise OutsideDomainError(f"{what}: no stationary state for rate = {rate} <= 0")
        return False
    return True


def ou_stationary_variance(rate, diffusion, *, outside: str = "raise"):
    r""":math:`s^2/(2\kappa)` for :math:`\kappa>0` (limit of :func:`ou_variance`); otherwise no stationary state."""
    rate = check_real("rate", rate)
    diffusion = check_nonnegative("diffusion", diffusion)
    if not _stationary_guard(rate, "OU process", outside):
        return float("nan")
    return float(_numeric()["acov"](0.0, rate, diffusion))


def ou_autocovariance(lag, rate, diffusion, *, outside: str = "raise"):
    r"""Stationary :math:`\operatorname{Cov}(X_t,X_{t+\tau})=\frac{s^2}{2\kappa}e^{-\kappa|\tau|}`."""
    rate = check_real("rate", rate)
    diffusion = check_nonnegative("diffusion", diffusion)
    if not _stationary_guard(rate, "OU process", outside):
        return np.full_like(_arr(lag), np.nan)[()]
    return np.asarray(_numeric()["acov"](np.abs(_arr(lag)), rate, diffusion), dtype=float)[()]


def ou_transition(step, rate, diffusion):
    r"""Exact one-step transition :math:`X_{t+h}=\mu+a(X_t-\mu)+b\,Z`: returns ``(a, b)``.

    :math:`a=e^{-\kappa h}` (the mean solution at :math:`x_0-\mu=1`), :math:`b^2` the variance at
    time :math:`h` from :math:`v_0=0`.  For testing SDE integrators against the exact law.
    """
    step = check_positive("step", step)
    a = float(ou_mean(step, 1.0, rate, 0.0))
    b = float(np.sqrt(ou_variance(step, rate, diffusion, 0.0)))
    return a, b


def euler_maruyama_ou_mean(n_steps, step, initial_mean, rate, long_run_mean=0.0):
    r"""Euler–Maruyama mean after ``n_steps``: :math:`\mu+(x_0-\mu)(1-\kappa h)^k`."""
    n_steps = _arr(n_steps)
    step = check_positive("step", step)
    rate = check_real("rate", rate)
    if rate == 0.0:
        return np.asarray(_arr(initial_mean) + 0 * n_steps, dtype=float)[()]
    return np.asarray(_numeric()["em_mean"](n_steps, step, _arr(initial_mean), rate, _arr(long_run_mean)),
                      dtype=float)[()]


def euler_maruyama_ou_variance(n_steps, step, rate, diffusion, initial_variance=0.0):
    r"""Euler–Maruyama variance after ``n_steps``:
    :math:`(1-\kappa h)^{2k}v_0+\frac{s^2h}{1-(1-\kappa h)^2}\big(1-(1-\kappa h)^{2k}\big)` (:math:`v_0+ks^2h` if :math:`\kappa h\in\{0,2\}`)."""
    kk = _arr(n_steps)
    step = check_positive("step", step)
    rate = check_real("rate", rate)
    diffusion = check_nonnegative("diffusion", diffusion)
    if rate * step in (0.0, 2.0):  # |1 - kappa h| = 1: the geometric sum degenerates to k terms
        return np.asarray(_arr(initial_variance) + kk * diffusion**2 * step, dtype=float)[()]
    return np.asarray(_numeric()["em_var"](kk, step, _arr(initial_variance), rate, diffusion), dtype=float)[()]


def euler_maruyama_ou_stationary_variance(step, rate, diffusion, *, outside: str = "raise"):
    r""":math:`s^2/(\kappa(2-\kappa h))`, only for :math:`0<\kappa h<2` (the discrete map's stability)."""
    step = check_positive("step", step)
    rate = check_real("rate", rate)
    diffusion = check_nonnegative("diffusion", diffusion)
    check_choice("outside", outside, ("raise", "nan"))
    if not 0 < rate * step < 2:
        if outside == "raise":
            raise OutsideDomainError(
                f"Euler-Maruyama chain has no stationary state: rate*step = {rate * step} not in (0, 2)")
        return float("nan")
    return float(_numeric()["em_stat"](step, rate, diffusion))


def ou_stationary_covariance(drift_matrix, diffusion_matrix, *, outside: str = "raise"):
    r"""Stationary covariance :math:`C` of :math:`dX=-AX\,dt+G\,dW`: :math:`AC+CA^\top=GG^\top` (SciPy solver).

    Needs every eigenvalue of :math:`A` to have positive real part (otherwise no stationary state).
    """
    check_choice("outside", outside, ("raise", "nan"))
    A = np.atleast_2d(np.asarray(drift_matrix, dtype=float))
    G = np.atleast_2d(np.asarray(diffusion_matrix, dtype=float))
    if A.shape[0] != A.shape[1] or G.shape[0] != A.shape[0]:
        raise ParameterError("drift_matrix must be d x d and diffusion_matrix d x m")
    if np.linalg.eigvals(A).real.min() <= 0:
        if outside == "raise":
            raise OutsideDomainError("no stationary state: the drift matrix has an eigenvalue with Re <= 0")
        return np.full(A.shape, np.nan)
    return solve_continuous_lyapunov(A, G @ G.T)
