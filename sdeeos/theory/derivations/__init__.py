r"""Registry of the runnable derivations (``sdeeos derive``, ``python derivations/NAME.py``).

Each derivation is a module of this package with ``TITLE`` and ``derive(d: Derivation)``: it
prints its steps (plain text or LaTeX) and checks its identities symbolically, or numerically
where symbolic checking is out of reach.  :func:`run` returns the finished
:class:`~sdeeos.theory._derivation.Derivation`; :func:`main` is the command-line entry point
(exit status 0 when every check passes, 1 otherwise, 2 for an unknown name).

>>> "gd_quadratic" in names()
True
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import TextIO

from ..._errors import ParameterError
from .._derivation import CheckRecord, Derivation

__all__ = ["REGISTRY", "names", "title", "run", "run_all", "main", "unknown_name_error"]

# name -> one-line title (the module sdeeos.theory.derivations.<name> holds the derivation)
REGISTRY: dict[str, str] = {
    "gd_quadratic": "GD linear stability on a quadratic: eta*lambda < 2",
    "momentum_thresholds": "Heavy-ball and Nesterov stability thresholds on a quadratic",
    "reduced_model_from_cubic": "The reduced self-stabilization map from a cubic Taylor model of the loss",
    "stochastic_gap": "Stochastic self-stabilization: <x^2> = 2 alpha/beta, exact gap identity, closure gap",
    "gap_beyond_closure": "Beyond the closure: slow-variable fluctuations and the corrected gap",
    "multi_direction": "k coupled edge directions: G E[x^2] = 2 alpha, weighted gap identity, closure, beta_eff",
    "batch_noise_scaling": "Mini-batch noise vs batch size: with/without replacement, Bernoulli",
    "mean_square_1d": "1-D SGD mean-square stability with multiplicative batch noise",
    "noise_kernel": "Linear regression under mini-batch SGD: exact second moments and the noise kernel K",
    "sde_ou": "SDE view of the 1-D quadratic: SME, Fokker-Planck, discrete vs continuous variance",
    "sde_reduced_model": "SDE / Fokker-Planck form of the slow-fast reduced model",
    "corrected_boundary": "The proposal's 'corrected boundary' 2 + c sqrt(eta sigma^2) vs what the models predict",
    "step_size_edges": "Step-size edges: curvature, batch sharpness, and the noise-kernel bound K_up = 1",
}


def names() -> list[str]:
    """Names of every derivation, in the registry's (reading) order."""
    return list(REGISTRY)


def unknown_name_error(name: str) -> ParameterError:
    return ParameterError(f"unknown derivation {name!r}; known derivations: {', '.join(REGISTRY)}")


def title(name: str) -> str:
    if name not in REGISTRY:
        raise unknown_name_error(name)
    return REGISTRY[name]


def run(name: str, *, latex: bool = False, stream: TextIO | None = None) -> Derivation:
    """Run one derivation; an exception inside it is recorded as a failed check (and printed)."""
    if name not in REGISTRY:
        raise unknown_name_error(name)
    module = importlib.import_module(f"{__name__}.{name}")
    d = Derivation(name, REGISTRY[name], stream=stream, latex=latex)
    d.header()
    try:
        module.derive(d)
    except BrokenPipeError:
        raise
    except Exception as exc:  # a crash is a failure of the derivation, reported like one
        d.checks.append(CheckRecord("derivation ran to completion", False, f"{type(exc).__name__}: {exc}"))
        if stream is not None:
            stream.write(traceback.format_exc())
    if stream is not None:
        stream.write(("\n" if latex else "") + d.summary() + "\n\n")
    return d


def run_all(*, latex: bool = False, stream: TextIO | None = None) -> list[Derivation]:
    return [run(n, latex=latex, stream=stream) for n in REGISTRY]


def list_text() -> str:
    width = max(map(len, REGISTRY))
    return "\n".join(f"  {n:<{width}}  {t}" for n, t in REGISTRY.items())


def main(name: str | None = None, argv=None) -> int:
    """Command-line entry for ``python derivations/NAME.py [--latex]`` (``name`` fixed) or a generic runner."""
    parser = argparse.ArgumentParser(
        prog=f"derivations/{name}.py" if name else "sdeeos-derive",
        description=REGISTRY.get(name, "Run SymPy derivations") if name else "Run SymPy derivations")
    if name is None:
        parser.add_argument("name", nargs="?", help="derivation to run; omit to list, 'all' to run all")
    parser.add_argument("--latex", action="store_true", help="print the steps as LaTeX (Markdown display math)")
    args = parser.parse_args(argv)
    target = name if name is not None else args.name
    if target is None:
        print("Derivations:\n" + list_text())
        return 0
    if target == "all":
        ds = run_all(latex=args.latex, stream=sys.stdout)
        return 0 if all(d.passed for d in ds) else 1
    if target not in REGISTRY:
        print(f"unknown derivation {target!r}; known derivations:\n{list_text()}", file=sys.stderr)
        return 2
    return 0 if run(target, latex=args.latex, stream=sys.stdout).passed else 1
