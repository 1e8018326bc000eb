"""Print a model's symbolic step as code: Python for Numba kernels, C for CUDA kernels.

Common subexpressions of the update and the observables are shared (``sympy.cse``); every printed
statement is a plain scalar assignment so that the loops around it vectorise.
"""

from __future__ import annotations

import dataclasses

import sympy as sp
from sympy.printing.c import C99CodePrinter
from sympy.printing.pycode import PythonCodePrinter

from .._contract import SymbolicStep

__all__ = ["PrintedStep", "print_python", "print_numpy", "print_c", "print_step", "CPrinter"]


@dataclasses.dataclass(frozen=True)
class PrintedStep:
    """Scalar code for one step: temporaries, then new state values, then observable values."""

    update_temps: tuple[tuple[str, str], ...]   # (name, code) shared by the update expressions
    update: tuple[str, ...]                     # code of each new state value
    obs_temps: tuple[tuple[str, str], ...]
    observables: tuple[str, ...]                # code of each observable (of the current state)


def _small_int_power(printer, expr):
    """``x**n`` for small integer n as repeated products (no ``pow`` call: vectorises, exact)."""
    base, exp = expr.args
    if exp.is_Integer and 1 <= abs(int(exp)) <= 8:
        b = printer.parenthesize(base, 1000)  # always parenthesise compound bases
        prod = "*".join([b] * abs(int(exp)))
        return f"({prod})" if exp > 0 else f"(1.0/({prod}))"
    return None


class _NumbaPrinter(PythonCodePrinter):
    """Python printer whose output Numba compiles: ``math.*`` functions, builtin min/max."""

    def _print_Pow(self, expr, rational=False):
        return _small_int_power(self, expr) or super()._print_Pow(expr, rational=rational)

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Integer(self, expr):
        return f"{float(expr.p)!r}"  # float literals: no int/float unification in Numba

    def _print_Float(self, expr):
        return repr(float(expr))  # shortest string that round-trips: the literal is exact

    def _print_Rational(self, expr):
        return f"({float(expr.p)!r}/{float(expr.q)!r})"


class _NumpyPrinter(_NumbaPrinter):
    """The same arithmetic, in the same order, on arrays (``numpy.minimum`` for ``Min``).

    Elementary functions (``math.sqrt``, ``math.exp``, ...) become their ``numpy`` ufuncs, which
    take arrays; ``sqrt`` is correctly rounded in both, so the engines still agree bit for bit there.
    """

    def _module_format(self, fqn, register=True):
        if fqn.startswith("math."):
            fqn = "numpy." + fqn[len("math."):]
        return super()._module_format(fqn, register=register)

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"numpy.minimum({out}, {a})"
        return out

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"numpy.maximum({out}, {a})"
        return out


class CPrinter(C99CodePrinter):
    def _print_Pow(self, expr, rational=False):
        return _small_int_power(self, expr) or super()._print_Pow(expr)

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"fmin({out}, {a})"
        return out

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"fmax({out}, {a})"
        return out


def print_step(step: SymbolicStep, printer, prefix: str) -> PrintedStep:
    def cse(exprs, tag):
        symbols = sp.numbered_symbols(f"{prefix}{tag}")
        temps, reduced = sp.cse(list(exprs), symbols=symbols, optimizations="basic")
        return tuple((str(s), printer.doprint(e)) for s, e in temps), tuple(printer.doprint(e) for e in reduced)

    ut, up = cse(step.update, "u")
    ot, op = cse(step.observables.values(), "o")
    return PrintedStep(update_temps=ut, update=up, obs_temps=ot, observables=op)


def print_python(step: SymbolicStep) -> PrintedStep:
    return print_step(step, _NumbaPrinter({"fully_qualified_modules": True}), "_t")


def print_numpy(step: SymbolicStep) -> PrintedStep:
    return print_step(step, _NumpyPrinter({"fully_qualified_modules": True}), "_t")


def print_c(step: SymbolicStep) -> PrintedStep:
    return print_step(step, CPrinter(), "_t")
