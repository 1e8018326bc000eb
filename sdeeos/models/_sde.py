r"""SDE models: the stochastic modified equation of any symbolic model, and the OU test process.

Both are ordinary `EnsembleModel` s: the integrator (Euler–Maruyama ``"em"`` or the simplified weak
order-2 scheme ``"weak2"``, `sdeeos.theory.sde_schemes`) is applied *symbolically* to the drift and
diffusion, and the resulting map is one more `SymbolicStep`, so it runs on the same engines with the
same RNG scheme (Brownian increment :math:`\Delta W_j=\sqrt{dt}\,z_j`, draw ``step * n_noise + j``).
"""

from __future__ import annotations

import functools
import inspect
from typing import ClassVar

import numpy as np
import sympy as sp

from .._errors import ParameterError
from .._resources import check_allocation
from .._validation import check_choice, check_positive, check_real
from ..theory import sde as ou_theory
from ..theory import sde_schemes as schemes
from ._base import EnsembleModel, SymbolicStep
from ._cubic_taylor import CubicTaylor
from ._minimalist import Minimalist
from ._self_stabilization import SelfStabilization

__all__ = ["sde_step", "StochasticModifiedEquation", "sme_class", "OrnsteinUhlenbeck", "MinimalistSME",
           "CubicTaylorSME", "SelfStabilizationSME", "SDE_METHODS"]

#: integrators of every SDE model
SDE_METHODS = ("em", "weak2")
DT = sp.Symbol("dt", positive=True)


def sde_step(state, params, drift, diffusion, noise, method: str, observables, dt=DT) -> SymbolicStep:
    r"""The `SymbolicStep` of integrator ``method`` for :math:`dX=a\,dt+b\,dW`.

    ``noise`` are the standard-normal symbols; the first ``m`` (columns of ``diffusion``) give the
    increments :math:`\sqrt{dt}\,z_j`, any further ones are drawn but unused (to keep draw counters
    aligned with a companion method that needs them, e.g. `OrnsteinUhlenbeck` ``"exact"``).
    ``dt`` must be among ``params``.
    """
    B = sp.Matrix(diffusion) if len(diffusion) else sp.zeros(len(state), 0)
    m = B.shape[1]
    if len(noise) < m:
        raise ValueError(f"need at least {m} noise symbols, got {len(noise)}")
    dW = tuple(sp.sqrt(dt) * z for z in noise[:m])
    if method == "em":
        update = schemes.euler_maruyama(state, drift, B, dt, dW)
    elif method == "weak2":
        update = schemes.weak_order2(state, drift, B, dt, dW)
    else:
        raise ParameterError(f"method must be one of {list(SDE_METHODS)}, got {method!r}")
    return SymbolicStep(state=tuple(state), params=tuple(params), noise=tuple(noise), update=tuple(update),
                        observables=dict(observables))


_SME_STEPS: dict[tuple[str, str], SymbolicStep] = {}


def _has_kink(step: SymbolicStep) -> bool:
    return any(e.has(sp.Min, sp.Max, sp.Piecewise, sp.Abs, sp.Heaviside) for e in step.update)


