"""Print a model's symbolic step as code: Python for Numba kernels, C for CUDA kernels.

Common subexpressions of the update and the observables are shared (``sympy.cse``); every printed
statement is a plain scalar assignment so that the loops around it vectorise.
"""

from __future__ import annotations

import dataclasses
import re

import sympy as sp
from sympy.printing.c import C99CodePrinter
from sympy.printing.pycode import PythonCodePrinter

from .._contract import SymbolicStep

__all__ = ["PrintedStep", "code_names", "print_python", "print_python32", "print_numpy", "print_c", "print_step", "CPrinter"]


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


class _Numba32Printer(_NumbaPrinter):
    """The Numba printer for float32 kernels: every literal is a ``numpy.float32`` constant.

    Numba types ``float32 * 2.0`` as float64 (a Python float is a double), which would silently
    compute in double and round on store; float32 literals keep every operation in single
    precision, as the CUDA kernel's ``2.0F`` does.
    """

    @staticmethod
    def _lit(value) -> str:
        return f"numpy.float32({float(value)!r})"

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer and 1 <= abs(int(exp)) <= 8:
            b = self.parenthesize(base, 1000)
            prod = "*".join([b] * abs(int(exp)))
            return f"({prod})" if exp > 0 else f"({self._lit(1)}/({prod}))"
        if exp == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        return f"({self.parenthesize(base, 1000)}**{self.parenthesize(exp, 1000)})"

    def _print_Integer(self, expr):
        return self._lit(expr.p)

    def _print_Float(self, expr):
        return self._lit(float(expr))

    def _print_Rational(self, expr):
        return f"({self._lit(expr.p)}/{self._lit(expr.q)})"

    _print_Half = _print_Rational

    def _print_NumberSymbol(self, expr):
        return self._lit(expr.evalf(20))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_GoldenRatio = _print_Catalan = _print_NumberSymbol


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


#: the names of the common subexpressions ``sympy.cse`` takes out (``_tu0``, ``_to0``, ...)
TEMP_PREFIX = "_t"


def code_names(step: SymbolicStep) -> SymbolicStep:
    """``step`` with every symbol renamed for generated code: ``v<rank>_<name>`` (or ``V...``).

    ``rank`` (zero-padded) is the symbol's place in SymPy's order of the step's symbols, and the name
    is kept only as far as it is ASCII letters, digits and underscores.  So a model may name its
    symbols anything SymPy accepts (``lambda``, ``x_{1}``, ``α``, or a name an engine uses for its own
    variables, such as the Numba kernel's ``m``): each prints as an identifier in Python and C that no
    engine's own code uses.

    SymPy orders the terms of sums and the factors of products by their symbols' names, the
    common-subexpression temporaries' (``_tu0``) among them.  The ranks keep the order of the model's
    names, and ``V`` (before ``_``) or ``v`` (after it) keeps their order against the temporaries'; so the
    engines evaluate the same operations in the same order, with the same bits, as under the model's own
    names (tested on every built-in model; a name that itself starts with ``_t`` may sort differently).

    >>> import sympy as sp
    >>> from sdeeos.models import SymbolicStep
    >>> lam, x, big, z = sp.symbols("lambda x_{1} H z")
    >>> step = code_names(SymbolicStep(state=(x,), params=(lam, big), noise=(z,), update=(lam * x + big * z,),
    ...                                observables={}))
    >>> step.state_names, step.param_names, step.update
    (('v2_x_1',), ('v1_lambda', 'V0_H'), (V0_H*v3_z + v1_lambda*v2_x_1,))
    """
    symbols = sorted(set(step.state + step.params + step.noise), key=sp.default_sort_key)
    width = len(str(len(symbols) - 1))
    new = {s: type(s)(f"{'V' if s.name < TEMP_PREFIX else 'v'}{rank:0{width}d}_{re.sub(r'[^A-Za-z0-9_]', '', s.name)}",
                      **s.assumptions0)
           for rank, s in enumerate(symbols)}

    def renamed(expr):
        return sp.sympify(expr).xreplace(new)

    return SymbolicStep(state=tuple(new[s] for s in step.state), params=tuple(new[s] for s in step.params),
                        noise=tuple(new[s] for s in step.noise), update=tuple(map(renamed, step.update)),
                        observables={k: renamed(e) for k, e in step.observables.items()})


def print_step(step: SymbolicStep, printer, prefix: str) -> PrintedStep:
    def cse(exprs, tag):
        symbols = sp.numbered_symbols(f"{prefix}{tag}")
        temps, reduced = sp.cse(list(exprs), symbols=symbols, optimizations="basic")
        return tuple((str(s), printer.doprint(e)) for s, e in temps), tuple(printer.doprint(e) for e in reduced)

    ut, up = cse(step.update, "u")
    ot, op = cse(step.observables.values(), "o")
    return PrintedStep(update_temps=ut, update=up, obs_temps=ot, observables=op)


def print_python(step: SymbolicStep) -> PrintedStep:
    return print_step(step, _NumbaPrinter({"fully_qualified_modules": True}), TEMP_PREFIX)


def print_python32(step: SymbolicStep) -> PrintedStep:
    """The step printed for a float32 Numba kernel (same CSE and operation order as `print_python`)."""
    return print_step(step, _Numba32Printer({"fully_qualified_modules": True}), TEMP_PREFIX)


def print_numpy(step: SymbolicStep) -> PrintedStep:
    return print_step(step, _NumpyPrinter({"fully_qualified_modules": True}), TEMP_PREFIX)


def print_c(step: SymbolicStep) -> PrintedStep:
    return print_step(step, CPrinter(), TEMP_PREFIX)
