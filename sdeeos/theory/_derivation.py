r"""A tiny framework for runnable derivations: numbered steps, results and checks.

A derivation is a function ``derive(d: Derivation)`` that calls

* ``d.step(title, expr)``: one step of the argument (a SymPy expression, an ``Eq``, or text);
* ``d.result(title, expr)``: a result the package uses (printed highlighted);
* ``d.check(name, condition)``, ``d.check_equal(name, lhs, rhs)``, ``d.check_close(...)``:
  assertions.  A failing check does not stop the derivation (later steps are still shown) but
  makes the run fail: :func:`sdeeos.theory.derivations.run` returns exit status 1.

Output is plain text (``sympy.sstr``, one line per expression) or LaTeX (``--latex``: display
math ``$$ ... $$``, suitable for Markdown), written as the derivation proceeds.

>>> import io, sympy as sp
>>> out = io.StringIO()
>>> d = Derivation("demo", "A demo", stream=out)
>>> a = sp.Symbol("a", positive=True)
>>> d.step("square root of a square", sp.sqrt(a**2))
>>> d.check_equal("sqrt(a**2) = a for a > 0", sp.sqrt(a**2), a)
True
>>> d.check("2 > 1", 2 > 1)
True
>>> print(out.getvalue().strip())
[1] square root of a square
    a
  check: sqrt(a**2) = a for a > 0 ... ok
  check: 2 > 1 ... ok
>>> d.passed
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TextIO

import sympy as sp

__all__ = ["Derivation", "CheckRecord", "format_expr"]


@dataclasses.dataclass(frozen=True)
class CheckRecord:
    name: str
    passed: bool
    detail: str = ""


def format_expr(expr: Any, latex: bool = False) -> str:
    """One expression as a plain-text line (``sstr``; ``Eq`` as ``lhs = rhs``) or as LaTeX."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, (tuple, list)):
        return ",\\quad ".join(format_expr(e, latex) for e in expr) if latex else \
            ";   ".join(format_expr(e, latex) for e in expr)
    if isinstance(expr, sp.Equality):
        if latex:
            return f"{sp.latex(expr.lhs)} = {sp.latex(expr.rhs)}"
        return f"{sp.sstr(expr.lhs)} = {sp.sstr(expr.rhs)}"
    if isinstance(expr, (sp.Basic, sp.MatrixBase)):  # a mutable Matrix is no Basic
        return sp.latex(expr) if latex else sp.sstr(expr)
    return str(expr)


class Derivation:
    """Collects (and, given a ``stream``, prints as it goes) the steps and checks of one derivation."""

    def __init__(self, name: str, title: str, *, stream: TextIO | None = None, latex: bool = False):
        self.name = name
        self.title = title
        self.stream = stream
        self.latex = latex
        self.n_steps = 0
        self.checks: list[CheckRecord] = []
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------ output
    def _emit(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _emit_expr(self, expr) -> None:
        if expr is None:
            return
        if self.latex and not isinstance(expr, str):
            self._emit(f"$$ {format_expr(expr, True)} $$")
        else:
            self._emit("    " + format_expr(expr, False).replace("\n", "\n    "))

    def header(self) -> None:
        if self.latex:
            self._emit(f"## {self.title}  (`{self.name}`)\n")
        else:
            self._emit(f"{self.title}  [{self.name}]\n" + "=" * min(100, len(self.title) + len(self.name) + 4))

    def text(self, text: str) -> None:
        """A paragraph of explanation."""
        self._emit(text if self.latex else "    " + text.replace("\n", "\n    "))

    def step(self, title: str, expr=None) -> None:
        """One numbered step: a title and (optionally) an expression, ``Eq``, tuple of them or text."""
        self.n_steps += 1
        self._emit(f"**{self.n_steps}. {title}**" if self.latex else f"[{self.n_steps}] {title}")
        self._emit_expr(expr)

    def result(self, title: str, expr, *, key: str | None = None) -> None:
        """A result (stored under ``key`` if given) printed as a highlighted step."""
        self.n_steps += 1
        self._emit(f"**{self.n_steps}. RESULT: {title}**" if self.latex else f"[{self.n_steps}] RESULT: {title}")
        self._emit_expr(expr)
        if key is not None:
            self.results[key] = expr

    # ------------------------------------------------------------------ checks
    def check(self, name: str, condition, detail: str = "") -> bool:
        """Record ``bool(condition)``; a SymPy relational must evaluate to ``True`` to pass."""
        try:
            passed = bool(condition)
        except TypeError:  # an undecidable SymPy relational
            passed = False
            detail = (detail + " " if detail else "") + f"(undecidable: {condition})"
        self.checks.append(CheckRecord(name, passed, detail))
        status = "ok" if passed else "FAILED"
        line = f"  check: {name} ... {status}" + (f"  ({detail})" if detail else "")
        self._emit(f"- {line.strip()}" if self.latex else line)
        return passed

    def check_equal(self, name: str, lhs, rhs) -> bool:
        """Symbolic identity check: ``simplify(lhs - rhs) == 0`` (falls back to ``expand``/``factor``)."""
        diff = sp.sympify(lhs) - sp.sympify(rhs)
        ok = False
        for simplifier in (sp.expand, sp.simplify, lambda e: sp.simplify(sp.factor(sp.expand(e)))):
            if simplifier(diff) == 0:
                ok = True
                break
        return self.check(name, ok, "" if ok else f"difference {sp.sstr(sp.simplify(diff))}")

    def check_close(self, name: str, value, reference, *, rtol: float = 0.0, atol: float = 0.0) -> bool:
        """Numeric check ``|value - reference| <= atol + rtol*|reference|`` (state where tol comes from)."""
        value, reference = float(value), float(reference)
        ok = math.isfinite(value) and abs(value - reference) <= atol + rtol * abs(reference)
        detail = f"{value:.10g} vs {reference:.10g}, tol {atol + rtol * abs(reference):.3g}"
        return self.check(name, ok, detail)

    # ------------------------------------------------------------------ summary
    @property
    def failures(self) -> list[CheckRecord]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        n, f = len(self.checks), len(self.failures)
        if f:
            names = "; ".join(c.name for c in self.failures)
            return f"{self.name}: {f} of {n} checks FAILED: {names}"
        return f"{self.name}: all {n} checks passed"
