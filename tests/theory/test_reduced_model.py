"""The reduced map derived from the cubic model, against a NumPy GD step on an explicit cubic loss."""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from sdeeos.theory import reduced_model as rm
from sdeeos.theory import self_stabilization as ss


def _random_cubic(seed):
    """A random cubic model in the frame (u, w, e) with the frame's constraints, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    S, alpha, beta = 7.0, 0.8, 2.5
    eta = 2 / S
    H = np.zeros((3, 3))
    H[0, 0] = S
    H[1:, 1:] = (lambda a: a + a.T)(rng.normal(size=(2, 2)))
    T = np.zeros((3, 3, 3))
    for idx in itertools.combinations_with_replacement(range(3), 3):
        val = rng.normal()
        for perm in set(itertools.permutations(idx)):
            T[perm] = val
    for perm in set(itertools.permutations((0, 0, 2))):
        T[perm] = 0.0  # T_uue = 0: w is along grad S_perp
    for perm in set(itertools.permutations((0, 0, 1))):
        T[perm] = np.sqrt(beta)
    g = np.array([0.0, -alpha / np.sqrt(beta), rng.normal()])
    return dict(S=S, alpha=alpha, beta=beta, eta=eta, H=H, T=T, g=g)


def test_displacement_projections_match_numpy_gd_step():
    m = _random_cubic(11)
    grad = lambda v: m["g"] + m["H"] @ v + 0.5 * np.einsum("ijk,j,k->i", m["T"], v, v)  # noqa: E731
    grad_S = m["T"][0, 0, :]  # T[u, u, .]
    grad_S_perp = grad_S - grad_S[0] * np.array([1.0, 0, 0])
    c = -m["eta"] * (grad_S @ m["g"]) / (grad_S @ grad_S_perp)  # first-order PGD: grad S . delta = 0
    v = np.array([0.03, -0.02, 0.015])
    v_next = v - m["eta"] * (grad(v) - m["g"]) + c * grad_S_perp
    red = rm.derive_reduced_map()
    (x, p, q), coeffs = rm.frame_symbols()
    names = {"T_" + "".join(i): m["T"][tuple("uwe".index(ch) for ch in i)]
             for i in itertools.combinations_with_replacement("uwe", 3)}
    subs = {rm.eta: m["eta"], rm.alpha: m["alpha"], rm.beta: m["beta"],
            coeffs["h_ww"]: m["H"][1, 1], coeffs["h_we"]: m["H"][1, 2], coeffs["h_ee"]: m["H"][2, 2],
            x: v[0], rm.y: np.sqrt(m["beta"]) * v[1], q: v[2]}
    subs.update({coeffs[k]: val for k, val in names.items() if isinstance(coeffs[k], sp.Symbol)})
    x_next = float(red["x_next"].subs(subs))
    y_next = float(red["y_next"].subs(subs))
    assert abs(x_next - v_next[0]) < 1e-13
    assert abs(y_next - grad_S_perp @ v_next) < 1e-13


def test_simulated_model_is_the_derived_map():
    assert sp.srepr(ss.reduced_update(noisy=False)) == sp.srepr(rm.reduced_map())
    x, y, z, eta, alpha, beta, sigma = ss.symbols()
    assert sp.expand(ss.reduced_update(noisy=True)[0] - rm.reduced_map()[0] - eta * sigma * z) == 0


def test_pgd_shift():
    assert sp.simplify(rm.derive_pgd_shift() - rm.eta * rm.alpha / rm.beta) == 0
