"""`sdeeos.engines._codegen.code_names`: any SymPy symbol name runs on every engine, with the bits of the
model's own names."""

import re

import numpy as np
import pytest
import sympy as sp

import sdeeos
from sdeeos.engines._codegen import code_names, print_numpy, print_python, print_python32
from sdeeos.engines._cuda_template import print_cuda
from sdeeos.models import (CubicTaylor, CubicTaylorSME, Minimalist, MinimalistSME, MultiDirection, OrnsteinUhlenbeck,
                           SelfStabilization, SelfStabilizationSME, SymbolicStep)

BUILT_IN = [
    SelfStabilization(eta=0.01, alpha=1.0, beta=100.0, sigma=2.0),
    Minimalist(eta=0.05, sigma=0.1),
    CubicTaylor(eta=0.01, alpha=1.0, beta=100.0, d=3, gap=50.0, coupling=0.4, loss_seed=2, sigma=3.0),
    MultiDirection(eta=0.01, alpha="1,0.5", sigma="2,1", coupling="100,20;20,80"),
    OrnsteinUhlenbeck(rate=1.0, diffusion=1.0, dt=0.01),
    MinimalistSME(eta=0.05, sigma=0.1, dt=0.01),
    CubicTaylorSME(eta=0.01, alpha=1.0, beta=100.0, d=3, sigma=1.0, dt=0.01),
    SelfStabilizationSME(eta=0.01, alpha=1.0, beta=100.0, sigma=1.0, dt=0.001),
]
PRINTERS = {"python": print_python, "python32": print_python32, "numpy": print_numpy,
            "cuda64": lambda s: print_cuda(s, "float64"), "cuda32": lambda s: print_cuda(s, "float32")}


def _symbolic_steps():
    for model in BUILT_IN:
        for method in model.methods:
            step = model.step(method)
            if isinstance(step, SymbolicStep):
                yield pytest.param(step, id=f"{model.name}-{method}")


@pytest.mark.parametrize("step", list(_symbolic_steps()))
def test_code_names_print_the_same_operations_in_the_same_order(step):
    """SymPy orders sums and products by symbol name: renamed by rank, every printer gives the code of the
    model's own names, token for token (so the engines' bits do not change)."""
    coded = code_names(step)
    back = {c.name: s.name for c, s in zip(coded.state + coded.params + coded.noise, step.state + step.params + step.noise)}
    assert all(name.isidentifier() and name.isascii() for name in back)
    token = re.compile(r"\b[Vv]\d+_\w*")
    for printer in PRINTERS.values():
        want, got = printer(step), printer(coded)
        assert [token.sub(lambda m: back[m.group(0)], code) for code in got.update] == list(want.update)
        assert [token.sub(lambda m: back[m.group(0)], code) for code in got.observables] == list(want.observables)
        assert [(n, token.sub(lambda m: back[m.group(0)], c)) for n, c in got.update_temps] == list(want.update_temps)
        assert [(n, token.sub(lambda m: back[m.group(0)], c)) for n, c in got.obs_temps] == list(want.obs_temps)


class _AR1(sdeeos.EnsembleModel):
    """x <- a x + s z under the symbol names ``names`` (state, two parameters, noise)."""

    methods, labels = ("noisy",), {}

    def __init__(self, names):
        self.name = "ar1"
        self.names = names

    def parameters(self):
        return {self.names[1]: 0.9, self.names[2]: 0.5}

    def initial_state(self):
        return {self.names[0]: 0.0}

    def dtypes(self, method):
        return ("float64", "float32")

    def rngs(self, method):
        return ("splitmix", "philox")

    def step(self, method):
        x, a, s, z = sp.symbols(self.names)
        return SymbolicStep(state=(x,), params=(a, s), noise=(z,), update=(a * x + s * z,), observables={"x_sq": x**2})


# the Numba kernel's own locals (m: lanes in the block, t: the step, b0: a partial sum), Python and C
# keywords, LaTeX subscripts and Greek letters (the CUDA source is run with such names in
# tests/engines/test_cuda_source_on_cpu.py)
NAMES = {"kernel's own": "t m b0 z", "keywords": "x lambda double z", "latex": "x_{1} a_{1} s z", "greek": "x α σ z"}


def test_any_symbol_name_runs_on_numpy_and_numba_with_the_same_bits():
    # before code_names: a parameter `m` gave NaN on Numba (the kernel's own m replaced it), `lambda` and
    # `x_{1}` a SyntaxError on both engines.  The update's sum and products have two terms each, so any
    # order of the names gives the same bits; Philox: the engines' tails agree bit for bit too
    def x_sq(names, backend):
        ds = sdeeos.simulate(_AR1(names.split()), n_traj=64, n_steps=40, burn_in=10, seed=3, backend=backend,
                             rng="philox", progress=False)
        return ds.x_sq_time_mean.values

    want = x_sq("x a s z", "numpy")
    assert np.all(np.isfinite(want))
    for label, names in NAMES.items():
        np.testing.assert_array_equal(x_sq(names, "numpy"), want, err_msg=label)
    # each name set is a Numba kernel of its own (a compile of seconds): two of them
    np.testing.assert_array_equal(x_sq(NAMES["kernel's own"], "numba"), want)
    np.testing.assert_array_equal(x_sq(NAMES["keywords"], "numba"), want)
