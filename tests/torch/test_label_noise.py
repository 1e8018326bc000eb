"""Label-noise SGD (``label_noise = s``): fresh Gaussian noise of standard deviation s on the MSE targets
of every step, reproducible by seed, leaving the batch stream unchanged.

The targets each step's loss sees are captured (the loss function wrapped); the clean targets of
the same step are rebuilt from the training-batch generator, so the captured minus the clean targets
is the noise itself.  With N noise values, the sample variance has standard error s^2 sqrt(2/N), the
mean s/sqrt(N) and the correlation of two independent arrays 1/sqrt(N): every bound below is 4 SE.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdeeos import ParameterError  # noqa: E402
from torch.func import grad  # noqa: E402

from sdeeos.torch import (  # noqa: E402
    FlatParams,
    _train,
    build_model,
    label_noise_projected_variance,
    label_noise_targets,
    load_data,
    loss_function,
    per_example_loss_function,
    train,
)

N_TRAIN, N_TEST, B, STEPS, S = 64, 20, 8, 200, 0.3
CFG = dict(dataset="digits", n_train=N_TRAIN, n_test=N_TEST, width=8, optimizer="sgd", batch_size=B, lr=0.05,
           n_steps=STEPS, eval_every=STEPS, sharpness_every=0, dtype="float64", threads=1, label_noise=S)


def _captured_targets(monkeypatch, **over) -> np.ndarray:
    seen = []
    original = _train.per_example_loss

    def spy(outputs, targets, loss):
        if targets.shape[0] == B:  # the training steps (evaluation uses n_train or n_test rows)
            seen.append(targets.detach().clone().numpy())
        return original(outputs, targets, loss)

    monkeypatch.setattr(_train, "per_example_loss", spy)
    train(dict(CFG, **over), progress=False)
    monkeypatch.setattr(_train, "per_example_loss", original)
    return np.stack(seen)


def _clean_targets(seed: int) -> np.ndarray:
    data = load_data("digits", loss="mse", n_train=N_TRAIN, n_test=N_TEST, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + _train._TRAIN_BATCHES)
    return np.stack([data.targets_train[_train.batch_indices(N_TRAIN, B, gen)].numpy() for _ in range(STEPS)])


def test_noise_has_the_stated_standard_deviation_and_is_fresh_every_step(monkeypatch):
    noise = _captured_targets(monkeypatch) - _clean_targets(0)  # (steps, B, C)
    v = noise.ravel()
    n = v.size
    assert abs(v.mean()) < 4 * S / math.sqrt(n)
    assert abs(v.var() - S**2) < 4 * S**2 * math.sqrt(2 / n)
    flat = noise.reshape(STEPS, -1)
    r = np.corrcoef(flat[:-1].ravel(), flat[1:].ravel())[0, 1]  # step t against step t + 1
    assert abs(r) < 4 / math.sqrt(flat[1:].size)


def test_noise_is_reproducible_by_seed_and_leaves_the_batches_alone(monkeypatch):
    a = _captured_targets(monkeypatch)
    np.testing.assert_array_equal(a, _captured_targets(monkeypatch))
    other = _captured_targets(monkeypatch, seed=1)
    assert not np.allclose(other - _clean_targets(1), a - _clean_targets(0))
    np.testing.assert_array_equal(_captured_targets(monkeypatch, label_noise=0.0), _clean_targets(0))


def test_label_noise_needs_the_mse_loss():
    with pytest.raises(ParameterError, match="label_noise must be 0 with loss 'ce'"):
        train(dict(CFG, loss="ce"), progress=False)
    with pytest.raises(ParameterError, match="label_noise"):
        train(dict(CFG, label_noise=-0.1), progress=False)


def test_projected_variance_matches_monte_carlo_of_the_step_gradient():
    """sigma_u^2(B, s) = (n-B)/(B(n-1)) sigma_1^2 + s^2/B mean_i |J_i u|^2 against the sample variance of
    u . g over independent (batch, noise) draws of real step gradients (autograd, noisy targets)."""
    data = load_data("digits", loss="mse", n_train=24, dtype=torch.float64)
    net = build_model("mlp-tanh", data.input_shape, data.n_classes, width=4, depth=1, seed=3, dtype=torch.float64)
    flat = FlatParams(net)
    theta = flat.flat()
    x, t, n = data.x_train, data.targets_train, data.n_train
    u = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = u / u.norm()
    b, s, m = 4, 0.7, 4000
    pred = label_noise_projected_variance(flat, per_example_loss_function(flat, x, t, "mse"), x, theta, u, b, s)
    assert pred["label"] > pred["sampling"] / 10  # both parts matter in this check
    gen, noise_gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    proj = np.empty(m)
    for k in range(m):
        idx = _train.batch_indices(n, b, gen)
        proj[k] = float(torch.dot(u, grad(loss_function(flat, x[idx], label_noise_targets(t[idx], s, noise_gen),
                                                        "mse"))(theta)))
    var = proj.var(ddof=1)
    c = proj - proj.mean()
    se = math.sqrt((np.mean(c**4) - var**2) / m)  # standard error of a sample variance (any distribution)
    assert abs(var - pred["sigma_u_sq"]) < 4 * se, (var, pred, se)
