"""Shared fixtures: tiny float64 networks whose exact Hessians are cheap.

Tolerances.  In float64 (unit round-off u = 1.1e-16) a Hessian-vector product and the product of the
exact Hessian (``torch.autograd.functional.hessian``) with the same vector are two orderings of sums
of O(P * n) terms of size at most ||H|| ||v||, so they agree to a few hundred u * ||H||_F * ||v|| for
the P ~ 50 parameter, n ~ 10 example nets used here.  ``HESS_RTOL = 1e-10`` leaves a margin of about
10^3 over that estimate while still failing on any real error (a wrong factor, a missing term, float32
anywhere), which would show up at 1e-7 or worse.
"""

from __future__ import annotations

import importlib.util

import pytest


def _real_torch_installed() -> bool:
    # find_spec, not import: with tests/ on sys.path this very folder would import as a namespace
    # package called "torch" (origin None) when PyTorch is missing
    spec = importlib.util.find_spec("torch")
    return spec is not None and spec.origin not in (None, "namespace")


if not _real_torch_installed():
    collect_ignore_glob = ["test_*.py"]  # PyTorch is an optional extra: nothing here runs without it
    torch = None
else:
    import torch

HESS_RTOL = 1e-10


def pytest_configure(config):
    # torch's own forward-mode AD decompositions call the deprecated torch.jit.script on first use
    config.addinivalue_line(
        "filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _single_thread():
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_problem(model_name="mlp-tanh", loss="mse", n=9, seed=0, input_shape=(5,), n_classes=3,
                 width=4, channels=2):
    """A tiny float64 network, data and its flat parameters: ``(flat, x, targets, labels, theta)``."""
    from sdeeos.torch import FlatParams, build_model

    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + tuple(input_shape), generator=g, dtype=torch.float64)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    targets = (torch.nn.functional.one_hot(labels, n_classes).to(torch.float64)
               if loss == "mse" else labels)
    model = build_model(model_name, tuple(input_shape), n_classes, width=width, depth=2,
                        channels=channels, seed=seed, dtype=torch.float64)
    flat = FlatParams(model)
    theta = flat.flat()
    # move away from the symmetric initial point so that eigenvalues are generic
    theta = theta + 0.3 * torch.randn(theta.shape, generator=g, dtype=torch.float64)
    return flat, x, targets, labels, theta


def exact_hessian(fn, theta):
    return torch.autograd.functional.hessian(fn, theta.detach())


@pytest.fixture
def tiny():
    """The :func:`tiny_problem` factory."""
    return tiny_problem


@pytest.fixture
def hessian_of():
    """The exact-Hessian helper."""
    return exact_hessian
