"""A model defined in a user script (the example of docs/user_models.md, run as written) on every
backend: NumPy and Numba bit-identical and at the stationary E[x^2] = s^2/(1-a^2) within the
statistics; the CUDA source generated from it compiled and run on the CPU (`sdeeos.engines._cuda_host`)
and, where a GPU exists, on CuPy.  The engines ask the model for its step once per segment, not per
time step, and a model without ``methods`` is refused in one line."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from sdeeos import ParameterError, simulate, sweep
from sdeeos._contract import RunSpec, RunState, SymbolicStep
from sdeeos._labels import unlabelled
from sdeeos.engines import get_engine
from sdeeos.engines._cuda_host import HostDevice, find_cxx
from sdeeos.engines._cupy import CupyEngine

DOC = Path(__file__).resolve().parents[2] / "docs" / "user_models.md"


@pytest.fixture(scope="module")
def user_script(tmp_path_factory):
    """The documentation's example, written to a file and imported as a user's script would be."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    path = tmp_path_factory.mktemp("user") / "ar1_model.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("ar1_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(model, backend, **kw):
    args = dict(n_traj=2000, n_steps=400, burn_in=100, seed=1, progress=False)
    return simulate(model, backend=backend, **{**args, **kw})


def test_numpy_and_numba_agree_bit_for_bit_and_with_theory(user_script):
    model = user_script.AR1(a=0.9, s=0.5)
    a, b = _run(model, "numpy"), _run(model, "numba")
    np.testing.assert_array_equal(a.x_sq_time_mean.values, b.x_sq_time_mean.values)
    theory = 0.5**2 / (1 - 0.9**2)
    assert float(a.x_sq_stationary) == theory
    # 2000 independent trajectories; the start x0 = 0 is forgotten after 100 steps (0.9**200 ~ 1e-9)
    z = (float(a.x_sq_mean) - theory) / float(a.x_sq_mean_stderr)
    assert abs(z) < 5, z
    assert unlabelled(a) == []
    assert a.x_sq_stationary.attrs["formula"] == "s**2/(1 - a**2)"  # the model's own label, not a registry one
    assert a.x_sq_mean.attrs["long_name"].endswith("observable x_sq = x**2")  # not the registry's x_sq


def test_an_unlabelled_prediction_of_a_user_model_names_its_source_not_a_registry_formula(user_script):
    class Unlabelled(user_script.AR1):
        labels = {}

        def predictions(self, method):
            return {"x_sq_predicted": 1.0}  # a built-in model's name, with another meaning

    ds = _run(Unlabelled(), "numpy", n_traj=4, n_steps=20, burn_in=5)
    assert ds.x_sq_predicted.attrs["formula"] == "Unlabelled.predictions('noisy')"
    assert "alpha" not in ds.x_sq_predicted.attrs["formula"]


@pytest.mark.skipif(find_cxx() is None, reason="needs a C++ compiler to build the CUDA source on the CPU")
def test_the_cuda_kernel_of_a_user_model_runs_on_the_host_like_numba(user_script):
    model = user_script.AR1(a=0.8, s=1.0)
    spec = RunSpec(model=model, method="noisy", n_traj=200, n_steps=300, burn_in=50, seed=4, record_every=25)
    runs = []
    for engine in (get_engine("numba"), CupyEngine(device=HostDevice())):
        r = RunState.initial(spec)
        engine.advance(spec, r, spec.n_steps)
        runs.append(r)
    for name, x in runs[0].arrays().items():
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, getattr(runs[1], name), err_msg=name)


@pytest.mark.gpu
def test_cupy_backend_on_a_gpu(user_script):
    pytest.importorskip("cupy")
    model = user_script.AR1()
    np.testing.assert_array_equal(_run(model, "cupy").x_sq_time_mean.values, _run(model, "numba").x_sq_time_mean.values)


def test_the_numpy_engine_asks_for_the_step_once_per_segment(user_script):
    calls = []

    class Counted(user_script.AR1):
        def step(self, method):
            calls.append(method)
            return super().step(method)

    counts = []
    for n_steps in (500, 500, 5000):  # the first run also builds the labels and checks once
        calls.clear()
        _run(Counted(), "numpy", n_traj=4, n_steps=n_steps, burn_in=10)
        counts.append(len(calls))
    # before: once per time step (each a fresh SymPy build); now: a few per run, whatever n_steps
    assert 0 < counts[1] == counts[2] < 20, counts


def test_a_model_without_methods_is_refused_in_one_line(user_script):
    class NoMethods(user_script.AR1):
        methods = None

    with pytest.raises(ParameterError, match=r"^model class NoMethods must declare its update rules as a class "
                                             r"attribute, e.g. methods = \('gd', 'sgd'\); got None$"):
        simulate(NoMethods(), n_traj=2, n_steps=4, backend="numpy", progress=False)


def test_a_sweep_of_a_user_model_carries_its_labels(user_script):
    ds = sweep(user_script.AR1, {"a": [0.5, 0.8]}, params={"s": 1.0}, n_traj=8, n_steps=40, scheduler="serial",
               progress=False)
    assert unlabelled(ds) == []
    assert ds.x_sq_stationary.attrs["formula"] == "s**2/(1 - a**2)"
    assert ds.x_sq_mean.attrs["long_name"].endswith("observable x_sq = x**2")


def test_a_prediction_or_summary_named_like_a_measurement_is_refused_in_one_line(user_script, monkeypatch):
    # before: the prediction replaced the measurement in the dataset, with exit 0 (x_sq_mean = 123.0)
    class Clash(user_script.AR1):
        def predictions(self, method):
            return {"x_sq_mean": 123.0, "final_x": 7.0}

    def no_work(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(type(get_engine("numba")), "advance", no_work)
    with pytest.raises(ParameterError, match=r"^model Clash: its predictions \['final_x', 'x_sq_mean'\] have the names "
                                             r"of measured variables of the dataset and would replace them; rename them$"):
        _run(Clash(), "numba", n_traj=4, n_steps=20, burn_in=5)

    class SummaryClash(user_script.AR1):  # summaries come from the measurements: refused when they exist
        def summarize(self, method, summary):
            return {"x_sq_mean_stderr": 0.0, "x_sq_spread": 1.0}

    with pytest.raises(ParameterError, match=r"^model SummaryClash: its summaries \['x_sq_mean_stderr'\] have the names"):
        _run(SummaryClash(), "numpy", n_traj=4, n_steps=20, burn_in=5)


def test_an_observable_named_like_a_state_variable_must_be_that_variable(user_script):
    x, a, s, z = user_script.X, user_script.A, user_script.S, user_script.Z
    step = SymbolicStep(state=(x,), params=(a, s), noise=(z,), update=(a * x + s * z,), observables={"x": x})
    assert list(step.observables) == ["x"]  # the state itself: one path_x in a recorded run
    with pytest.raises(ValueError, match=r"^observable x = x\*\*2 has the name of state variable x but is not it"):
        SymbolicStep(state=(x,), params=(a, s), noise=(z,), update=(a * x + s * z,), observables={"x": x**2})