class StochasticModifiedEquation(EnsembleModel):
    r"""First-order SME of a symbolic model's method, integrated by ``"em"`` or ``"weak2"``.

    For a step :math:`\theta'=\theta+A(\theta)+B(\theta)z` of ``base`` (method ``base_method``), the SME
    in time :math:`t=k\eta` is :math:`d\Theta=\frac A\eta dt+\frac B{\sqrt\eta}dW`
    (`sdeeos.theory.sde_schemes.sme_coefficients`); ``dt`` is the integrator's step in the same time
    units (``dt = eta`` is one SGD step; Euler–Maruyama with ``dt = eta`` reproduces SGD with additive
    noise exactly).  Observables, summaries and initial conditions are the base model's; the base's
    predictions (which are for the *discrete* method) are reported as ``discrete_<name>``.

    Parameters
    ----------
    base : EnsembleModel
        E.g. ``Minimalist(eta=0.05, sigma=0.1)``; its step must be affine in the noise and smooth.
    dt : float > 0
    base_method : str, optional
        The base's method whose SME is integrated (default: the base's default method).
    """

    methods: ClassVar[tuple[str, ...]] = SDE_METHODS

    def __init__(self, base: EnsembleModel, dt: float, base_method: str | None = None):
        if not isinstance(base, EnsembleModel):
            raise ParameterError(f"base must be a symbolic EnsembleModel, got {type(base).__name__}")
        self.base = base
        self.name = f"{base.name}-sme"
        self.divergence_bound = base.divergence_bound
        self.dt = check_positive("dt", dt)
        allowed = self.sme_base_methods(base)
        self.base_method = check_choice("base_method", base.default_method() if base_method is None
                                        else base_method, allowed)
        # the base's step is derived here: too large a derivation is refused before SymPy starts
        check_allocation(f"deriving the {self.base_method} step of {base!r}", base.symbolic_bytes(self.base_method),
                         hint="a smaller model (fewer parameter symbols)")
        if "eta" not in base.step(self.base_method).param_names:
            raise ParameterError("base model must have a step-size parameter 'eta' (SME time is t = k*eta)")

    @staticmethod
    def sme_base_methods(base) -> tuple[str, ...]:
        """Methods of ``base`` that have an SME: declared ``sme_methods``, else every smooth symbolic one."""
        declared = getattr(type(base), "sme_methods", None)
        if declared is not None:
            return tuple(declared)
        return tuple(m for m in base.methods if not _has_kink(base.step(m)))

    # ------------------------------------------------------------------ model interface
    def default_method(self) -> str:
        return "em"

    def parameters(self) -> dict[str, float]:
        return {**self.base.parameters(), "dt": self.dt}

    def initial_state(self) -> dict[str, float]:
        return {**self.base.initial_state(), "sme_of": self.base_method}

    def validate_run(self, method: str) -> None:
        self.base.validate_run(self.base_method)
        self.step(method)  # weak2 raises ParameterError here for non-commutative noise

    def step(self, method: str) -> SymbolicStep:
        base_step = self.base.step(self.base_method)
        key = (base_step.signature(), method)
        if key not in _SME_STEPS:
            eta = next(s for s in base_step.params if s.name == "eta")
            drift, B = schemes.sme_coefficients(base_step.state, base_step.update, base_step.noise, eta)
            _SME_STEPS[key] = sde_step(base_step.state, base_step.params + (DT,), drift, B, base_step.noise,
                                       method, base_step.observables)
        return _SME_STEPS[key]

    def symbolic_bytes(self, method: str) -> int:
        return self.base.symbolic_bytes(self.base_method)  # the SME is derived from it: at least as large

    def param_vector(self, method: str) -> np.ndarray:
        return np.append(self.base.param_vector(self.base_method), self.dt)

    def initial_vector(self, method: str) -> np.ndarray:
        return self.base.initial_vector(self.base_method)

    def new_run(self, spec):
        return self.base.new_run(spec)  # the base's initial conditions (e.g. random boxes)

    def collect(self, spec, run):
        return self.base.collect(spec, run)

    def run_notes(self, method: str) -> dict[str, object]:
        return {**self.base.run_notes(self.base_method), "sme_of": f"{self.base.name}.{self.base_method}",
                "sde_integrator": {"em": "Euler-Maruyama", "weak2": "simplified weak order-2 (Kloeden-Platen 14.2.7)"}[method],
                "time_unit": "t = k*eta (one base step = eta); dt is the integrator step in these units"}

    def predictions(self, method: str) -> dict[str, float]:
        return {f"discrete_{k}": v for k, v in self.base.predictions(self.base_method).items()}

    def summarize(self, method: str, summary: dict[str, float]) -> dict[str, float]:
        return self.base.summarize(self.base_method, summary)


