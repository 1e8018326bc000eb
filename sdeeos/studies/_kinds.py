"""The static table of study kinds: the registry.

A study file's ``kind`` is looked up here; the runner imports the named module only when a file of
that kind is loaded, so nothing in sdeeos imports the study modules at import time, and no import runs
from a lower layer up to them.  To add a kind: write ``sdeeos/studies/<file stem>.py`` implementing
the study-module interface (see `sdeeos.studies`) and add one row here.
"""

from __future__ import annotations

import dataclasses

__all__ = ["StudyKind", "KINDS"]


@dataclasses.dataclass(frozen=True)
class StudyKind:
    """One row of the table: the module implementing the kind, a one-line description, and the extra
    (``pip install 'sdeeos[<extra>]'``) it needs beyond the base install, if any."""

    module: str
    description: str
    extra: str | None = None


KINDS: dict[str, StudyKind] = {
    "minimalist_bifurcation": StudyKind(
        "sdeeos.studies.bifurcation", "GD on the minimalist loss: late iterates against the step size"),
    "sde_order": StudyKind(
        "sdeeos.studies.sde_order", "strong and weak orders of the SDE integrators on an OU process"),
    "sde_vs_sgd": StudyKind(
        "sdeeos.studies.sde_vs_sgd", "discrete GD/SGD against their stochastic modified equation"),
    "sharpness_gap": StudyKind(
        "sdeeos.studies.sharpness_gap", "stationary SGD sharpness gap vs batch size and step size, with the closure"),
    "gd_recovery": StudyKind(
        "sdeeos.studies.gd_recovery", "does B -> n recover full-batch GD in the reduced model?"),
    "validity_map": StudyKind(
        "sdeeos.studies.validity_map", "where the closed-form sharpness gap holds: a phase diagram"),
    "stochastic_eos": StudyKind(
        "sdeeos.studies.stochastic_eos", "quadratic regression: noise kernel and eta*lambda_max vs batch size"),
    "stochastic_eos_qr": StudyKind(
        "sdeeos.studies.stochastic_eos_qr", "quadratic regression: stochastic vs deterministic edge of stability"),
    "real_eos": StudyKind(
        "sdeeos.studies.real_eos", "full-batch GD on MNIST-1D at the edge of stability; SGD plateaus below",
        extra="torch"),
    "real_gap": StudyKind(
        "sdeeos.studies.real_gap", "measured sharpness gap of one network against 1-D (plateau alpha) and k-direction predictions",
        extra="torch"),
    "regime": StudyKind(
        "sdeeos.studies.regime", "which model explains the real-network sharpness gap, per batch size and step size",
        extra="torch"),
    "batch_sharpness_anchor": StudyKind(
        "sdeeos.studies.batch_sharpness_anchor", "does batch sharpness settle at 2/eta (Andreyev & Beneventano's regime)?",
        extra="torch"),
    "edge_regimes": StudyKind(
        "sdeeos.studies.edge_regimes", "the three edge claims on real networks, each in its regime, stationarity gated",
        extra="torch"),
    "eos_sgd_vs_baselines": StudyKind(
        "sdeeos.studies.eos_sgd_vs_baselines", "time to a target accuracy: edge-SGD and EoS-SGD vs tuned SGD, momentum, Adam, cosine",
        extra="torch"),
}
