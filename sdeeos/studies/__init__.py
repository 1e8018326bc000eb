"""Declarative studies: one module per study kind, one schema, one loader, one runner (``sdeeos study``).

A study file (``studies/*.toml``) names its ``kind``; the static table `KINDS` maps every kind to the
module that implements it, imported only when a file of that kind is loaded::

    kind = "sharpness_gap"
    title = "Sharpness gap vs batch size"

    [model]
    alpha = 1.0
    ...

Every table and key is checked against the kind's schema before anything runs: an unknown key, a
missing key, a wrong type, a non-finite number, a repeated list value or a value out of range raises
`ParameterError` naming the key and the file line (``studies/x.toml:12: [run] n_traj must be an
integer, got 2.5 (float)``); ``sdeeos study`` prints that one line and exits with status 2.

The study-module interface
--------------------------
A kind's module (``sdeeos/studies/<file stem>.py``, plus one row in `KINDS`) defines:

``SCHEMA: dict[str, Field | Table]``
    its tables and keys, besides the common ``kind``, ``name``, ``title``, ``description`` (and the
    ``[quick]`` overrides, which are merged before validation);
``run(cfg: StudyConfig, out_dir: pathlib.Path, *, progress: bool = True[, scheduler=None]) -> xarray.Dataset``
    runs the validated study, writes its dataset, summary and figures under ``out_dir`` (which exists)
    and returns the dataset.  Cross-key checks raise ``cfg.error(keys, message)`` before any work.
    A ``run`` with a ``scheduler`` parameter gets the Dask scheduler (``None``: a local cluster;
    ``"serial"``: in this process, also chosen when dask is not installed); one without runs in this
    process.

A kind that needs an optional dependency imports it at the top of its module and names the extra in
its `StudyKind` row: loading such a file without the extra is a one-line `BackendUnavailableError`.
"""

from ._kinds import KINDS, StudyKind
from ._runner import (
    load_study,
    register_study_kind,
    run_study,
    study_kinds,
    study_module,
)
from ._schema import COMMON_FIELDS, Field, StudyConfig, Table, toml_key_lines

__all__ = [
    "KINDS", "StudyKind", "load_study", "run_study", "study_kinds", "study_module", "register_study_kind",
    "COMMON_FIELDS", "Field", "StudyConfig", "Table", "toml_key_lines",
]