def sme_class(base_cls: type[EnsembleModel], default_base_method: str = "sgd") -> type[StochasticModifiedEquation]:
    """A `StochasticModifiedEquation` subclass for ``base_cls`` whose constructor takes the base's
    parameters plus ``dt`` and ``base_method`` (so the CLI generates its options like any model)."""
    base_sig = inspect.signature(base_cls.__init__)
    params = list(base_sig.parameters.values())
    params += [
        inspect.Parameter("dt", inspect.Parameter.KEYWORD_ONLY, annotation="float"),
        inspect.Parameter("base_method", inspect.Parameter.KEYWORD_ONLY, default=default_base_method,
                          annotation="str"),
    ]
    sig = base_sig.replace(parameters=params)

    def __init__(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        kw = dict(bound.arguments)
        kw.pop("self")
        dt, base_method = kw.pop("dt"), kw.pop("base_method")
        StochasticModifiedEquation.__init__(self, base_cls(**kw), dt=dt, base_method=base_method)

    __init__.__signature__ = sig
    doc = (f"Stochastic modified equation of {base_cls.__name__} (method ``base_method``), integrated "
           f"with step ``dt``.\n\n" + inspect.cleandoc(StochasticModifiedEquation.__doc__ or ""))
    cls = type(f"{base_cls.__name__}SME", (StochasticModifiedEquation,),
               {"__init__": __init__, "__doc__": doc, "__module__": __name__,
                "name": f"{base_cls.name}-sme", "cli_help": {
                    "dt": "SDE integrator step in time units t = k*eta (required)",
                    "base_method": f"method of {base_cls.name} whose SME is integrated"}})
    return cls


MinimalistSME = sme_class(Minimalist)
CubicTaylorSME = sme_class(CubicTaylor)
SelfStabilizationSME = sme_class(SelfStabilization)


# --------------------------------------------------------------------------------------------- OU
class OrnsteinUhlenbeck(EnsembleModel):
    r"""Ornstein–Uhlenbeck process :math:`dX=-\kappa(X-\mu)\,dt+s\,dW`: the test bed of the SDE integrators.

    Methods ``"em"`` and ``"weak2"`` are the generic integrators (`sde_step`); ``"exact"`` is the
    pathwise-exact transition :math:`X'=\mu+e^{-\kappa dt}(X-\mu)+s(c_1z_0+c_2z_1)` whose
    :math:`z_0` is the integrators' Brownian increment :math:`\Delta W=\sqrt{dt}\,z_0`
    (`sdeeos.theory.sde_schemes.derive_ou_pathwise_transition`; :math:`c_1, c_2` evaluated by SymPy
    in 40-digit arithmetic).  Every method draws two normals per step, so all three run on the same
    Brownian path for the same seed: strong errors are differences of ``final_x`` between runs.

    Parameters
    ----------
    rate : float
        :math:`\kappa` (must be > 0 for ``"exact"``).
    diffusion : float >= 0
        :math:`s`.
    dt : float > 0
    long_run_mean : float
        :math:`\mu`.
    x0 : float
    """

    name: ClassVar[str] = "ou"
    methods: ClassVar[tuple[str, ...]] = ("em", "weak2", "exact")

    def __init__(self, rate: float, diffusion: float, dt: float, long_run_mean: float = 0.0, x0: float = 1.0):
        self.rate = check_real("rate", rate)
        self.diffusion = check_real("diffusion", diffusion, low=0.0)
        self.dt = check_positive("dt", dt)
        self.long_run_mean = check_real("long_run_mean", long_run_mean)
        self.x0 = check_real("x0", x0)
        if self.rate > 0:
            self._a, self._c1, self._c2 = schemes.ou_pathwise_coefficients(self.rate, self.dt)
        else:
            self._a = self._c1 = self._c2 = float("nan")

    def default_method(self) -> str:
        return "em"

    def parameters(self) -> dict[str, float]:
        return {"rate": self.rate, "diffusion": self.diffusion, "dt": self.dt, "long_run_mean": self.long_run_mean}

    def initial_state(self) -> dict[str, float]:
        return {"x": self.x0}

    def validate_run(self, method: str) -> None:
        if method == "exact" and not self.rate > 0:
            raise ParameterError(f"rate must be > 0 for method 'exact', got {self.rate!r}")

    @staticmethod
    def symbols():
        """``(x, rate, diffusion, mean, dt, a, c1, c2, z0, z1)``."""
        x = sp.Symbol("x", real=True)
        rate, diffusion, mean = sp.Symbol("rate", real=True), sp.Symbol("diffusion", nonnegative=True), \
            sp.Symbol("long_run_mean", real=True)
        a, c1, c2 = sp.symbols("ou_a ou_c1 ou_c2", real=True)
        z0, z1 = sp.symbols("z0 z1", real=True)
        return x, rate, diffusion, mean, DT, a, c1, c2, z0, z1

    def step(self, method: str) -> SymbolicStep:
        return self._step(method)  # one shared step per method (parameters are symbols)

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _step(method: str) -> SymbolicStep:
        x, rate, diffusion, mean, dt, a, c1, c2, z0, z1 = OrnsteinUhlenbeck.symbols()
        params = (rate, diffusion, mean, dt, a, c1, c2)
        observables = {"x": x, "x_sq": x**2}
        if method == "exact":
            return SymbolicStep(state=(x,), params=params, noise=(z0, z1),
                                update=(mean + a * (x - mean) + diffusion * (c1 * z0 + c2 * z1),),
                                observables=observables)
        return sde_step((x,), params, (-rate * (x - mean),), sp.Matrix([[diffusion]]), (z0, z1), method,
                        observables, dt=dt)

    def param_vector(self, method: str) -> np.ndarray:
        return np.array([self.rate, self.diffusion, self.long_run_mean, self.dt, self._a, self._c1, self._c2])

    def linear_coefficients(self, method: str) -> tuple[float, float, float]:
        """``(r, c, q)`` with the step ``x' = r x + c + q z0`` (the exact method also has ``q1 z1``)."""
        x, *_, z0, z1 = self.symbols()
        st = self.step(method)
        r, c, q = schemes.linear_scheme_coefficients(st.update[0].subs(z1, 0), x, z0)
        subs = dict(zip(st.params, self.param_vector(method)))
        return tuple(float(e.subs(subs)) for e in (r, c, q))

    def exact_transition(self) -> tuple[float, float, float, float]:
        """``(a, e, p1, p2)`` of the exact method, ``x' = a x + e + p1 z0 + p2 z1`` (for `joint_moments`)."""
        return (self._a, (1 - self._a) * self.long_run_mean, self.diffusion * self._c1, self.diffusion * self._c2)

    def predictions(self, method: str) -> dict[str, float]:
        if not self.rate > 0:
            return {}
        r, c, q = self.linear_coefficients(method)
        if method == "exact":
            q = float(np.hypot(q, self.diffusion * self._c2))  # total noise std, z0 and z1 parts
        out = {"x_var_stationary_sde": float(ou_theory.ou_stationary_variance(self.rate, self.diffusion))}
        if abs(r) < 1:
            out["x_var_stationary_scheme"] = q * q / (1 - r * r)
        return out
