"""Quadratic regression in one folder: the model, its run state and its two engines.

Its step is linear algebra (Jacobians, Lanczos sharpness, batch sampling), not a `SymbolicStep`, so it
brings its own run state (`_state`: `QRRunState`, the shared recording driver `QREngineBase`, the
observables and `collect_qr`) and engines (`_numba_engine`, and the NumPy reference `_numpy_engine`)
behind the same `Model` hooks (`_model`: `QuadraticRegression`).
"""

from ._model import DATA_STREAM_OFFSET, QR_ENGINES, SAMPLING_SCHEMES, QuadraticRegression, get_qr_engine
from ._numba_engine import QRNumbaEngine
from ._numpy_engine import QRNumpyEngine, jacobian_residual
from ._state import LANCZOS_DRAW_OFFSET, OBSERVABLE_DOCS, OBSERVABLES, QRRunState, collect_qr, single_blas_thread

__all__ = [
    "QuadraticRegression",
    "SAMPLING_SCHEMES",
    "OBSERVABLES",
    "OBSERVABLE_DOCS",
    "DATA_STREAM_OFFSET",
    "LANCZOS_DRAW_OFFSET",
    "QRRunState",
    "QRNumbaEngine",
    "QRNumpyEngine",
    "QR_ENGINES",
    "get_qr_engine",
    "collect_qr",
    "jacobian_residual",
    "single_blas_thread",
]
