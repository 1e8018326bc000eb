"""Parameter maps: swept quantities that are not model parameters but set one (batch size -> noise)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from .._errors import ParameterError
from .._validation import check_positive
from ..theory import batch_noise

__all__ = ["ParameterMap", "PARAMETER_MAPS", "MAP_INPUTS"]


@dataclasses.dataclass(frozen=True)
class ParameterMap:
    """A swept quantity that is not a model parameter but sets one (e.g. batch size -> noise)."""

    name: str
    target: str
    inputs: tuple[str, ...]          # extra parameters it consumes (required unless in ``defaults``)
    defaults: Mapping[str, Any]
    needs: tuple[str, ...]           # model parameters it reads (not consumed)
    doc: str
    fn: Callable[..., float]

    def apply(self, values: dict, model_params: Sequence[str]) -> None:
        if self.target not in model_params:
            raise ParameterError(f"{self.name} sets the model parameter {self.target!r}, which this model "
                                 f"does not have (its parameters: {', '.join(model_params)})")
        if self.target in values:
            raise ParameterError(f"give either {self.name} or {self.target}, not both "
                                 f"({self.name} sets {self.target}: {self.doc})")
        args = {}
        for k in self.inputs:
            if k in values:
                args[k] = values.pop(k)
            elif k in self.defaults:
                args[k] = self.defaults[k]
            else:
                raise ParameterError(f"{self.name} needs the parameter {k!r} ({self.doc})")
        for k in self.needs:
            if k not in values:
                raise ParameterError(f"{self.name} needs the model parameter {k!r} ({self.doc})")
            args[k] = values[k]
        values[self.target] = float(self.fn(values.pop(self.name), **args))


def _sigma_from_batch(batch_size, *, n_data, sigma_1, sampling):
    coef = float(batch_noise.centred_coefficient(batch_size, n_data, sampling))
    return check_positive("sigma_1", sigma_1) * math.sqrt(max(coef, 0.0))


def _sigma_from_validity_ratio(ratio, *, alpha, beta):
    r = check_positive("closure_validity_ratio", ratio)
    return 2.0 * alpha * math.sqrt(r / beta)


def _eta_from_eta_sq_alpha(a, *, alpha):
    return math.sqrt(check_positive("eta_sq_alpha", a) / alpha)


#: name -> map.  ``batch_size`` uses the exact mini-batch noise factor of `sdeeos.theory.batch_noise`
#: (docs/theory.md#batch-noise): ``sigma**2 = sigma_1**2 * a(B, n)``, ``a = (n-B)/(B(n-1))`` without replacement.
PARAMETER_MAPS: dict[str, ParameterMap] = {
    m.name: m for m in (
        ParameterMap(
            name="batch_size", target="sigma", inputs=("n_data", "sigma_1", "sampling"),
            defaults={"sampling": "without_replacement"}, needs=(), fn=_sigma_from_batch,
            doc="sigma**2 = sigma_1**2 * a(batch_size, n_data) with the exact mini-batch factor a of "
                "sdeeos.theory.batch_noise; a = (n-B)/(B(n-1)) for sampling without replacement"),
        ParameterMap(
            name="closure_validity_ratio", target="sigma", inputs=(), defaults={}, needs=("alpha", "beta"),
            fn=_sigma_from_validity_ratio,
            doc="sigma**2 = ratio * 4 alpha**2 / beta: the closure holds for ratio >> 1 (docs/theory.md#closure-validity)"),
        ParameterMap(
            name="eta_sq_alpha", target="eta", inputs=(), defaults={}, needs=("alpha",), fn=_eta_from_eta_sq_alpha,
            doc="eta = sqrt(eta_sq_alpha / alpha); eta**2 alpha is the per-step sharpening of eta*S, with "
                "closure_validity_ratio one of the reduced model's two dimensionless parameters"),
    )
}
MAP_INPUTS = {k for m in PARAMETER_MAPS.values() for k in m.inputs}
