"""Checksums that let a reader tell finished data from damaged data.

A checksum is computed from the bytes a writer meant to store and stored next to them; a reader
recomputes it from what it read.  Any truncation, deleted chunk or flipped byte changes it, so
damage is reported (or the point recomputed) instead of loading garbage.

>>> a = {"x": np.arange(3.0), "t": np.int64(5)}
>>> arrays_digest(a) == arrays_digest({"t": np.int64(5), "x": np.arange(3.0)})
True
>>> arrays_digest(a) == arrays_digest({"x": np.array([0.0, 1.0, 2.5]), "t": np.int64(5)})
False
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = ["arrays_digest", "file_digest", "SIDECAR_SUFFIX", "sidecar_path", "write_sidecar", "read_sidecar",
           "point_checksum", "point_result_names", "damaged_points", "STATIC_ATTR"]

#: Attribute of a store's ``point_checksum`` variable: the per-point variables it does not cover
#: (known before running, written with the store), space separated.
STATIC_ATTR = "not_covered"

#: ``X.nc`` has its checksum in ``X.nc.sha256`` (one line: hex digest).
SIDECAR_SUFFIX = ".sha256"


def arrays_digest(arrays) -> str:
    """sha256 over names, dtypes, shapes and bytes of a mapping of arrays (order independent)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        h.update(f"{name}|{a.shape}|".encode())
        if a.dtype.kind in "OUS":  # text: its characters, whatever the stored width or object dtype
            h.update("\x1f".join(map(str, a.ravel().tolist())).encode())
        else:
            h.update(a.dtype.str.encode())
            h.update(a.tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: str | os.PathLike, digest: str, tmp: Path) -> None:
    """Write ``digest`` for ``path`` atomically (through ``tmp``)."""
    tmp.write_text(digest + "\n")
    os.replace(tmp, sidecar_path(path))


def read_sidecar(path: str | os.PathLike) -> str | None:
    """The stored digest of ``path``, or None if it has none (written before checksums existed)."""
    side = sidecar_path(path)
    try:
        return side.read_text().strip() or "<empty>"
    except FileNotFoundError:
        return None


def point_checksum(values) -> int:
    """Checksum (a nonzero uint64) of one grid point's stored results ``{name: value}``.

    Values are taken as float64 and an all-NaN value (never written for this point) is skipped,
    so the writer (over what it wrote) and a reader (over every result variable at the point)
    agree exactly on an undamaged store.  0 means "no checksum".

    >>> point_checksum({"a": 1.0, "b": float("nan")}) == point_checksum({"a": np.float64(1.0)})
    True
    >>> point_checksum({"a": 1.0}) == point_checksum({"a": 1.0 + 2**-52})
    False
    """
    h = hashlib.sha256()
    for name in sorted(values):
        v = np.ascontiguousarray(np.asarray(values[name], dtype=np.float64))
        if np.isnan(v).all():
            continue
        h.update(f"{name}|{v.shape}|".encode())
        h.update(v.tobytes())
    return int.from_bytes(h.digest()[:8], "little") | 1


def point_result_names(ds) -> list[str]:
    """Variables of a sweep store that hold per-point results (what `point_checksum` covers)."""
    dims = tuple(ds["point_done"].dims)
    skip = {"point_done", "point_checksum", *ds["point_checksum"].attrs.get(STATIC_ATTR, "").split()}
    return [n for n, v in ds.data_vars.items() if n not in skip and tuple(v.dims[: len(dims)]) == dims]


def damaged_points(ds) -> list[tuple[int, ...]]:
    """Grid indices marked done whose stored results do not match their checksum."""
    names = point_result_names(ds)
    done = np.asarray(ds["point_done"].values)
    sums = np.asarray(ds["point_checksum"].values).astype(np.uint64)
    values = {n: np.asarray(ds[n].values, dtype=np.float64) for n in names}
    bad = []
    for idx in zip(*np.nonzero(done)):
        idx = tuple(int(i) for i in idx)
        if int(sums[idx]) != point_checksum({n: v[idx] for n, v in values.items()}):
            bad.append(idx)
    return bad
