"""The schema of study files: `Field` and `Table`, `StudyConfig`, and the one validation path.

Every table and key of a study file is checked against its kind's schema before anything runs: an
unknown key, a missing key, a wrong type, a non-finite number or a value out of range raises
`ParameterError` naming the key and the file line
(``studies/x.toml:12: [run] n_traj must be an integer, got 2.5 (float)``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from .._errors import ParameterError

__all__ = ["Field", "Table", "StudyConfig", "COMMON_FIELDS", "toml_key_lines", "validate_table", "describe"]


# --------------------------------------------------------------------------- schema
@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a study file.

    ``type`` is one of ``"int"``, ``"float"`` (an int is accepted and converted), ``"number"``,
    ``"str"``, ``"bool"``, ``"list[int]"``, ``"list[float]"``, ``"list[number]"``, ``"list[str]"``,
    ``"any"``, ``"list[any]"``.  List values must be distinct unless ``unique=False``; numbers must
    be finite.  ``check`` receives the converted value and returns it (or raises
    `ParameterError` with a message that does not repeat the location).
    """

    type: str
    required: bool = False
    default: Any = None
    doc: str = ""
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    min_len: int = 0
    check: Callable[[Any], Any] | None = None
    unique: bool = True


@dataclasses.dataclass(frozen=True)
class Table:
    """A TOML table.  ``fields``: fixed keys; ``extra``: the field every other key must match, with
    ``keys`` (a callable of the whole configuration) naming the allowed extra keys."""

    fields: Mapping[str, "Field | Table"] = dataclasses.field(default_factory=dict)
    required: bool = False
    doc: str = ""
    extra: Field | None = None
    keys: Callable[[dict], list[str]] | None = None


#: Keys every study file may have (besides its kind's own tables).
COMMON_FIELDS: dict[str, Field] = {
    "kind": Field("str", required=True, doc="which runner runs this study"),
    "name": Field("str", doc="base name of the dataset and figures (default: the file's stem)",
                  check=lambda v: check_plain_name(v)),
    "title": Field("str", default="", doc="figure titles"),
    "description": Field("str", default="", doc="free text, copied into the dataset's attrs"),
}


class StudyConfig(dict):
    """The validated study as a plain ``dict``, plus its ``kind``, ``name``, file ``path`` and the
    line of every key (``where(*keys)`` gives ``"file:line"``)."""

    def __init__(self, data: dict, path: Path, lines: dict[tuple, int], kind: str = "", name: str = "",
                 quick: bool = False):
        super().__init__(data)
        self.path = path
        self.lines = lines
        self.kind = kind
        self.name = name
        self.quick = quick

    def line(self, *keys) -> int:
        keys = tuple(keys)
        while keys:
            if keys in self.lines:
                return self.lines[keys]
            keys = keys[:-1]
        return 1

    def where(self, *keys) -> str:
        return f"{self.path}:{self.line(*keys)}"

    def error(self, keys, message: str) -> ParameterError:
        """A `ParameterError` for the key at ``keys`` (a tuple path), prefixed with file:line."""
        return ParameterError(f"{self.where(*keys)}: {message}")


