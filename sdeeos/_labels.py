r"""Labels of dataset variables: one registry of name -> long name, units and, for a prediction, the
formula it comes from (CF conventions: ``long_name``, ``units``; ``formula`` is ours).

Every dataset sdeeos writes passes through `label_dataset`, which fills in what a variable lacks and
never overwrites a label set where the variable is made.  Names built from a base name are labelled
from the base: ``x_sq_mean`` is the ensemble mean of the time mean of ``x_sq``, ``final_x`` is ``x`` at
the last step, ``sharpness_gap2`` is ``sharpness_gap`` of direction 2, and so on (`describe`).

>>> describe("sharpness_gap_stderr").long_name
'standard error of: sharpness gap 2/eta - <S>'
>>> describe("sharpness_mean").units
'1/step size'
>>> describe("x_sq_meansq", {"x_sq": Label("x_sq = x**2")}).long_name
'ensemble mean of the time mean after burn-in of the square of: x_sq = x**2'
>>> describe("no_such_thing") is None
True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import xarray as xr

__all__ = ["Label", "LABELS", "as_label", "describe", "label_dataset", "unlabelled", "step_labels", "model_labels",
           "is_prediction"]


@dataclasses.dataclass(frozen=True)
class Label:
    """``long_name``, ``units`` (None: dimensionless or a count) and ``formula`` (predictions)."""

    long_name: str
    units: str | None = None
    formula: str | None = None

    def attrs(self) -> dict[str, str]:
        out = {"long_name": self.long_name}
        if self.units:
            out["units"] = self.units
        if self.formula:
            out["formula"] = self.formula
        return out


_S = "1/step size"  # sharpness and its gaps: the edge is 2/eta
_REDUCED = "sdeeos.theory.self_stabilization"
_MULTI = "sdeeos.theory.multi_direction"
_CLOSURE = (f"{_REDUCED}.gap_exact: (1 - sqrt(1 - eta**2 beta sigma**2/(2 alpha)))/eta, the stationary "
            f"closure of the reduced model (k directions: {_MULTI}.gap_exact(eta, alpha, sigma, G), per direction)")


def _L(long_name, units=None, formula=None) -> Label:
    return Label(long_name, units, formula)


#: base names; derived names (see `describe`) need no entry of their own
LABELS: dict[str, Label] = {
    # ------------------------------------------------------------------ ensemble runs (simulate, sweeps)
    "traj": _L("trajectory index"),
    "param": _L("index of a model parameter (theta component)"),
    "step": _L("step index", "step"),
    "path_traj": _L("trajectory index of a kept sample path"),
    "sharpness": _L("sharpness (top Hessian eigenvalue)", _S),
    "sharpness_u": _L("curvature along the fixed edge direction u (u^T H u)", _S),
    "loss": _L("training loss"),
    # the reduced model's coordinates (SelfStabilization, MultiDirection, CubicTaylor's projections)
    "x": _L("oscillating coordinate x (along the top Hessian eigenvector)"),
    "y": _L("sharpness displacement y = S - 2/eta", _S),
    "x_sq": _L("x**2"),
    "y_x": _L("y*x (its mean square is E[x**2 y**2], which enters the exact gap identity)", _S),
    "y_x_sq": _L("y*x**2", _S),
    "r_G_r": _L("sum_ij G_ij x_i**2 x_j**2 (the weighted gap identity)"),
    "grad_norm_sq": _L("squared gradient norm |grad L|**2"),
    "n_diverged": _L("number of trajectories that left the divergence bound"),
    "n_alive": _L("number of trajectories that did not diverge"),
    "n_x_underflow": _L("number of trajectories whose oscillating coordinate x underflowed to 0"),
    "diverged": _L("1 if the run left the divergence bound, else 0"),
    "sharpness_gap": _L("sharpness gap 2/eta - <S>", _S),
    "sharpness_gap_exact_eigenvalue": _L("sharpness gap 2/eta - <S> of the exact top Hessian eigenvalue", _S),
    "sharpness_gap_from_moments": _L(
        "sharpness gap from the exact stationary identity at the measured moments E[x**2 y**2], E[x**4]", _S,
        f"{_REDUCED}.gap_from_moments(eta, alpha, beta, sigma, <(y x)**2>, <x**4>)"),
    "x_sq_predicted": _L("stationary E[x**2] of the closure", None, f"{_REDUCED}.x_sq_stationary: 2 alpha/beta (k directions: {_MULTI}.x_sq_stationary(alpha, G))"),
    "sharpness_gap_predicted_leading": _L("leading-order predicted sharpness gap", _S,
                                          f"{_REDUCED}.gap_leading: eta beta sigma**2/(4 alpha) (k directions: "
                                          f"{_MULTI}.gap_leading(eta, alpha, sigma, G))"),
    "sharpness_gap_predicted_exact": _L("predicted sharpness gap of the closure (exact solution; 0 for PGD)", _S,
                                        _CLOSURE),
    "sharpness_gap_predicted_corrected": _L(
        "predicted sharpness gap with the first slow-fluctuation correction", _S,
        f"{_REDUCED}.gap_corrected: (1 - sqrt(1 - eta**2 beta sigma**2/(2 alpha) - 3 eta**2 alpha))/eta"),
    "sharpness_gap_predicted_closure_top": _L(
        "predicted gap of the top eigenvalue in the k-direction closure (smallest per-direction gap)", _S,
        "min_j sdeeos.theory.multi_direction.gap_exact(eta, alpha, sigma, G)_j"),
    "beta_eff": _L("effective self-stabilization strength of a direction in the k-direction closure", None,
                   "sdeeos.theory.multi_direction.beta_eff(alpha, G)"),
    "weighted_gap": _L("gap weighted by the predicted stationary E[x_j**2]: sum_j m_j (2/eta - <S_j>)", _S),
    "weighted_gap_from_moments": _L("weighted gap from the exact identity at the measured moments", _S,
                                    "sdeeos.theory.multi_direction.weighted_gap_rhs"),
    "sharpness_eos": _L("edge of stability 2/eta", _S, "2/eta"),
    "sharpness_gf_limit": _L("sharpness at the gradient-flow limit point from (x0, y0)", _S,
                             "sdeeos.theory.minimalist.gf_limit_sharpness(x0, y0)"),
    "sharpness_mean_square_bound": _L("mean-square stability bound on the sharpness (multiplicative noise)", _S,
                                      "sdeeos.theory.minimalist.mean_square_sharpness_bound(eta, sigma)"),
    "x_var_stationary_sde": _L("stationary variance of the OU process", None,
                               "sdeeos.theory.sde.ou_stationary_variance: diffusion**2/(2 rate)"),
    "x_var_stationary_scheme": _L("stationary variance of the discrete scheme x' = r x + c + q z", None,
                                  "q**2/(1 - r**2)"),
    "closure_validity_ratio": _L("closure validity ratio sigma**2 beta/(4 alpha**2) (>> 1: closure valid)", None,
                                 "sigma**2 beta/(4 alpha**2)"),
    # ------------------------------------------------------------------ sweep bookkeeping
    "wall_time_s": _L("wall-clock time of this point", "s"),
    "sharpness_drift": _L("late-half minus early-half time mean of the sharpness (stationarity check)", _S),
    "point_done": _L("1 once this point's results are stored"),
    "point_checksum": _L("checksum of this point's stored results (0: none)"),
    "stationary_state_exists": _L("1 if the closure has a stationary solution, else 0"),
    "method": _L("update rule"),
    "sigma": _L("gradient-noise standard deviation sigma of the reduced model"),
    "sigma_sq": _L("gradient-noise variance sigma**2 of the reduced model"),
    "eta": _L("step size eta", "step size"),
    "alpha": _L("progressive-sharpening rate alpha"),
    "beta": _L("self-stabilization strength beta"),
    "batch_size": _L("batch size B ('full': full batch, GD)"),
    "seed": _L("random seed"),
    "x0": _L("initial oscillating coordinate x0"),
    "n_steps": _L("number of steps", "step"),
    "dt": _L("integration time step dt"),
    "scheme": _L("SDE integration scheme"),
    # ------------------------------------------------------------------ sde_order
    "strong_rms": _L("strong error: root mean square of X_N - X(T) on the same Brownian path"),
    "weak_mean": _L("weak error of the mean: E[X_N] - E[X(T)]"),
    "weak_m2": _L("weak error of the second moment: E[X_N**2] - E[X(T)**2]"),
    "strong_rms_theory": _L("exact strong error of the linear scheme", None,
                            "sqrt of the mean square error from the joint moment recursion "
                            "(sdeeos.theory.sde_schemes)"),
    "weak_mean_theory": _L("exact weak error of the mean of the linear scheme", None,
                           "mean recursion of the scheme minus the exact mean (sdeeos.theory.sde_schemes)"),
    "weak_m2_theory": _L("exact weak error of the second moment of the linear scheme", None,
                         "second-moment recursion minus the exact one (sdeeos.theory.sde_schemes)"),
    # ------------------------------------------------------------------ training (sdeeos train, real networks)
    "train_loss": _L("training loss"),
    "train_accuracy": _L("training accuracy (fraction correct)"),
    "test_loss": _L("test loss"),
    "test_accuracy": _L("test accuracy (fraction correct)"),
    "lr": _L("step size", "step size"),
    "elapsed_train_s": _L("training time so far, without the sharpness tracking", "s"),
    "sharpness_step": _L("step at which the sharpness was measured", "step"),
    "sharpness_n_hvp": _L("Hessian-vector products used by the sharpness measurement"),
    "sharpness_residual": _L("residual |H v - lambda v| of the measured top eigenpair", _S),
    "plateau_sharpness": _L("time mean of the sharpness on the plateau", _S),
    "tracking_overhead": _L("sharpness tracking time over training time"),
    "time_train_s": _L("training time", "s"),
    "time_tracking_s": _L("sharpness tracking time", "s"),
    "learning_rate": _L("step size eta_t", "step size"),
    # ------------------------------------------------------------------ quadratic regression (stochastic_eos*)
    "ntk_max_eigenvalue": _L("largest eigenvalue of the NTK J J^T/n (Gauss-Newton sharpness)", _S),
    "ntk_trace": _L("trace of the NTK J J^T/n", _S),
    "noise_kernel_norm": _L("noise kernel norm K of the closure at the batch size and sampling (NaN off-domain)",
                            None, "sdeeos.theory.mean_square.noise_kernel_norm(eta, NTK eigenvalues, B, n, sampling)"),
    "noise_kernel_norm_exact": _L("exact noise kernel norm lambda_max of the linearised second-moment operator",
                                  None, "sdeeos.theory.mean_square.noise_kernel_norm_exact(eta, J J^T/n, B, sampling)"),
    "grad_norm": _L("norm of the full-batch gradient"),
    "eta_sharpness": _L("eta * sharpness (2 at the edge of stability)"),
    "sharpness_predicted": _L("sharpness of the linear model (constant): largest NTK eigenvalue", _S,
                              "lambda_max(J0 J0^T/n)"),
    "ntk_trace_predicted": _L("NTK trace of the linear model (constant)", _S, "trace(J0 J0^T/n)"),
    "noise_kernel_norm_predicted": _L("closure noise kernel norm K of the linear model", None,
                                      "sdeeos.theory.mean_square.noise_kernel_norm(eta, eig(J0 J0^T/n), B, n, sampling)"),
    "noise_kernel_norm_exact_predicted": _L(
        "exact noise kernel norm of the linear model", None,
        "sdeeos.theory.mean_square.noise_kernel_norm_exact(eta, J0 J0^T/n, B, sampling)"),
    "eta_critical_exact": _L("critical step size of the exact second-moment recursion", "step size",
                             "sdeeos.theory.mean_square.critical_learning_rate(J0 J0^T/n, B, sampling)"),
    "ms_spectral_radius_exact": _L("spectral radius of the exact second-moment recursion", None,
                                   "sdeeos.theory.mean_square.second_moment_spectral_radius(eta, J0 J0^T/n, B, "
                                   "sampling)"),
    "gd_endpoint_kernel_exact": _L("exact noise kernel norm at the GD endpoint's NTK"),
    "survival": _L("fraction of trajectories that did not diverge"),
    "mean_loss": _L("ensemble mean loss"),
    "sampling": _L("batch sampling scheme"),
    "n": _L("number of training examples n"),
    "batch": _L("batch size B"),
    "eta_factor": _L("step size in units of the exact critical step size"),
    # ------------------------------------------------------------------ sharpness_gap, validity_map slopes
    "gap_batch_slope": _L("fitted log-log slope of the sharpness gap against the batch size"),
    "gap_sigma_sq_slope": _L("fitted log-log slope of the sharpness gap against sigma**2"),
    "slope_theory_exact": _L("slope of the exact closure gap over the same points", None,
                             "log-log fit of " + _CLOSURE),
    "slope_theory_leading": _L("slope of the leading-order gap eta beta sigma**2/(4 alpha) over the same points",
                               None, f"{_REDUCED}.gap_leading"),
    "slope_ci_low": _L("lower end of the 95 % confidence interval of the fitted slope"),
    "slope_ci_high": _L("upper end of the 95 % confidence interval of the fitted slope"),
    "burn_in": _L("steps discarded before averaging", "step"),
    "eta_sq_alpha": _L("eta**2 alpha, the inverse of the slow time unit tau in steps"),
    "dimensionless_gap_z": _L("gap in the collapse variable z of the validity map"),
    "gap_rel_error_exact": _L("relative error of the exact closure gap against the measured gap"),
    "gap_rel_error_leading": _L("relative error of the leading-order gap against the measured gap"),
    # ------------------------------------------------------------------ bifurcation (minimalist GD)
    "fraction_diverged": _L("fraction of trajectories that diverged"),
    "initial_x": _L("initial x"),
    "initial_y": _L("initial y"),
    "tail": _L("index of a late iterate (1: the last)"),
    # ------------------------------------------------------------------ gd_recovery
    "growth_per_cycle": _L("measured growth of the y-oscillation amplitude per cycle"),
    "x0_over_delta": _L("initial x0 in units of the GD scale delta"),
    # ------------------------------------------------------------------ sde_vs_sgd (time-mean sharpness per series)
    "gd": _L("time-mean sharpness of GD on the minimalist loss", _S),
    "sgd_additive": _L("time-mean sharpness of SGD with additive noise", _S),
    "sgd_multiplicative": _L("sharpness at the last step of SGD with multiplicative noise", _S),
    "sme_additive_em": _L("time-mean sharpness of the SME (additive noise), Euler-Maruyama", _S),
    "sme_multiplicative_em": _L("time-mean sharpness of the SME (multiplicative noise), Euler-Maruyama", _S),
    "sme_multiplicative_weak2": _L("time-mean sharpness of the SME (multiplicative noise), weak order 2", _S),
    "scan_additive_em": _L("time-mean sharpness of the additive-noise SME (Euler-Maruyama) against dt/eta", _S),
    "scan_additive_weak2": _L("time-mean sharpness of the additive-noise SME (weak order 2) against dt/eta", _S),
    "scan_multiplicative_em": _L("time-mean sharpness of the multiplicative-noise SME (Euler-Maruyama) against "
                                 "dt/eta", _S),
    "scan_multiplicative_weak2": _L("time-mean sharpness of the multiplicative-noise SME (weak order 2) against "
                                    "dt/eta", _S),
    "ct_sgd_sharpness_mean_path": _L("cubic Taylor, SGD: ensemble mean path of u^T H u", _S),
    "ct_sme_sharpness_mean_path": _L("cubic Taylor, SME: ensemble mean path of u^T H u", _S),
    "ct_sgd_sharpness_path_0": _L("cubic Taylor, SGD: path of u^T H u of trajectory 0", _S),
    "ct_sme_sharpness_path_0": _L("cubic Taylor, SME: path of u^T H u of trajectory 0", _S),
    "dt_over_eta": _L("SME time step in units of the SGD step size, dt/eta"),
    "t_sgd": _L("time t = k eta of SGD step k"),
    "t_sme": _L("time t of the SME integration"),
    "sharpness_lyapunov_bound": _L("almost-sure stability bound s*(sigma_mult)/eta", _S,
                                   "sdeeos.theory.minimalist.lyapunov_sharpness_bound(eta, sigma_mult)"),
    # ------------------------------------------------------------------ batch_sharpness_anchor
    "batch_sharpness": _L("batch sharpness E_B[g_B^T H_B g_B]/E_B[|g_B|**2]", _S),
    "plateau_batch_sharpness": _L("time mean of the batch sharpness on the plateau", _S),
    "plateau_loss": _L("time mean of the training loss on the plateau"),
    "bs_over_2_over_eta": _L("plateau batch sharpness over 2/eta"),
    "lmax_over_2_over_eta": _L("plateau sharpness (top Hessian eigenvalue) over 2/eta"),
    "loss_plateau_relative_drift": _L("relative drift of the training loss between the plateau's halves"),
    # ------------------------------------------------------------------ eos_sgd_vs_baselines
    "setting": _L("setting: data set / network / loss (and batch size)"),
    "competitor": _L("optimizer compared"),
    "binding": _L("term that sets edge-SGD's step size"),
    "grid_index": _L("index in the tuning grid"),
    "eval_index": _L("index of an evaluation during training"),
    "dataset": _L("data set"),
    "model": _L("network"),
    "target_test_accuracy": _L("test accuracy to reach"),
    "budget_steps": _L("step budget", "step"),
    "eval_every": _L("steps between evaluations", "step"),
    "steps_to_target": _L("steps to the target test accuracy (NaN: not reached)", "step"),
    "time_to_target_s": _L("optimizer time to the target test accuracy (NaN: not reached)", "s"),
    "best_test_accuracy": _L("best test accuracy during the run"),
    "final_test_accuracy": _L("test accuracy at the end of the run"),
    "time_per_step_s": _L("training time per step", "s"),
    "steps_run": _L("steps run", "step"),
    "overhead_fraction": _L("curvature-measurement time over training time"),
    "refresh_count": _L("number of curvature refreshes"),
    "total_hvp": _L("Hessian-vector products in all"),
    "reached_target": _L("1 if the run reached the target test accuracy"),
    "binding_fraction": _L("fraction of steps at which each term set edge-SGD's eta_t"),
    "tuned_value": _L("tuned hyper-parameter value (step size or margin)"),
    "tuning_value": _L("hyper-parameter value tried in tuning"),
    "tuning_steps_to_target": _L("tuning run: steps to the target test accuracy", "step"),
    "tuning_time_to_target_s": _L("tuning run: time to the target test accuracy", "s"),
    "tuning_diverged": _L("tuning run: 1 if it diverged"),
    "cosine_base": _L("optimizer under the cosine schedule (the tuned baseline)"),
    "fixed_refresh_every": _L("refresh interval of the fixed-interval ablation", "step"),
    "adaptive_mean_interval": _L("mean refresh interval of adaptive edge-SGD", "step"),
    "n_reached": _L("number of seeds that reached the target"),
    "speedup_time": _L("time to target of the best baseline over edge-SGD's"),
    "speedup_steps": _L("steps to target of the best baseline over edge-SGD's"),
    "accuracy_difference": _L("final test accuracy of edge-SGD minus the best baseline's"),
    "best_baseline": _L("baseline that reached the target on most seeds, then fastest"),
    "goal_reached": _L("1 if edge-SGD reached the speed-up goal"),
    "binding_term_code": _L("integer code of each binding term (edge_curve_edge_binding_term)"),
    "edge_step_curvature": _L("step size the curvature term allows", "step size"),
    "edge_step_batch_sharpness": _L("step size the batch-sharpness term allows", "step size"),
    "edge_step_noise_kernel": _L("step size the noise-kernel term allows", "step size"),
    "edge_lambda_max": _L("measured top Hessian eigenvalue", _S),
    "edge_batch_sharpness": _L("measured batch sharpness", _S),
    "edge_noise_kernel": _L("measured noise kernel norm K"),
    "edge_ntk_trace": _L("measured NTK trace", _S),
    "edge_binding_term": _L("term that set the step size (binding_term_code; -1: none)"),
    # ------------------------------------------------------------------ regime / real_gap (sdeeos.studies.regime)
    "second_eigenvalue": _L("time mean of the second Hessian eigenvalue lambda_2 on the plateau", _S),
    "top_eigenvalue_gap": _L("time mean of lambda_1 - lambda_2 on the plateau", _S),
    "gap_from_2_over_eta": _L("measured sharpness gap 2/eta - mean lambda_1 on the plateau", _S),
    "gap_from_gd_sharpness": _L("measured sharpness gap S_GD - mean lambda_1 (same seed and eta)", _S),
    "predicted_gap_1d_topk_projected_alpha": _L(
        "predicted gap of the 1-D model with alpha_1 from the top-k projection", _S,
        "eta G_11 sigma_1**2/(4 alpha_1), alpha_1 at theta_dagger with the top-k eigenspace projected out of grad L "
        "(sdeeos.torch.edge_constants)"),
    "predicted_gap_1d_gradient_flow_alpha": _L(
        "predicted gap of the 1-D model with alpha from gradient flow", _S,
        "eta G_11 sigma_1**2/(4 alpha_gf), alpha_gf = d lambda_max/dt under a small-step continuation "
        "(sdeeos.torch.gradient_flow_rate)"),
    "predicted_gap_k_direction": _L(
        "predicted top-eigenvalue gap of the k-direction closure, min_j Delta S_j on the active set", _S,
        "sdeeos.studies.regime.k_direction_gap(eta, alpha, sigma**2, G) (sdeeos.theory.multi_direction)"),
    "predicted_gap_k_direction_first": _L(
        "predicted gap of direction 1 in the k-direction closure (~ eta beta_eff,1 sigma_1**2/(4 alpha_1))", _S,
        "sdeeos.studies.regime.k_direction_gap(..., which='first') (sdeeos.theory.multi_direction)"),
    "n_active_directions": _L("directions in the active set of the k-direction closure ((G^-1 alpha)_j > 0)"),
    "alpha_topk_projected": _L("sharpening rate alpha_1 with the top-k eigenspace projected out of grad L"),
    "alpha_gradient_flow": _L("sharpening rate d lambda_max/dt under a small-step gradient-flow continuation"),
    "alpha_gradient_flow_stderr": _L("standard error of alpha_gradient_flow (fit)"),
    "alpha_one_direction": _L("sharpening rate alpha_1 with only the top direction projected out"),
    "coupling_11": _L("coupling G_11 of the k-direction model (self-stabilization strength of direction 1)"),
    "coupling_12_over_11": _L("coupling ratio G_12/G_11 of the k-direction model"),
    "noise_variance_1": _L("projected gradient-noise variance sigma_1**2 along the top direction at batch size B"),
    "eta_times_gap": _L("eta times the measured gap, eta (2/eta - mean lambda_1)"),
    "noise_kernel_lower": _L("noise kernel K, lower bound"),
    "noise_kernel_upper": _L("noise kernel K, upper bound"),
    "noise_kernel_trace": _L("noise kernel K, trace form (without the top modes)"),
    "noise_correlation_12": _L("correlation of the gradient noise along directions 1 and 2"),
    "edge_constants_hvp": _L("Hessian-vector products of the edge-constant measurement"),
    "edge_constants_time_s": _L("time of the edge-constant measurement", "s"),
    "gradient_flow_hvp": _L("Hessian-vector products of the gradient-flow rate measurement"),
    "gradient_flow_time_s": _L("time of the gradient-flow rate measurement", "s"),
    "run_time_s": _L("time of the run", "s"),
    "final_loss": _L("training loss at the last step"),
    "identity_coupling_x_sq_1": _L("left side of the identity (G E[x**2])_1 = 2 alpha_1 at the snapshots"),
    "identity_two_alpha_1": _L("right side of the identity (G E[x**2])_1 = 2 alpha_1 at the snapshots"),
    "n_above_2_over_eta": _L("number of top-k Hessian eigenvalues above 2/eta"),
    "regime": _L("regime: GD, nonlinear, stochastic-edge, 1-D, k-direction, neither or diverged"),
}

_PREDICTION = re.compile(r"(^|_)(predicted|prediction|theory)(_|$)|^predicted_")

#: (pattern, long name template, units rule); the first pattern whose base is known wins
_DERIVED: tuple[tuple[re.Pattern, str, str], ...] = tuple((re.compile(p), t, u) for p, t, u in (
    (r"^(?P<b>.+)_mean_stderr$", "standard error of the ensemble mean of the time mean after burn-in of: {b}", "same"),
    (r"^(?P<b>.+)_time_meansq$", "time mean after burn-in of the square of: {b}", "square"),
    (r"^(?P<b>.+)_time_mean$", "time mean after burn-in of: {b}", "same"),
    (r"^(?P<b>.+)_meansq$", "ensemble mean of the time mean after burn-in of the square of: {b}", "square"),
    (r"^(?P<b>.+)_ensemble_mean$", "ensemble mean of: {b}", "same"),
    (r"^(?P<b>.+)_mean$", "ensemble mean of the time mean after burn-in of: {b}", "same"),
    (r"^(?P<b>.+)_stderr$", "standard error of: {b}", "same"),
    (r"^(?P<b>.+)_seed_mean$", "mean across seeds of: {b}", "same"),
    (r"^(?P<b>.+)_seed_ci95$", "half-width of the 95 % Student-t confidence interval across seeds of: {b}", "same"),
    (r"^(?P<b>.+)_ci95$", "half-width of the 95 % confidence interval of: {b}", "same"),
    (r"^(?P<b>.+)_ci_low$", "lower end of the 95 % confidence interval of: {b}", "same"),
    (r"^(?P<b>.+)_ci_high$", "upper end of the 95 % confidence interval of: {b}", "same"),
    (r"^(?P<b>.+)_final_mean$", "ensemble mean at the last step of: {b}", "same"),
    (r"^(?P<b>.+)_final$", "at the last step of: {b}", "same"),
    (r"^(?P<b>.+)_initial$", "at step 0 of: {b}", "same"),
    (r"^(?P<b>.+)_path$", "recorded path of: {b}", "same"),
    (r"^ratio_(?P<b>.+)_to_(?P<c>.+)$", "ratio {b} / {c}", "none"),
    (r"^gap_(?P<x>batch|sigma_sq)_(?P<b>slope_.+)$", "gap against {x}: {b}", "same"),
    (r"^(?P<b>.+)_across_seeds$", "mean across seeds of: {b}", "same"),
    (r"^final_(?P<b>.+)$", "at the last step: {b}", "same"),
    (r"^burn_in_(?P<b>.+)$", "at the end of burn-in: {b}", "same"),
    (r"^path_(?P<b>.+)$", "recorded sample path of: {b}", "same"),
    (r"^(?P<b>.+)_n_diverged$", "number of diverged trajectories of: {b}", "none"),
    (r"^alpha_top(?P<j>[0-9]+)_projected$", "sharpening rate alpha_1 with the top {j} directions projected out of "
     "grad L", "none"),
    (r"^discrete_(?P<b>.+)$", "of the discrete model the SDE approximates: {b}", "same"),
    (r"^(?P<p>gd|pgd|sgd|lin|lsim|collapse|edge_curve|curve|tuning)_(?P<b>.+)$", "{p}: {b}", "same"),
    (r"^(?P<b>[a-z_]*[a-z])(?P<j>[0-9]+)$", "direction {j}: {b}", "same"),
    (r"^(?P<b>[a-z_]*[a-z])(?P<j>[0-9]+)(?P<rest>_.+)$", "direction {j}: {b}{rest}", "same"),
))


_PREFIXES = {"gd": "GD run", "pgd": "PGD run", "sgd": "SGD run", "lin": "linear model",
             "lsim": "simulated linear model", "collapse": "collapse", "edge_curve": "edge-SGD curve",
             "curve": "training curve", "tuning": "tuning run"}


def describe(name: str, extra: Mapping[str, Label] | None = None) -> Label | None:
    """The label of ``name`` (``extra`` first, then `LABELS`, then a name derived from one), or None."""
    known = {**LABELS, **(extra or {})}
    return _describe(name, known, 0)


def _describe(name: str, known: Mapping[str, Label], depth: int) -> Label | None:
    if name in known:
        return known[name]
    if depth > 6:
        return None
    for pattern, template, units in _DERIVED:
        m = pattern.match(name)
        if not m:
            continue
        g = m.groupdict()
        # sharpness_gap2_predicted_exact: the base with the direction cut out
        base = _describe(g["b"] + g.get("rest", ""), known, depth + 1) if "b" in g else Label("")
        if base is None:
            continue
        other = None
        if "c" in g:  # ratio_<b>_to_<c>: both must be known
            other = _describe(g["c"], known, depth + 1)
            if other is None:
                continue
        u = {"same": base.units, "none": None}.get(units, f"({base.units})**2" if base.units else None)
        long_name = template.format(b=base.long_name, c=other.long_name if other else "", j=g.get("j", ""),
                                    x=g.get("x", "").replace("_sq", "**2"), p=_PREFIXES.get(g.get("p", ""), ""),
                                    rest="")
        formula = "; ".join(f for f in (base.formula, other.formula if other else None) if f) or None
        return Label(long_name, u, formula)
    return None


def step_labels(step, *, all_names: bool = False) -> dict[str, Label]:
    """Labels of a symbolic step's state variables and observables (its SymPy expressions); only of
    the names the registry does not know unless ``all_names``."""
    out = {}
    for name in getattr(step, "state_names", ()):
        if all_names or name not in LABELS:
            out[name] = Label(f"state variable {name}")
    for name, expr in dict(getattr(step, "observables", {}) or {}).items():
        if all_names or name not in LABELS:
            out[name] = Label(f"observable {name} = {expr}")
    return out


def as_label(value) -> Label:
    """A `Label` from a Label, a long name, or a tuple ``(long_name[, units[, formula]])``.

    >>> as_label(("gap", "1/step size")).units
    '1/step size'
    """
    if isinstance(value, Label):
        return value
    if isinstance(value, str):
        return Label(value)
    return Label(*value)


def model_labels(model, step=None, method: str | None = None) -> dict[str, Label]:
    """A model's labels: its step's variables and observables, then the model's own ``labels``
    (name -> `Label` or tuple).  Both win over the registry, whose names are those of the built-in
    models: a user model's ``x_sq`` is labelled by its own expression, its ``x_sq_predicted`` by its
    own formula, never by a built-in model's."""
    own = {k: as_label(v) for k, v in dict(getattr(model, "labels", None) or {}).items()}
    builtin = type(model).__module__.startswith("sdeeos.")
    unlabelled_predictions = {}
    if not builtin and method is not None:  # say where an unlabelled prediction comes from, nothing more
        where = f"{type(model).__name__}.predictions({method!r})"
        unlabelled_predictions = {k: Label(f"{k}, a prediction of {where}", None, where)
                                  for k in model.predictions(method) if k not in own}
    parameters = {k: Label(f"model parameter {k}") for k in model.parameters() if not builtin or k not in LABELS}
    return {**parameters, **step_labels(step, all_names=not builtin), **unlabelled_predictions, **own}


