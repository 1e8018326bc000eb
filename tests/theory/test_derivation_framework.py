"""The Derivation object: steps, checks, output formats."""

from __future__ import annotations

import io

import sympy as sp

from sdeeos.theory._derivation import Derivation, format_expr


def test_checks_record_pass_and_fail():
    d = Derivation("t", "T", stream=io.StringIO())
    a = sp.Symbol("a", positive=True)
    assert d.check_equal("identity", (a + 1) ** 2, a**2 + 2 * a + 1)
    assert not d.check_equal("wrong identity", (a + 1) ** 2, a**2 + 1)
    assert d.check_close("close", 1.0 + 1e-12, 1.0, rtol=1e-10)
    assert not d.check_close("nan is never close", float("nan"), 1.0, atol=1.0)
    assert not d.check("undecidable relational fails", a > sp.Symbol("b"))
    assert [c.name for c in d.failures] == ["wrong identity", "nan is never close", "undecidable relational fails"]
    assert not d.passed and "3 of 5 checks FAILED" in d.summary()


def test_latex_and_plain_formats():
    x = sp.Symbol("x")
    assert format_expr(sp.Eq(x, 2)) == "x = 2"
    assert format_expr(sp.Eq(x, sp.sqrt(2)), latex=True) == "x = \\sqrt{2}"
    out = io.StringIO()
    d = Derivation("t", "T", stream=out, latex=True)
    d.result("r", sp.Eq(x, 1), key="r")
    assert "$$ x = 1 $$" in out.getvalue() and d.results["r"] == sp.Eq(x, 1)
    # a (mutable) Matrix is LaTeX too, not its repr ``Matrix([[...]])``
    m = sp.Matrix([[x, 1], [0, 2]])
    assert format_expr(m, latex=True) == sp.latex(m) and "\\begin{matrix}" in format_expr(m, latex=True)
    assert format_expr(m) == "Matrix([\n[x, 1],\n[0, 2]])"
