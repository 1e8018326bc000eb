r"""SDE integrators as SymPy maps, the stochastic modified equation of a step, and OU scheme moments.

For an Itô SDE :math:`dX=a(X)\,dt+b(X)\,dW` (:math:`X\in\mathbb R^d`, :math:`W\in\mathbb R^m`; ``drift`` is
:math:`a`, ``diffusion`` the :math:`d\times m` matrix :math:`b` with columns :math:`b^j`), with
:math:`L^0=a\cdot\nabla+\tfrac12(bb^\top):\nabla^2` and :math:`L^j=b^j\cdot\nabla`:

* **Euler–Maruyama**: :math:`X'=X+a\Delta+\sum_jb^j\Delta W^j` (strong order 1/2, 1 for additive noise;
  weak order 1);
* **simplified weak order-2 scheme** (Kloeden & Platen 1992, eq. 14.2.7; Talay), with Gaussian
  increments :math:`\Delta W^j=\sqrt\Delta\,z_j`:

  .. math:: X'=X+a\Delta+\tfrac12L^0a\,\Delta^2+\sum_j\big(b^j+\tfrac\Delta2(L^0b^j+L^ja)\big)\Delta W^j
            +\tfrac12\sum_{j_1,j_2}L^{j_1}b^{j_2}\big(\Delta W^{j_1}\Delta W^{j_2}-\delta_{j_1j_2}\Delta\big).

  The general scheme also has two-point Lévy-area terms :math:`V_{j_1j_2}`, which cancel when the
  noise is *commutative* (:math:`L^{j_1}b^{j_2}=L^{j_2}b^{j_1}`): additive, scalar and diagonal noise,
  which covers every model of sdeeos.  `weak_order2` checks commutativity symbolically.

**Stochastic modified equation** of a step (Li, Tai & E 2017; docs/theory.md#stochastic-modified-equation).  For a step affine in its
noise, :math:`\theta'=\theta+A(\theta)+B(\theta)z`, the first-order SME in time :math:`t=k\eta` is
:math:`d\Theta=\frac{A}{\eta}dt+\frac{B}{\sqrt\eta}dW` (`sme_coefficients`): Euler–Maruyama with
:math:`\Delta=\eta` *is* the step (for SGD with additive noise).

**OU reference** (:math:`dX=-\kappa(X-\mu)dt+s\,dW`): the pathwise-exact transition over :math:`h` given
the increment :math:`\Delta W`: :math:`X'=\mu+e^{-\kappa h}(X-\mu)+sI` with
:math:`I=\int_0^he^{-\kappa(h-u)}dW_u`, jointly Gaussian with :math:`\Delta W`
(`derive_ou_pathwise_transition`).  With :math:`\Delta W=\sqrt h z_0` and
:math:`I=c_1z_0+c_2z_1`, a scheme and the exact solution driven by the same :math:`z_0` are on the
same Brownian path: the strong error is measured without a fine reference solution, and the paired
difference :math:`\varphi(X^h_T)-\varphi(X_T)` estimates the weak error with a small variance.
For *linear* schemes :math:`X'=rX+c+qz_0` the means, variances and the joint mean-square strong
error are exact linear recursions (`linear_scheme_moments`, `joint_moments`): test oracles.

>>> x, k, s, h, z = sp.symbols("x kappa s h z", real=True)
>>> new = weak_order2((x,), (-k * x,), sp.Matrix([[s]]), h, (sp.sqrt(h) * z,))[0]
>>> sp.expand(new - (x * (1 - k * h + (k * h) ** 2 / 2) + s * (1 - k * h / 2) * sp.sqrt(h) * z))
0
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._errors import ParameterError

__all__ = [
    "generator_terms",
    "euler_maruyama",
    "weak_order2",
    "is_commutative",
    "sme_coefficients",
    "derive_ou_pathwise_transition",
    "ou_pathwise_coefficients",
    "linear_scheme_coefficients",
    "derive_weak_order",
    "linear_scheme_moments",
    "joint_moments",
]


def _as_matrix(diffusion, d):
    B = sp.Matrix(diffusion)
    if B.shape[0] != d and B.shape == (0, 0):
        B = sp.zeros(d, 0)
    if B.shape[0] != d:
        raise ValueError(f"diffusion must have {d} rows, got shape {B.shape}")
    return B


def generator_terms(state, drift, diffusion):
    r"""``(L0, Lj)``: callables applying :math:`L^0` and :math:`L^j` to a scalar expression."""
    d = len(state)
    B = _as_matrix(diffusion, d)
    D = B * B.T

    def L0(f):
        out = sum(drift[k] * sp.diff(f, state[k]) for k in range(d))
        out += sum(D[k, l] * sp.diff(f, state[k], state[l]) for k in range(d) for l in range(d)) / 2
        return out

    def Lj(j, f):
        return sum(B[k, j] * sp.diff(f, state[k]) for k in range(d))

    return L0, Lj


def euler_maruyama(state, drift, diffusion, dt, dW) -> tuple[sp.Expr, ...]:
    """Euler–Maruyama map; ``dW`` holds the ``m`` Brownian increments of the step."""
    d = len(state)
    B = _as_matrix(diffusion, d)
    return tuple(state[k] + drift[k] * dt + sum(B[k, j] * dW[j] for j in range(B.shape[1])) for k in range(d))


def is_commutative(state, diffusion) -> bool:
    r"""Whether :math:`L^{j_1}b^{k,j_2}=L^{j_2}b^{k,j_1}` for all :math:`k, j_1, j_2` (symbolically)."""
    d = len(state)
    B = _as_matrix(diffusion, d)
    _, Lj = generator_terms(state, [0] * d, B)
    m = B.shape[1]
    return all(sp.simplify(Lj(j1, B[k, j2]) - Lj(j2, B[k, j1])) == 0
               for k in range(d) for j1 in range(m) for j2 in range(j1 + 1, m))


def weak_order2(state, drift, diffusion, dt, dW) -> tuple[sp.Expr, ...]:
    """Simplified weak order-2 map (module docstring); ``ParameterError`` for non-commutative noise."""
    d = len(state)
    B = _as_matrix(diffusion, d)
    m = B.shape[1]
    if not is_commutative(state, B):
        raise ParameterError("the weak order-2 scheme here needs commutative noise (L^j1 b^j2 = L^j2 b^j1); "
                             "use method 'em'")
    L0, Lj = generator_terms(state, drift, B)
    out = []
    for k in range(d):
        a = drift[k]
        new = state[k] + a * dt + L0(a) * dt**2 / 2
        for j in range(m):
            new += (B[k, j] + dt / 2 * (L0(B[k, j]) + Lj(j, a))) * dW[j]
        for j1 in range(m):
            for j2 in range(m):
                coef = Lj(j1, B[k, j2])
                if coef != 0:
                    new += coef * (dW[j1] * dW[j2] - (dt if j1 == j2 else 0)) / 2
        out.append(new)
    return tuple(out)


def sme_coefficients(state, update, noise, eta) -> tuple[tuple[sp.Expr, ...], sp.Matrix]:
    r"""Drift :math:`A/\eta` and diffusion :math:`B/\sqrt\eta` of the first-order SME of a step.

    ``update[i]`` must be affine in the ``noise`` symbols (``ParameterError`` otherwise); time is
    :math:`t=k\eta` with ``eta`` the step-size symbol.
    """
    zero = {z: 0 for z in noise}
    drift, rows = [], []
    for s, f in zip(state, update):
        for z1 in noise:
            for z2 in noise:
                if sp.simplify(sp.diff(f, z1, z2)) != 0:
                    raise ParameterError(f"the update of {s} is not affine in the noise; no SME of this form")
        drift.append(sp.cancel(sp.expand(f.subs(zero) - s) / eta))
        rows.append([sp.expand(sp.diff(f, z)) / sp.sqrt(eta) for z in noise])
    B = sp.Matrix(rows) if noise else sp.zeros(len(state), 0)
    return tuple(drift), B


# --------------------------------------------------------------------------------------------- OU
kappa = sp.Symbol("kappa", positive=True)
s_ou = sp.Symbol("s", positive=True)
h = sp.Symbol("h", positive=True)


@functools.lru_cache(maxsize=None)
def derive_ou_pathwise_transition() -> dict[str, sp.Expr]:
    r"""``a`` :math:`=e^{-\kappa h}`, ``cov`` :math:`=\mathrm{Cov}(I,\Delta W)`, ``var`` :math:`=\mathrm{Var}\,I`
    (Itô isometry), and ``c1``, ``c2`` with :math:`I=c_1z_0+c_2z_1`, :math:`\Delta W=\sqrt hz_0`."""
    u = sp.Symbol("u", positive=True)
    kern = sp.exp(-kappa * (h - u))
    cov = sp.simplify(sp.integrate(kern, (u, 0, h)))
    var = sp.simplify(sp.integrate(kern**2, (u, 0, h)))
    c1 = cov / sp.sqrt(h)
    c2 = sp.sqrt(var - c1**2)
    return {"a": sp.exp(-kappa * h), "cov": cov, "var": var, "c1": c1, "c2": c2}


def ou_pathwise_coefficients(rate: float, step: float) -> tuple[float, float, float]:
    r"""``(a, c1, c2)`` for :math:`\kappa` = ``rate`` > 0 and :math:`h` = ``step``, evaluated by SymPy in 40-digit
    arithmetic (``c2`` cancels catastrophically in float64 for small :math:`\kappa h`)."""
    tr = derive_ou_pathwise_transition()
    subs = {kappa: sp.Rational(rate), h: sp.Rational(step)}
    return tuple(float(tr[k].subs(subs).evalf(40)) for k in ("a", "c1", "c2"))


def linear_scheme_coefficients(update: sp.Expr, x: sp.Symbol, z: sp.Symbol) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(r, c, q)`` of a one-step map affine in ``x`` and ``z``: ``update = r*x + c + q*z``."""
    e = sp.expand(update)
    r, q = e.coeff(x, 1), e.coeff(z, 1)
    c = sp.expand(e - r * x - q * z)
    if c.has(x) or c.has(z) or r.has(z) or q.has(x):
        raise ValueError("update is not affine in x and z")
    return sp.simplify(r), sp.simplify(c), sp.simplify(q)


