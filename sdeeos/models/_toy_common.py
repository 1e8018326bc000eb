r"""Pieces shared by the toy-loss models: random initial conditions on the one RNG scheme.

Initial-condition draws use the same per-trajectory streams as the steps (`sdeeos._rng`), with draw
counters counting *down* from :math:`2^{64}-1` (state variable ``k`` uses counter
:math:`2^{64}-1-k`), while step draws count up from 0, so the two never meet.  An initial state is
therefore a pure function of (seed, trajectory), like every other draw.
"""

from __future__ import annotations

import numpy as np

from .._rng import uniforms

__all__ = ["INIT_COUNTER_TOP", "initial_uniforms", "apply_initial_spread"]

#: draw counter of the first initial-condition uniform; later ones count down
INIT_COUNTER_TOP = 2**64 - 1


def initial_uniforms(run, k: int, rng: str = "splitmix") -> np.ndarray:
    """The ``k``-th initial-condition uniform of every trajectory of ``run`` (streams of family ``rng``), in (0, 1)."""
    return uniforms(run.keys, run.gammas, INIT_COUNTER_TOP - k, rng)


def apply_initial_spread(run, spreads, rng: str = "splitmix") -> None:
    r"""Replace state ``k`` by :math:`s_k + w_k(2U_k-1)` (uniform on :math:`[s_k-w_k, s_k+w_k]`) where ``spreads[k] = w_k > 0``."""
    for k, w in enumerate(spreads):
        if w > 0:
            run.state[k] = run.state[k] + w * (2.0 * initial_uniforms(run, k, rng) - 1.0)
