"""Theory: SymPy derivations and the numeric predictions lambdified from them.

Each submodule derives its results from the model's update expressions; numeric functions are
generated from those expressions with ``sympy.lambdify`` and never retyped by hand.
"""

from . import self_stabilization

__all__ = ["self_stabilization"]
