import os

# Keep CI deterministic and quiet: no progress bars in tests; Numba kernels cached per session dir.
os.environ.setdefault("TQDM_DISABLE", "1")
