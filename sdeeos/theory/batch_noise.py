r"""Mini-batch gradient noise under three sampling models, derived from the sampling distributions.

A mini-batch gradient is :math:`\hat g = \frac1n\sum_i D_i g_i` with per-example gradients
:math:`g_i`, :math:`D_i = \frac nB c_i` and :math:`c_i` the number of times example :math:`i` is in
the batch (docs/theory.md#batch-noise):

* ``"without_replacement"``: a uniformly random subset of exactly :math:`B` examples;
* ``"with_replacement"``: :math:`B` independent uniform draws (:math:`c` multinomial);
* ``"bernoulli"``: each example independently with probability :math:`p=B/n` (random batch size),
  still normalised by :math:`1/B`.

In all three :math:`\mathbb E D_i = 1` (unbiased).  SymPy derives the moments of :math:`c` from the
sampling distribution (binomial coefficients, sums over draws, independence), then

.. math:: \operatorname{Cov}(\hat g) = a\,\Sigma_1 + b\,\bar g\bar g^\top,\qquad
          a = \frac{\operatorname{Var}D_i-\operatorname{Cov}(D_i,D_j)}{n},\quad
          b = a + \operatorname{Cov}(D_i,D_j),

with the centred single-example covariance :math:`\Sigma_1=\frac1n\sum_i g_ig_i^\top-\bar g\bar g^\top`.
Results: without replacement :math:`a=\frac{n-B}{B(n-1)}, b=0`; with replacement
:math:`a=1/B, b=0`; Bernoulli :math:`a=b=\frac1B-\frac1n` (the *uncentred* second moment).

>>> float(centred_coefficient(10, 100, "without_replacement"))  # (n-B)/(B(n-1))
0.09090909090909091
>>> float(centred_coefficient(10, 100, "with_replacement"))
0.1
>>> float(mean_outer_coefficient(10, 100, "bernoulli"))  # 1/B - 1/n
0.09
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._validation import check_choice, check_int

__all__ = [
    "SAMPLING_SCHEMES",
    "n_data",
    "batch_size",
    "derive_count_moments",
    "derive_weight_covariance",
    "derive_noise_covariance_coefficients",
    "centred_coefficient",
    "mean_outer_coefficient",
    "batch_gradient_noise_variance",
    "check_batch",
]

SAMPLING_SCHEMES = ("without_replacement", "with_replacement", "bernoulli")

n_data = sp.Symbol("n", positive=True, integer=True)
batch_size = sp.Symbol("B", positive=True, integer=True)


def _scheme(sampling: str) -> str:
    return check_choice("sampling", sampling, SAMPLING_SCHEMES)


@functools.lru_cache(maxsize=None)
def derive_count_moments(sampling: str) -> dict[str, sp.Expr]:
    r"""``E[c_i]``, ``E[c_i**2]`` and ``E[c_i*c_j]`` (:math:`i\ne j`) derived from the sampling model.

    * without replacement: :math:`P(i\in\mathcal B)=\binom{n-1}{B-1}/\binom nB`,
      :math:`P(i,j\in\mathcal B)=\binom{n-2}{B-2}/\binom nB`, and :math:`c_i^2=c_i`;
    * with replacement: :math:`c_i=\sum_{k=1}^B e_{ik}` with :math:`e_{ik}=1[i_k=i]`, so
      :math:`\mathbb E c_ic_j=\sum_{k,l}P(i_k=i,i_l=j)`: :math:`B\,\delta_{ij}/n` (k = l) plus
      :math:`B(B-1)/n^2` (k != l, independent draws);
    * Bernoulli: :math:`c_i\sim\mathrm{Bernoulli}(p)` independent, :math:`c_i^2=c_i`, :math:`p=B/n`.

    >>> derive_count_moments("without_replacement")["E[c_i*c_j]"]
    B*(B - 1)/(n*(n - 1))
    """
    n, B = n_data, batch_size
    sampling = _scheme(sampling)
    if sampling == "without_replacement":
        total = sp.binomial(n, B)
        first = sp.combsimp(sp.binomial(n - 1, B - 1) / total)
        pair = sp.combsimp(sp.binomial(n - 2, B - 2) / total)
        second = first  # an indicator squared is itself
    elif sampling == "with_replacement":
        k, l = sp.symbols("k l", integer=True, positive=True)
        p_one = 1 / n  # P(i_k = i) for one uniform draw
        first = sp.summation(p_one, (k, 1, B))
        same_draw = sp.summation(p_one, (k, 1, B))  # k = l: P(i_k = i) (and 0 for i != j)
        distinct_draws = sp.summation(sp.summation(p_one * p_one, (l, 1, B)), (k, 1, B)) \
            - sp.summation(p_one * p_one, (k, 1, B))  # k != l: independent draws
        second = sp.simplify(same_draw + distinct_draws)
        pair = sp.simplify(distinct_draws)
    else:
        p = B / n
        first, second, pair = p, p, p * p
    return {"E[c_i]": sp.factor(first), "E[c_i**2]": sp.factor(second), "E[c_i*c_j]": sp.factor(pair)}


@functools.lru_cache(maxsize=None)
def derive_weight_covariance(sampling: str) -> dict[str, sp.Expr]:
    r"""Mean, variance and covariance of the weights :math:`D_i = \frac nB c_i`.

    Keys ``"mean"`` (= 1: unbiased), ``"var"`` (:math:`\operatorname{Var}D_i`) and ``"cov"``
    (:math:`\operatorname{Cov}(D_i, D_j)`, :math:`i\ne j`).

    >>> derive_weight_covariance("with_replacement")["cov"]
    -1/B
    """
    n, B = n_data, batch_size
    m = derive_count_moments(sampling)
    scale = n / B
    mean = sp.simplify(scale * m["E[c_i]"])
    var = sp.factor(sp.simplify(scale**2 * m["E[c_i**2]"] - mean**2))
    cov = sp.factor(sp.simplify(scale**2 * m["E[c_i*c_j]"] - mean**2))
    return {"mean": mean, "var": var, "cov": cov}


@functools.lru_cache(maxsize=None)
def derive_noise_covariance_coefficients(sampling: str) -> dict[str, sp.Expr]:
    r"""Coefficients :math:`a, b` in :math:`\operatorname{Cov}(\hat g)=a\,\Sigma_1+b\,\bar g\bar g^\top`.

    :math:`\operatorname{Cov}(\hat g)=\frac1{n^2}\sum_{ij}\operatorname{Cov}(D_i,D_j)g_ig_j^\top
    =\frac{v-c}{n}\cdot\frac1n\sum_ig_ig_i^\top + c\,\bar g\bar g^\top`, and
    :math:`\frac1n\sum_ig_ig_i^\top=\Sigma_1+\bar g\bar g^\top`.  Keys ``"centred"`` (a) and
    ``"mean_outer"`` (b).
    """
    w = derive_weight_covariance(sampling)
    n = n_data
    a = sp.factor(sp.simplify((w["var"] - w["cov"]) / n))
    b = sp.factor(sp.simplify(a + w["cov"]))
    return {"centred": a, "mean_outer": b}


@functools.lru_cache(maxsize=None)
def _numeric(sampling: str):
    c = derive_noise_covariance_coefficients(sampling)
    args = (batch_size, n_data)
    return (sp.lambdify(args, c["centred"], "numpy"), sp.lambdify(args, c["mean_outer"], "numpy"))


def check_batch(batch_size_value, n_value, sampling: str) -> tuple[int, int, str]:
    """Validate ``(B, n, sampling)``: ``1 <= B``, and ``B <= n`` unless sampling with replacement."""
    sampling = _scheme(sampling)
    n_value = check_int("n", n_value, low=1)
    high = None if sampling == "with_replacement" else n_value
    batch_size_value = check_int("batch_size", batch_size_value, low=1, high=high)
    if sampling == "without_replacement" and n_value == 1:
        raise ParameterError("n must be >= 2 for sampling without replacement (the formula has n - 1)")
    return batch_size_value, n_value, sampling


def centred_coefficient(batch_size_value, n_value, sampling: str):
    r"""Factor :math:`a(B, n)` multiplying the single-example covariance :math:`\Sigma_1`.

    Without replacement :math:`\frac{n-B}{B(n-1)}`, with replacement :math:`1/B`, Bernoulli
    :math:`\frac1B-\frac1n` (lambdified from :func:`derive_noise_covariance_coefficients`).
    """
    B, n, sampling = check_batch(batch_size_value, n_value, sampling)
    return _numeric(sampling)[0](B, n)


def mean_outer_coefficient(batch_size_value, n_value, sampling: str):
    r"""Factor :math:`b(B, n)` multiplying :math:`\bar g\bar g^\top` (non-zero only for Bernoulli)."""
    B, n, sampling = check_batch(batch_size_value, n_value, sampling)
    return _numeric(sampling)[1](B, n)


def batch_gradient_noise_variance(per_example, batch_size_value, sampling: str):
    r"""Exact variance of the mini-batch mean of scalars ``per_example`` (e.g. :math:`u\cdot g_i`).

    :math:`\sigma_u^2 = a\,s^2 + b\,\bar g^2` with :math:`s^2=\frac1n\sum(g_i-\bar g)^2`.

    >>> batch_gradient_noise_variance([1.0, -1.0, 1.0, -1.0], 2, "without_replacement")  # 2/(2*3)
    0.3333333333333333
    """
    g = np.asarray(per_example, dtype=float)
    if g.ndim != 1 or g.size < 1:
        raise ParameterError("per_example must be a non-empty 1-D array of per-example values")
    a = centred_coefficient(batch_size_value, g.size, sampling)
    b = mean_outer_coefficient(batch_size_value, g.size, sampling)
    mean = float(g.mean())
    return float(a * np.mean((g - mean) ** 2) + b * mean**2)
