"""The one TOML reader of sdeeos (study files, ``sdeeos train --config``).

``tomllib`` on Python >= 3.11, its backport ``tomli`` on 3.10 (declared in pyproject.toml as
``tomli; python_version < "3.11"``).  Every failure is a `ParameterError` naming the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ._errors import ParameterError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["read_toml"]


def read_toml(path: str | os.PathLike, what: str = "TOML file") -> tuple[dict, str]:
    """``(parsed document, its text)`` of the UTF-8 TOML file at ``path``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.toml"
    >>> _ = p.write_text('x = 1\\n[t]\\ny = "z"\\n')
    >>> read_toml(p)[0]
    {'x': 1, 't': {'y': 'z'}}
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ParameterError(f"{what} {str(path)!r} is a directory, not a file") from None
    except OSError as exc:
        raise ParameterError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ParameterError(f"{path}:{line}: {what} must be UTF-8 text (byte {raw[exc.start]:#04x} "
                             f"at offset {exc.start} is not)") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path}: invalid TOML: {exc}") from None
