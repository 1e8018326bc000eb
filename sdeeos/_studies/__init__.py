"""Built-in study kinds (each module registers its runner with `sdeeos._study.register_study_runner`).

They live in the package, not in the repository's ``studies/`` folder, so an installed sdeeos can
run any study file; ``studies/*.toml`` are the declarative inputs.
"""

from .._study import register_study_runner
from .. import toy_studies  # noqa: F401 - minimalist_bifurcation, sde_order, sde_vs_sgd
from . import gd_recovery, sharpness_gap, validity_map  # noqa: F401 - registration side effects
from . import stochastic_eos  # noqa: F401 - wires sdeeos.models.QuadraticRegression
from . import stochastic_eos_qr  # noqa: F401 - linear theory, GD/PGD and the eta x B grid


def _real_network_runner(kind: str):
    """A runner that imports torch only when a real-network study actually runs."""

    def runner(config, out_dir, *, progress=True):
        from ..torch import _studies as torch_studies

        return torch_studies.STUDY_RUNNERS[kind](config, out_dir, progress=progress)

    runner.__name__ = kind
    runner.__doc__ = f"PyTorch study {kind!r} (sdeeos.torch; needs the 'torch' extra)."
    return runner


for _kind in ("real_eos", "real_gap", "eos_sgd_vs_baselines", "regime", "batch_sharpness_anchor"):
    register_study_runner(_kind, _real_network_runner(_kind))

__all__: list[str] = []