# --------------------------------------------------------------------------- TOML line numbers
_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_INLINE_KEY_RE = re.compile(rf"[{{,]\s*({_KEY_PART})\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def toml_key_lines(text: str) -> dict[tuple, int]:
    """Map every key path (and table header) of a TOML document to its 1-based line number.

    A small scanner, not a parser (the file has already been parsed by `tomllib`): it tracks
    table headers, multi-line strings and arrays, and the keys of one-line inline tables.
    """
    lines: dict[tuple, int] = {}
    table: tuple[str, ...] = ()
    aot_count: dict[tuple, int] = {}
    depth = 0              # open [ or { across lines
    in_ml: str | None = None  # the closing delimiter of an open multi-line string
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_ml:
            if in_ml in line:
                line = line.split(in_ml, 1)[1]
                in_ml = None
            else:
                continue
        if depth == 0:
            m = _HEADER_RE.match(line)
            if m and not _KEY_RE.match(line):
                path = _split_key(m.group(2))
                if m.group(1) == "[[":
                    i = aot_count.get(path, 0)
                    aot_count[path] = i + 1
                    lines.setdefault(path, no)
                    path = path + (i,)
                table = path
                lines.setdefault(path, no)
                continue
            m = _KEY_RE.match(line)
            if m:
                key = table + _split_key(m.group(1))
                lines.setdefault(key, no)
                for i in range(len(table) + 1, len(key)):
                    lines.setdefault(key[:i], no)
                value = line[m.end():]
                for km in _INLINE_KEY_RE.finditer(value):
                    lines.setdefault(key + _split_key(km.group(1)), no)
                line = value
            else:
                continue
        # track brackets and multi-line strings in the rest of the line
        i = 0
        while i < len(line):
            c = line[i]
            if line.startswith('"""', i) or line.startswith("'''", i):
                delim = line[i:i + 3]
                end = line.find(delim, i + 3)
                if end < 0:
                    in_ml = delim
                    break
                i = end + 3
                continue
            if c in "\"'":
                end = i + 1
                while end < len(line) and line[end] != c:
                    end += 2 if (c == '"' and line[end] == "\\") else 1
                i = end + 1
                continue
            if c == "#":
                break
            if c in "[{":
                depth += 1
            elif c in "]}":
                depth = max(0, depth - 1)
            i += 1
    return lines


# --------------------------------------------------------------------------- validation
_TYPE_NAMES = {
    "int": "an integer", "float": "a number", "number": "a number", "str": "a string", "bool": "true or false",
    "list[int]": "a list of integers", "list[float]": "a list of numbers", "list[number]": "a list of numbers",
    "list[str]": "a list of strings", "any": "any value", "list[any]": "a list",
}


def check_plain_name(name: str) -> str:
    """A file-name stem: letters, digits, ``_``, ``-``, ``.``, not starting with a dot.

    >>> check_plain_name("sharpness_gap-small.v2")
    'sharpness_gap-small.v2'
    >>> check_plain_name("..")
    Traceback (most recent call last):
    sdeeos._errors.ParameterError: must be a plain file name (letters, digits, '_', '-', '.', not starting with '.'), got '..'
    """
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", name):
        raise ParameterError("must be a plain file name (letters, digits, '_', '-', '.', not starting "
                             f"with '.'), got {name!r}")
    return name


def _convert_scalar(kind: str, value):
    if kind == "any":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError
    if kind == "str":
        if isinstance(value, str):
            return value
        raise TypeError
    if isinstance(value, bool):
        raise TypeError
    if kind == "int":
        if isinstance(value, int):
            return value
        raise TypeError
    if kind in ("float", "number"):
        if isinstance(value, (int, float)):
            return float(value) if kind == "float" else value
        raise TypeError
    raise ValueError(f"unknown field type {kind!r}")  # pragma: no cover - a schema bug


def describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check_field(cfg: StudyConfig, keys: tuple, field: Field, value):
    label = _label(keys)
    try:
        if field.type.startswith("list["):
            inner = field.type[5:-1]
            if not isinstance(value, list):
                raise TypeError
            value = [_convert_scalar(inner, v) for v in value]
            if len(value) < field.min_len:
                raise cfg.error(keys, f"{label} needs at least {field.min_len} value(s), got {len(value)}")
            repeated = sorted({repr(v) for i, v in enumerate(value) if v in value[:i]})
            if field.unique and repeated:
                raise cfg.error(keys, f"{label} lists {', '.join(repeated)} more than once")
            items = value
        else:
            value = _convert_scalar(field.type, value)
            items = [value]
    except TypeError:
        raise cfg.error(keys, f"{label} must be {_TYPE_NAMES[field.type]}, got {describe(value)}") from None
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            raise cfg.error(keys, f"{label} must be a finite number, got {v!r}")
        if field.choices is not None and v not in field.choices:
            raise cfg.error(keys, f"{label} must be one of {', '.join(map(repr, field.choices))}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo_bad = field.low is not None and (v < field.low or (field.low_open and v == field.low))
            hi_bad = field.high is not None and (v > field.high or (field.high_open and v == field.high))
            if lo_bad or hi_bad:
                lo = "-inf" if field.low is None else field.low
                hi = "inf" if field.high is None else field.high
                lb, rb = "(" if field.low_open else "[", ")" if field.high_open else "]"
                raise cfg.error(keys, f"{label} must be in {lb}{lo}, {hi}{rb}, got {v!r}")
    if field.check is not None:
        try:
            value = field.check(value)
        except ParameterError as exc:
            raise cfg.error(keys, f"{label}: {exc}") from None
    return value


def _label(keys: tuple) -> str:
    if len(keys) == 1:
        return str(keys[0])
    return f"[{'.'.join(map(str, keys[:-1]))}] {keys[-1]}"


def _unknown(cfg: StudyConfig, keys: tuple, allowed) -> ParameterError:
    where = f"in [{'.'.join(map(str, keys[:-1]))}]" if len(keys) > 1 else "at the top level"
    close = difflib.get_close_matches(str(keys[-1]), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    allowed = ", ".join(allowed) if allowed else "none"
    return cfg.error(keys, f"unknown key {keys[-1]!r} {where}{hint}; allowed: {allowed}")


def validate_table(cfg: StudyConfig, keys: tuple, table: Table, data) -> dict:
    label = f"[{'.'.join(map(str, keys))}]" if keys else "the study file"
    if not isinstance(data, dict):
        raise cfg.error(keys, f"{label} must be a table, got {describe(data)}")
    extra_keys = list(table.keys(cfg)) if table.keys is not None else []
    out = {}
    for k, v in data.items():
        path = keys + (k,)
        if k in table.fields:
            spec = table.fields[k]
            out[k] = (validate_table(cfg, path, spec, v) if isinstance(spec, Table)
                      else _check_field(cfg, path, spec, v))
        elif table.extra is not None and (table.keys is None or k in extra_keys):
            out[k] = _check_field(cfg, path, table.extra, v)
        else:
            raise _unknown(cfg, path, list(table.fields) + extra_keys)
    for k, spec in table.fields.items():
        if k in out:
            continue
        if spec.required:
            what = "table" if isinstance(spec, Table) else "key"
            target = f"[{'.'.join(map(str, keys + (k,)))}]" if isinstance(spec, Table) else repr(k)
            raise cfg.error(keys, f"{label} is missing the required {what} {target}"
                            + (f" ({spec.doc})" if spec.doc else ""))
        if isinstance(spec, Table):
            out[k] = validate_table(cfg, keys + (k,), spec, {})
        elif spec.default is not None:
            out[k] = spec.default
    return out
