"""Loading and running study files: the one loader and the one runner behind ``sdeeos study``."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .._errors import BackendUnavailableError, ParameterError, StoreMismatchError
from .._storelock import StoreLock
from .._toml import read_toml
from .._validation import check_nonnegative
from ._kinds import KINDS, StudyKind
from ._schema import (
    COMMON_FIELDS,
    StudyConfig,
    Table,
    describe,
    toml_key_lines,
    validate_table,
)

__all__ = ["load_study", "run_study", "study_kinds", "study_module", "register_study_kind"]

#: kinds added at run time (plug-ins, tests): kind -> module path or module object.
_ADDED: dict[str, str | ModuleType] = {}


def register_study_kind(kind: str, module: str | ModuleType, description: str = "") -> None:
    """Add a study kind implemented outside sdeeos (a module path or a module-like object with
    ``SCHEMA`` and ``run``); the built-in kinds are the static table `sdeeos.studies.KINDS`."""
    if kind in KINDS:
        raise ParameterError(f"study kind {kind!r} is built in; choose another name")
    _ADDED[kind] = module
    if description:
        _DESCRIPTIONS[kind] = description


_DESCRIPTIONS: dict[str, str] = {}


def study_kinds() -> dict[str, str]:
    """Every kind and its one-line description (imports no study module).

    >>> study_kinds()["sharpness_gap"]
    'stationary SGD sharpness gap vs batch size and step size, with the closure'
    """
    out = {k: row.description + (f" (needs the '{row.extra}' extra)" if row.extra else "")
           for k, row in KINDS.items()}
    for k, mod in _ADDED.items():
        doc = mod if isinstance(mod, str) else (inspect.getdoc(mod) or "").split("\n")[0]
        out[k] = _DESCRIPTIONS.get(k, doc)
    return dict(sorted(out.items()))


def study_module(kind: str, where: str = "") -> ModuleType:
    """The module implementing ``kind``, imported now (``where``: ``file:line`` for errors)."""
    prefix = f"{where}: " if where else ""
    if kind in _ADDED:
        mod = _ADDED[kind]
        return importlib.import_module(mod) if isinstance(mod, str) else mod
    row: StudyKind | None = KINDS.get(kind)
    if row is None:
        known = sorted([*KINDS, *_ADDED])
        close = difflib.get_close_matches(kind, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(f"{prefix}unknown study kind {kind!r}{hint}; known: {', '.join(known)}")
    try:
        return importlib.import_module(row.module)
    except (ImportError, BackendUnavailableError) as exc:
        if row.extra is None:
            raise
        raise BackendUnavailableError(
            f"{prefix}study kind {kind!r} needs the '{row.extra}' extra (pip install 'sdeeos[{row.extra}]'): "
            f"{exc}") from None


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study(path: str | os.PathLike, *, quick: bool = False) -> StudyConfig:
    """Read and validate a study file; every error names the key and its ``file:line``.

    The kind is named by ``kind`` (``study`` is accepted as an old spelling).  A ``[quick]`` table
    holds overrides for a small smoke-test configuration, merged table by table when ``quick`` is
    true.  The file is validated against ``COMMON_FIELDS`` plus the kind module's ``SCHEMA``.
    """
    path = Path(path)
    data, text = read_toml(path, "study file")
    lines = toml_key_lines(text)
    cfg = StudyConfig(data, path, lines)
    key = "kind" if "kind" in data or "study" not in data else "study"
    if key not in data:
        raise cfg.error((), "the study file has no 'kind' (one of: " + ", ".join(study_kinds()) + ")")
    kind = data.pop(key)
    if not isinstance(kind, str):
        raise cfg.error((key,), f"{key} must be a string, got {describe(kind)}")
    module = study_module(kind, cfg.where(key))
    overrides = data.pop("quick", None)
    if overrides is not None and not isinstance(overrides, dict):
        raise cfg.error(("quick",), f"quick must be a table of overrides, got {describe(overrides)}")
    if quick:
        if not overrides:
            raise cfg.error((), "--quick needs a [quick] table of overrides in the study file")
        data = _deep_update(data, overrides)
        for k, v in list(lines.items()):  # an overridden key is reported at its line in [quick]
            if k[:1] == ("quick",) and len(k) > 1:
                lines[k[1:]] = v
    validated = validate_table(cfg, (), Table(fields={**COMMON_FIELDS, **module.SCHEMA}), {"kind": kind, **data})
    validated.setdefault("name", path.stem)
    return StudyConfig(validated, path, lines, kind=kind, name=validated["name"], quick=quick)


def _accepts(func, name: str) -> bool:
    params = inspect.signature(func).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _notice(message: str) -> None:
    print(f"sdeeos study: {message}", file=sys.stderr, flush=True)


def run_study(study, out_dir: str | os.PathLike | None = None, *, progress: bool = True, scheduler=None,
              quick: bool = False, wait_for_lock: float = 0.0, force: bool = False):
    """Run a study file (path or `StudyConfig`); write its dataset and figures under ``out_dir``.

    ``out_dir`` defaults to ``out/<name>`` (``out/<name>-quick`` with the ``[quick]`` overrides).
    Without dask.distributed (the ``dist`` extra) the points run in this process, and without zarr a
    ``format = "zarr"`` output is written as NetCDF; each says so in one line on stderr.
    Returns the runner's dataset.  One process writes ``out_dir`` at a time: a second one fails at
    once naming the first, or waits up to ``wait_for_lock`` seconds for it.

    Sweep points are stored under ``out_dir/sweeps``.  After the study file was edited (other grid,
    model or run settings) they belong to the earlier version: the run stops, naming ``--out`` and
    ``--force``; ``force=True`` deletes them first and recomputes every point.
    """
    wait_for_lock = check_nonnegative("wait_for_lock", wait_for_lock)
    cfg = study if isinstance(study, StudyConfig) else load_study(study, quick=quick)
    module = study_module(cfg.kind, cfg.where("kind"))
    out = Path(out_dir) if out_dir is not None else Path("out") / (cfg.name + ("-quick" if cfg.quick else ""))
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out must be a directory, got the file {str(out)!r}")
    kwargs: dict[str, Any] = {"progress": progress}
    if _accepts(module.run, "scheduler"):
        if scheduler in (None, "local") and importlib.util.find_spec("distributed") is None:
            _notice("dask.distributed is not installed (the 'dist' extra): running the points in this process")
            scheduler = "serial"
        kwargs["scheduler"] = scheduler
    elif scheduler not in (None, "local", "serial"):  # "serial" is what an in-process kind does anyway
        raise ParameterError(f"study kind {cfg.kind!r} runs in this process and takes no scheduler; "
                             "drop --scheduler")
    output = cfg.get("output")
    if isinstance(output, dict) and output.get("format") == "zarr" and importlib.util.find_spec("zarr") is None:
        _notice("zarr is not installed (the 'dist' extra): writing NetCDF instead of Zarr")
        cfg = StudyConfig({**cfg, "output": {**output, "format": "netcdf"}}, cfg.path, cfg.lines,
                          kind=cfg.kind, name=cfg.name, quick=cfg.quick)
    _check_writable_folder(out)
    made = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with StoreLock(out, wait=wait_for_lock, what="study output folder", lock_file=out / ".sdeeos-study.lock"):
            if force:
                shutil.rmtree(out / "sweeps", ignore_errors=True)  # only sweep stores live there
            try:
                return module.run(cfg, out, **kwargs)
            except StoreMismatchError:
                raise ParameterError(
                    f"--out {str(out)!r} holds sweep points of an earlier version of study {cfg.name!r} (its grid, "
                    "model or run settings differ); re-run with --force to discard them and recompute, or choose "
                    "another --out") from None
    except BaseException:
        for d in made:  # a run that failed before writing anything leaves no empty folder behind
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _check_writable_folder(out: Path) -> None:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ParameterError(f"--out must be a directory, but {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"--out {str(out)!r} cannot be written: {str(probe)!r} is not a writable folder")
