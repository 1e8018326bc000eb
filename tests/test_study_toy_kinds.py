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


def test_sde_vs_sgd_sme_follows_gradient_flow_past_the_edge_where_sgd_stops(tmp_path):
    ds, summary = _run(tmp_path, """\
        kind = "sde_vs_sgd"
        [minimalist]
        eta = [0.04, 0.05]
        n_steps = 300
        dt_over_eta = 0.5
        scan_eta = 0.05
        scan_dt_over_eta = [1.0, 0.5]
        [cubic_taylor]
        n_steps = 300
        dt_over_eta = 0.5
        record_every = 50
        [run]
        n_traj = 16
        backend = "numpy"
        [output]
        figure_formats = ["png"]
        """)
    etas = ds["eta"].values
    edge = 2 / etas
    gf = ds["sharpness_gf_limit"].values  # exact: 2 sqrt((x0^2 - y0^2)^2 + 4), mean over the run's initial points
    assert np.all(gf > edge)  # the setting: gradient flow from the box sharpens past 2/eta at both step sizes
    # (a) the SME (drift -grad f, time t = k*eta, dt = eta/2) is gradient flow plus small noise: its
    # time-mean sharpness is the gradient-flow limit of the same initial points, within 4 standard errors
    # of its ensemble mean, and far above 2/eta
    for k in ("sme_additive_em", "sme_multiplicative_em", "sme_multiplicative_weak2"):
        s, se = ds[k].values, ds[f"{k}_stderr"].values
        assert np.all(ds[f"{k}_n_diverged"].values == 0), k
        assert np.all(np.abs(s - gf) < 4 * se), (k, s, gf, se)
        assert np.all(s - edge > 4 * se), (k, s, edge, se)
    # discrete SGD (additive noise) cannot hold a point with S > 2/eta: its time-mean sharpness stays at
    # the edge, below the midpoint between 2/eta and the gradient-flow limit by more than 4 standard errors
    s, se = ds["sgd_additive"].values, ds["sgd_additive_stderr"].values
    assert np.all(s + 4 * se < (edge + gf) / 2), (s, se, edge, gf)
    assert summary["minimalist_eta_where_gf_limit_exceeds_2_over_eta"] == [0.04, 0.05]
    assert summary["minimalist_eta_where_sme_additive_above_2_over_eta"] == [0.04, 0.05]
    # (b) the same runs appear in (a) and (b): identical numbers
    assert ds.attrs["scan_sgd_additive"] == float(ds["sgd_additive"].sel(eta=0.05))
    for k in ("additive_em", "multiplicative_em", "multiplicative_weak2"):
        assert float(ds[f"scan_{k}"].sel(dt_over_eta=0.5)) == float(ds[f"sme_{k}"].sel(eta=0.05)), k
    # Euler-Maruyama with dt = eta on the SME of additive SGD is additive SGD step for step (same
    # normals; only the rounding of eta*sigma vs sqrt(eta)*sqrt(dt)*sigma differs): the two time means
    # agree within 4 times the sum of their standard errors (a bound on the std of the difference for
    # any correlation), while the SME at dt = eta/2 has left 2/eta for the gradient-flow limit
    em1 = float(ds["scan_additive_em"].sel(dt_over_eta=1.0))
    se1 = float(ds["scan_additive_em_stderr"].sel(dt_over_eta=1.0))
    se_sgd = float(ds["sgd_additive_stderr"].sel(eta=0.05))
    assert abs(em1 - ds.attrs["scan_sgd_additive"]) < 4 * (se1 + se_sgd), (em1, ds.attrs["scan_sgd_additive"])
    # (c) cubic Taylor: the closure predicts a positive stationary gap 2/eta - S, and SGD settles below 2/eta
    assert ds.attrs["ct_closure_gap"] > 0
    assert ds.attrs["ct_sgd_sharpness_gap"] > 4 * ds.attrs["ct_sgd_sharpness_gap_stderr"]
    assert (tmp_path / "out" / "study.png").stat().st_size > 1000
