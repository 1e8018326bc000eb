"""Property: any CLI or API input either runs (tiny sizes) or gives one line naming the parameter.

Hypothesis draws every option of ``sdeeos simulate`` and every argument of `simulate` / `sweep`
from valid values, edge values and junk (NaN, inf, negative, huge, wrong types, text).  The only
outcomes allowed are a finished run or exit status 2 / an `SdeeosError` with a one-line message
that names one of the parameters given; never a traceback.
"""

from __future__ import annotations

import math

import pytest
import xarray as xr

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sdeeos import SelfStabilization, simulate  # noqa: E402
from sdeeos._cli import main  # noqa: E402
from sdeeos._errors import SdeeosError  # noqa: E402
from sdeeos.sweeps import sweep  # noqa: E402

REAL_TEXT = st.sampled_from(["0.01", "1", "100", "-1", "0", "nan", "inf", "-inf", "1e400", "1e-320", "abc", "",
                             "0x10", "1e300"])
INT_TEXT = st.sampled_from(["-1", "0", "1", "3", "64", "1000000000000", "18446744073709551615",
                            "18446744073709551616", "-18446744073709551616", "2.5", "abc", ""])
OPTIONS = {
    "--eta": REAL_TEXT, "--alpha": REAL_TEXT, "--beta": REAL_TEXT, "--sigma": REAL_TEXT,
    "--n-traj": st.sampled_from(["-1", "0", "1", "5", "1000000000000", "1.5", "x"]),
    "--steps": st.sampled_from(["-5", "0", "1", "64", "200", "x"]),
    "--burn-in": INT_TEXT, "--seed": INT_TEXT, "--record-every": INT_TEXT,
    "--threads": st.sampled_from(["0", "1", "2", "100000", "-3", "x"]),
    "--backend": st.sampled_from(["numba", "numpy", "cupyy", ""]),
    "--method": st.sampled_from(["gd", "sgd", "adam", ""]),
}
NAMES = ("eta", "alpha", "beta", "sigma", "n_traj", "n-traj", "steps", "n_steps", "burn_in", "burn-in", "seed",
         "record_every", "record-every", "threads", "n_threads", "backend", "method", "memory")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_error_line(err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert any(n in lines[0] for n in NAMES), lines[0]


CLI_OPTIONS = st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), max_size=len(OPTIONS)).flatmap(
    lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys}))


@SETTINGS
@given(options=CLI_OPTIONS)
@example(options={"--sigma": "1e300"})  # found by Hypothesis: the closure-validity note overflowed after the run
def test_cli_simulate_runs_or_names_the_parameter(options, capsys):
    options = {"--eta": "0.01", "--alpha": "1", "--beta": "100", **options}
    argv = ["simulate", "self-stabilization", "--no-progress", "--json"]
    for k, v in options.items():
        argv += [f"{k}={v}"]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    if rc == 0:
        assert out.strip().startswith("{")
    else:
        assert rc == 2, err
        _check_error_line(err)


ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                st.sampled_from(["3", "numpy", "numba", "", "gd"]), st.just([1]))


@SETTINGS
@given(eta=ANY, sigma=ANY, n_traj=st.one_of(ANY, st.integers(1, 6)), n_steps=st.one_of(ANY, st.integers(1, 80)),
       burn_in=ANY, seed=ANY, record_every=ANY, backend=st.one_of(st.sampled_from(["numba", "numpy"]), ANY),
       n_threads=ANY)
def test_api_simulate_runs_or_names_the_parameter(eta, sigma, n_traj, n_steps, burn_in, seed, record_every,
                                                  backend, n_threads):
    if isinstance(n_steps, int) and not isinstance(n_steps, bool) and n_steps > 10_000:
        n_steps = -n_steps  # huge valid lengths would only be slow
    try:
        model = SelfStabilization(eta=eta, alpha=1.0, beta=100.0, sigma=sigma)
        ds = simulate(model, n_traj=n_traj, n_steps=n_steps, burn_in=burn_in, seed=seed,
                      record_every=record_every, backend=backend, n_threads=n_threads, progress=False)
    except SdeeosError as exc:
        _check_error_line(str(exc))
        return
    assert isinstance(ds, xr.Dataset)
    assert int(ds.attrs["n_diverged"]) + int(ds["diverged"].size - ds["diverged"].sum()) == ds["diverged"].size


GRID_VALUES = st.one_of(st.lists(st.sampled_from([0.01, 0.02, -1.0, math.nan, math.inf, 0.0]), max_size=3),
                        st.just("0.01"), st.just(0.01), st.none())


@SETTINGS
@given(eta=GRID_VALUES, sigma=GRID_VALUES, n_workers=st.one_of(st.none(), st.integers(-1, 2)),
       store=st.sampled_from([None, "x.txt", "s.nc", "s.zarr"]), extra=st.sampled_from([{}, {"bogus": [1]}]))
def test_api_sweep_runs_or_names_the_parameter(eta, sigma, n_workers, store, extra, tmp_path_factory):
    grid = {k: v for k, v in {"eta": eta, "sigma": sigma, **extra}.items() if v is not None}
    folder = tmp_path_factory.mktemp("sweep")
    try:
        ds = sweep(SelfStabilization, grid, params={"alpha": 1.0, "beta": 100.0, **({} if eta is not None else
                                                                                    {"eta": 0.01})},
                   n_traj=3, n_steps=64, scheduler="serial", n_workers=n_workers, progress=False,
                   store=None if store is None else folder / store)
    except SdeeosError as exc:
        text = str(exc)
        assert "\n" not in text and text
        assert any(n in text for n in ("eta", "sigma", "grid", "bogus", "n_workers", "store", "params")), text
        return
    assert bool(ds["point_done"].all())