def derive_weak_order(r: sp.Expr, rate=kappa, step=h) -> int:
    r"""Weak order of a linear scheme for the mean of :math:`dX=-\kappa X\,dt`: the leading power of
    :math:`h` in :math:`\log(r)/h+\kappa` (the per-unit-time error of the decay rate)."""
    err = sp.series(sp.log(r) / step + rate, step, 0, 5).removeO()
    err = sp.expand(err)
    if err == 0:
        return 5
    return int(min(t.as_coeff_exponent(step)[1] for t in sp.Add.make_args(err)))


def linear_scheme_moments(r: float, c: float, q: float, n_steps: int, x0: float) -> tuple[float, float]:
    """Exact mean and second moment after ``n_steps`` of :math:`X'=rX+c+qz`, :math:`X_0=x_0`."""
    m, m2 = float(x0), float(x0) ** 2
    for _ in range(int(n_steps)):
        m, m2 = r * m + c, r * r * m2 + 2 * r * c * m + c * c + q * q
    return m, m2


def joint_moments(scheme: tuple[float, float, float], exact: tuple[float, float, float, float],
                  n_steps: int, x0: float) -> dict[str, float]:
    r"""Exact moments of a linear scheme :math:`X'=rX+c+qz_0` and the exact OU solution
    :math:`Y'=aY+e+s(c_1z_0+c_2z_1)` driven by the same :math:`z_0`, from :math:`X_0=Y_0=x_0`.

    ``scheme = (r, c, q)``, ``exact = (a, e, s*c1, s*c2)``.  Returns ``mean_x``, ``mean_y``,
    ``m2_x``, ``m2_y`` and ``mse`` :math:`=\mathbb E(X_N-Y_N)^2` (the squared strong error).
    """
    r, c, q = scheme
    a, e, p1, p2 = exact
    A = np.array([[r, 0.0], [0.0, a]])
    b = np.array([c, e])
    G = np.array([[q, 0.0], [p1, p2]])   # rows: X, Y; columns: z0, z1
    mean = np.array([x0, x0], dtype=float)
    M = np.outer(mean, mean)
    for _ in range(int(n_steps)):
        M = A @ M @ A.T + np.outer(A @ mean, b) + np.outer(b, A @ mean) + np.outer(b, b) + G @ G.T
        mean = A @ mean + b
    return {"mean_x": mean[0], "mean_y": mean[1], "m2_x": M[0, 0], "m2_y": M[1, 1],
            "mse": M[0, 0] - 2 * M[0, 1] + M[1, 1]}
