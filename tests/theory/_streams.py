"""Random draws for the Monte-Carlo tests, from the package's counter-based streams (sdeeos._rng)."""

from __future__ import annotations

import numpy as np

from sdeeos import _rng


class Streams:
    """``n_traj`` independent streams (seed, trajectory); ``uniforms(k)``/``normals(k)`` return the next k draws
    of every stream as an array (n_traj, k), advancing a shared draw counter."""

    def __init__(self, seed: int, n_traj: int):
        self.keys, self.gammas = _rng.stream_keys(seed, n_traj)
        self.counter = 0

    def uniforms(self, k: int) -> np.ndarray:
        out = np.stack([_rng.uniforms(self.keys, self.gammas, self.counter + j) for j in range(k)], axis=1)
        self.counter += k
        return out

    def normals(self, k: int) -> np.ndarray:
        out = np.stack([_rng.normals(self.keys, self.gammas, self.counter + j) for j in range(k)], axis=1)
        self.counter += k
        return out


def batch_weights(streams: Streams, scheme: str, n: int, B: int) -> np.ndarray:
    """Weights D_i = (n/B) c_i of one batch per stream (rows), drawn under ``scheme``."""
    if scheme == "without_replacement":
        u = streams.uniforms(n)
        ranks = np.argsort(u, axis=1)[:, :B]  # a uniformly random B-subset
        c = np.zeros_like(u)
        np.put_along_axis(c, ranks, 1.0, axis=1)
    elif scheme == "with_replacement":
        idx = np.minimum((streams.uniforms(B) * n).astype(int), n - 1)
        c = np.zeros((idx.shape[0], n))
        for j in range(B):
            np.add.at(c, (np.arange(idx.shape[0]), idx[:, j]), 1.0)
    else:
        c = (streams.uniforms(n) < B / n).astype(float)
    return c * (n / B)


def variance_and_se(samples: np.ndarray) -> tuple[float, float]:
    """Sample variance and its standard error sqrt((m4 - s^4)/N) (large-N, any distribution)."""
    x = np.asarray(samples, dtype=float)
    dev = x - x.mean()
    s2 = float(np.mean(dev**2))
    m4 = float(np.mean(dev**4))
    return s2, float(np.sqrt(max(m4 - s2**2, 0.0) / x.size))


def mean_and_se(samples: np.ndarray) -> tuple[float, float]:
    x = np.asarray(samples, dtype=float)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))
