"""The toy study kinds end to end on tiny files, checked against theory."""

from __future__ import annotations

import json
import textwrap

import numpy as np

from sdeeos.studies import run_study


def _run(tmp_path, text: str):
    p = tmp_path / "study.toml"
    p.write_text(textwrap.dedent(text))
    ds = run_study(p, tmp_path / "out", progress=False)
    return ds, json.loads(ds.attrs["study_summary"])


def test_sde_order_errors_match_the_exact_moment_recursion(tmp_path):
    ds, summary = _run(tmp_path, """\
        kind = "sde_order"
        [model]
        rate = 1.0
        diffusion = 0.5
        x0 = 2.0
        [grid]
        T = 1.0
        log2_dt = [-1, -2, -3]
        [run]
        n_traj = 4096
        backend = "numpy"
        [output]
        figure_formats = ["png"]
        """)
    # each measured error (Monte Carlo over 4096 paths against the exact transition on the same
    # Brownian path) equals the scheme's exact error from its linear moment recursion within 4 standard
    # errors (18 comparisons: a false alarm has probability ~1e-3)
    for k in ("strong_rms", "weak_mean", "weak_m2"):
        z = (ds[k] - ds[f"{k}_theory"]) / ds[f"{k}_stderr"]
        assert np.all(np.abs(z.values) < 4), (k, z.values)
    assert (tmp_path / "out" / "study.png").stat().st_size > 1000
    assert set(summary["fitted_orders"]) == {f"{s}_{k}" for s in ("em", "weak2")
                                             for k in ("strong_rms", "weak_mean", "weak_m2")}


def test_minimalist_bifurcation_obeys_linear_stability(tmp_path):
    ds, summary = _run(tmp_path, """\
        kind = "minimalist_bifurcation"
        [grid]
        eta_min = 0.05
        eta_max = 0.65
        n_eta = 3
        [run]
        n_traj = 16
        n_steps = 2000
        window = 200
        tail = 8
        backend = "numpy"
        [output]
        figure_formats = ["png"]
        """)
    # GD converges only to minimisers it can hold: sharpness S < 2/eta.  The minimisers of
    # (x^2 y^2 - 1)^2/4 lie on xy = 1, where the Hessian is (1/2) grad(x^2y^2) grad(x^2y^2)^T and
    # S = 2(x^2 + y^2) >= 4|xy| = 4; so for eta > 1/2 no minimiser is stable and no trajectory ends
    # on a fixed point
    for i, eta in enumerate(ds["eta"].values):
        fixed = ds["period"].values[i] == 1
        s = ds["final_sharpness"].values[i][fixed]
        assert np.all(s < 2 / eta) and np.all(s >= 4 - 1e-9), (eta, s)
        if eta > 0.5:
            assert not fixed.any()
    assert ds["period"].values[0].tolist() == [1] * 16  # eta = 0.05: 2/eta = 40 above every GF limit (~12.6)
    assert summary["n_eta"] == 3 and (tmp_path / "out" / "study.png").exists()