def is_prediction(name: str) -> bool:
    """A theoretical prediction (its label must carry the formula it comes from)."""
    return bool(_PREDICTION.search(name))


def label_dataset(ds: xr.Dataset, extra: Mapping[str, Label] | None = None) -> xr.Dataset:
    """Fill in missing ``long_name``/``units``/``formula`` of every variable and coordinate, in place
    (a label set where the variable was made wins; a derived name may build on it).  Returns ``ds``."""
    names = [*ds.data_vars, *ds.coords]
    for _ in range(2):  # a second pass builds on the labels of the first
        own = {str(n): Label(ds[n].attrs["long_name"], ds[n].attrs.get("units"), ds[n].attrs.get("formula"))
               for n in names if ds[n].attrs.get("long_name")}
        known = {**LABELS, **own, **(extra or {})}
        for name in names:
            label = _describe(str(name), known, 0)
            if label is None:
                continue
            attrs = ds[name].attrs
            for key, value in label.attrs().items():
                attrs.setdefault(key, value)
    return ds


def unlabelled(ds: xr.Dataset) -> list[str]:
    """Variables and coordinates without a ``long_name``, and predictions without a ``formula``."""
    out = [str(n) for n in [*ds.data_vars, *ds.coords] if not ds[n].attrs.get("long_name")]
    out += [f"{n} (no formula)" for n in ds.data_vars if is_prediction(str(n)) and not ds[n].attrs.get("formula")]
    return out
