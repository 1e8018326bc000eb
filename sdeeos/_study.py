"""Declarative studies: TOML files validated against a schema, run by a registered runner.

A study file names its ``kind``; the runner registered for that kind (`register_study_runner`)
turns the validated configuration into sweeps, a dataset and figures::

    kind = "sharpness_gap"
    title = "Sharpness gap vs batch size"

    [model]
    alpha = 1.0
    ...

Every table and key is checked against the kind's schema before anything runs: an unknown key, a
missing parameter or a wrong type raises `ParameterError` naming the key and the file line
(``studies/x.toml:12: [run] n_traj must be an integer, got 2.5``); the CLI prints that one line and
exits with status 2.

Runners have the signature ``runner(config, out_dir, *, progress=True, scheduler=None) ->
xarray.Dataset``; runners written without ``scheduler`` (``runner(config, out_dir, *,
progress=True)``) are called without it, and asking them for a scheduler is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from ._errors import ParameterError
from ._storelock import StoreLock
from ._validation import check_nonnegative

__all__ = [
    "Field",
    "Table",
    "StudyConfig",
    "StudyRunner",
    "STUDY_RUNNERS",
    "register_study_runner",
    "load_study",
    "run_study",
    "study_kinds",
]


# --------------------------------------------------------------------------- schema
@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a study file.

    ``type`` is one of ``"int"``, ``"float"`` (an int is accepted and converted), ``"number"``,
    ``"str"``, ``"bool"``, ``"list[int]"``, ``"list[float]"``, ``"list[number]"``, ``"list[str]"``,
    ``"any"``.  ``check`` receives the converted value and returns it (or raises
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
    min_len: int = 0
    check: Callable[[Any], Any] | None = None


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
    "name": Field("str", doc="base name of the dataset and figures (default: the file's stem)"),
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
    "list[str]": "a list of strings", "any": "any value",
}


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


def _describe(value) -> str:
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
            items = value
        else:
            value = _convert_scalar(field.type, value)
            items = [value]
    except TypeError:
        raise cfg.error(keys, f"{label} must be {_TYPE_NAMES[field.type]}, got {_describe(value)}") from None
    for v in items:
        if field.choices is not None and v not in field.choices:
            raise cfg.error(keys, f"{label} must be one of {', '.join(map(repr, field.choices))}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo_bad = field.low is not None and (v < field.low or (field.low_open and v == field.low))
            hi_bad = field.high is not None and v > field.high
            if lo_bad or hi_bad:
                lo = "-inf" if field.low is None else field.low
                hi = "inf" if field.high is None else field.high
                br = "(" if field.low_open else "["
                raise cfg.error(keys, f"{label} must be in {br}{lo}, {hi}], got {v!r}")
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


def _validate_table(cfg: StudyConfig, keys: tuple, table: Table, data) -> dict:
    label = f"[{'.'.join(map(str, keys))}]" if keys else "the study file"
    if not isinstance(data, dict):
        raise cfg.error(keys, f"{label} must be a table, got {_describe(data)}")
    extra_keys = list(table.keys(cfg)) if table.keys is not None else []
    out = {}
    for k, v in data.items():
        path = keys + (k,)
        if k in table.fields:
            spec = table.fields[k]
            out[k] = (_validate_table(cfg, path, spec, v) if isinstance(spec, Table)
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
            out[k] = _validate_table(cfg, keys + (k,), spec, {})
        elif spec.default is not None:
            out[k] = spec.default
    return out


# --------------------------------------------------------------------------- registry
@dataclasses.dataclass(frozen=True)
class StudyRunner:
    name: str
    func: Callable
    schema: Mapping[str, Field | Table] | None
    description: str

    @property
    def accepts_scheduler(self) -> bool:
        params = inspect.signature(self.func).parameters
        return "scheduler" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


#: kind -> runner.  The built-in kinds are registered when `sdeeos._studies` is imported.
STUDY_RUNNERS: dict[str, StudyRunner] = {}


def register_study_runner(name: str, runner: Callable | None = None, *,
                          schema: Mapping[str, Field | Table] | None = None, description: str = ""):
    """Register ``runner`` for study files with ``kind = name`` (usable as a decorator).

    ``schema`` (table name or key -> `Field`/`Table`, besides the common keys ``kind``, ``name``,
    ``title``, ``description``) makes every key of such files checked before the runner is
    called, with file:line in every error.  Without a schema, the runner gets the parsed file as
    it is and checks it itself.
    """
    def deco(func: Callable) -> Callable:
        if not callable(func):
            raise TypeError("a study runner must be callable")
        doc = description or (inspect.getdoc(func) or "").split("\n")[0]
        STUDY_RUNNERS[name] = StudyRunner(name=name, func=func, schema=schema, description=doc)
        return func

    return deco(runner) if runner is not None else deco


def _ensure_builtin() -> None:
    from . import _studies  # noqa: F401 - registers the built-in kinds


def study_kinds() -> dict[str, str]:
    """Registered kinds and their one-line descriptions."""
    _ensure_builtin()
    return {k: r.description for k, r in sorted(STUDY_RUNNERS.items())}


def _deep_update(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study(path: str | os.PathLike, *, quick: bool = False) -> StudyConfig:
    """Read and validate a study file; every error names the key and its line.

    The runner is named by ``kind`` (or ``study``, the key of the real-network study files).  A
    ``[quick]`` table holds overrides for a small smoke-test configuration, applied (merged table by
    table) when ``quick`` is true.  Runners registered without a schema get the file's keys as they
    are, less ``kind``/``study`` and ``quick``.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParameterError(f"cannot read study file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path}: invalid TOML: {exc}") from None
    lines = toml_key_lines(text)
    cfg = StudyConfig(data, path, lines)
    key = "kind" if "kind" in data or "study" not in data else "study"
    if key not in data:
        raise cfg.error((), "the study file has no 'kind' (one of: " + ", ".join(study_kinds()) + ")")
    kind = data[key]
    if not isinstance(kind, str):
        raise cfg.error((key,), f"{key} must be a string, got {_describe(kind)}")
    _ensure_builtin()
    if kind not in STUDY_RUNNERS:
        close = difflib.get_close_matches(kind, list(STUDY_RUNNERS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise cfg.error((key,), f"unknown study kind {kind!r}{hint}; known: {', '.join(sorted(STUDY_RUNNERS))}")
    runner = STUDY_RUNNERS[kind]
    overrides = data.pop("quick", None)
    if overrides is not None and not isinstance(overrides, dict):
        raise cfg.error(("quick",), f"quick must be a table of overrides, got {_describe(overrides)}")
    if quick:
        if not overrides:
            raise cfg.error((), "--quick needs a [quick] table of overrides in the study file")
        data = _deep_update(data, overrides)
        # an overridden key is reported at its line in [quick]
        for k, v in list(lines.items()):
            if k[:1] == ("quick",) and len(k) > 1:
                lines[k[1:]] = v
    if runner.schema is None:
        validated = {k: v for k, v in data.items() if k not in ("kind", "study")}
        name = validated.get("name", path.stem)
        if not isinstance(name, str):
            raise cfg.error(("name",), f"name must be a string, got {_describe(name)}")
    else:
        if key == "study":
            data = {"kind": data.pop("study"), **data}
        validated = _validate_table(cfg, (), Table(fields={**COMMON_FIELDS, **runner.schema}), data)
        validated.setdefault("name", path.stem)
        name = validated["name"]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise cfg.error(("name",), f"name must use only letters, digits, '_', '-', '.', got {name!r}")
    return StudyConfig(validated, path, lines, kind=kind, name=name, quick=quick)


def run_study(study, out_dir: str | os.PathLike | None = None, *, progress: bool = True, scheduler=None,
              quick: bool = False, wait_for_lock: float = 0.0):
    """Run a study file (path or `StudyConfig`); write its dataset and figures under ``out_dir``.

    ``out_dir`` defaults to ``out/<name>`` (``out/<name>-quick`` with the ``[quick]`` overrides).
    Returns the runner's dataset.  One process writes ``out_dir`` at a time (``wait_for_lock``:
    seconds to wait for another one to finish; default 0, fail at once naming it).
    """
    wait_for_lock = check_nonnegative("wait_for_lock", wait_for_lock)
    cfg = study if isinstance(study, StudyConfig) else load_study(study, quick=quick)
    runner = STUDY_RUNNERS[cfg.kind]
    out = Path(out_dir) if out_dir is not None else Path("out") / (cfg.name + ("-quick" if cfg.quick else ""))
    kwargs: dict[str, Any] = {"progress": progress}
    if runner.accepts_scheduler:
        kwargs["scheduler"] = scheduler
    elif scheduler is not None:
        raise ParameterError(f"study kind {cfg.kind!r} runs in this process and takes no scheduler; "
                             "drop --scheduler")
    check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    # one study writes a folder at a time: a second run fails at once, naming the first
    with StoreLock(out, wait=wait_for_lock, what="study output folder", lock_file=out / ".sdeeos-study.lock"):
        return runner.func(cfg, out, **kwargs)


def check_output_folder(out: Path) -> None:
    """``--out`` must be a folder (existing or creatable), never a file."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ParameterError(f"out {str(out)!r} must be a folder, but {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParameterError(f"out {str(out)!r} cannot be written: {str(probe)!r} is not a writable folder")

