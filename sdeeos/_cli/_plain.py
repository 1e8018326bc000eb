r"""reStructuredText docstrings as plain text for ``--help``: math roles rendered, markup removed.

Help texts are generated from docstrings (model classes, their ``Parameters`` sections), which are
written for Sphinx.  A terminal shows them as text: ``:math:`` roles become readable formulas
(Greek letters, ``a/b`` fractions, ``√``, ``ᵀ``), other roles and literals lose their quotes.

>>> plain_text(r"loss :math:`f(x,y)=\tfrac14(x^2y^2-1)^2` of ``Minimalist``")
'loss f(x,y)=1/4(x^2y^2-1)^2 of Minimalist'
>>> plain_text(r":math:`\Delta S=\frac{\eta\beta\sigma^2}{4\alpha}`, see :func:`~sdeeos.theory.self_stabilization.gap_leading`")
'ΔS=(ηβσ^2)/(4α), see gap_leading'
>>> plain_text(r":math:`\sqrt{2\alpha/\beta}` and :math:`u^\top\Sigma_Bu`")
'√(2α/β) and uᵀΣ_Bu'
"""

from __future__ import annotations

import re

__all__ = ["plain_text", "latex_to_text", "first_sentence", "numpydoc_parameters"]

_SYMBOLS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "Gamma": "Γ", "delta": "δ", "Delta": "Δ", "epsilon": "ε",
    "varepsilon": "ε", "zeta": "ζ", "eta": "η", "theta": "θ", "Theta": "Θ", "kappa": "κ", "lambda": "λ",
    "Lambda": "Λ", "mu": "μ", "nu": "ν", "xi": "ξ", "Xi": "Ξ", "pi": "π", "rho": "ρ", "sigma": "σ",
    "Sigma": "Σ", "tau": "τ", "phi": "φ", "varphi": "φ", "Phi": "Φ", "chi": "χ", "psi": "ψ", "omega": "ω",
    "Omega": "Ω", "nabla": "∇", "partial": "∂", "infty": "∞", "cdot": "·", "times": "×", "circ": "∘",
    "otimes": "⊗", "le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "ne": "≠", "neq": "≠", "approx": "≈",
    "sim": "~", "to": "→", "mapsto": "↦", "rightarrow": "→", "Rightarrow": "⇒", "iff": "⇔",
    "Longleftrightarrow": "⇔", "in": "∈", "top": "ᵀ", "pm": "±", "mp": "∓", "ll": "≪", "gg": "≫",
    "lesssim": "≲", "gtrsim": "≳", "dagger": "†", "perp": "⊥", "ldots": "…", "dots": "…", "cdots": "…",
    "sum": "Σ", "prod": "∏", "int": "∫", "equiv": "≡", "propto": "∝", "lVert": "‖", "rVert": "‖",
    "Vert": "‖", "lvert": "|", "rvert": "|", "langle": "⟨", "rangle": "⟩", "succeq": "⪰", "preceq": "⪯",
    "{": "{", "}": "}", "|": "‖", "%": "%", "_": "_", "&": "&",
}
# commands dropped with no output (sizes, spacing, styles that take no argument)
_DROP = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "displaystyle",
         "textstyle", "rm", "bf", "it", "!", "nonumber", "limits"}
# spacing commands: one space
_SPACES = {"quad", "qquad", ",", ";", ":", " "}
# commands whose one argument is printed as is
_KEEP_ARG = {"mathbb", "mathcal", "mathrm", "mathbf", "mathit", "boldsymbol", "operatorname", "text",
             "textrm", "textbf", "mathsf", "hat", "bar", "tilde", "widehat", "overline", "vec"}
_FRACS = {"frac", "tfrac", "dfrac"}
_ROLE = re.compile(r":(?:[a-z]+:)?([a-z]+):`([^`]*)`")
_LITERAL = re.compile(r"``(.*?)``|`([^`]*)`")


def _argument(s: str, i: int) -> tuple[str, int]:
    """One TeX argument of ``s`` from position ``i``: a braced group, a command or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return "", i
    if s[i] == "{":
        depth, j = 0, i
        while j < len(s):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
            j += 1
        return s[i + 1:], len(s)
    if s[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.) *", s[i:])
        return m.group(0).rstrip() or "\\ ", i + len(m.group(0))
    return s[i], i + 1


def _grouped(text: str) -> str:
    """``text`` parenthesised unless it is one symbol, a number or a plain name."""
    return text if re.fullmatch(r"\d+(\.\d+)?|\w", text) else f"({text})"


def latex_to_text(tex: str) -> str:
    """A TeX formula (the body of a ``:math:`` role) as readable Unicode text."""
    out, i = [], 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            m = re.match(r"\\([A-Za-z]+ *|.)", tex[i:])  # TeX drops the spaces after a command word
            name, i = m.group(1).strip() or " ", i + len(m.group(0))
            if name in _FRACS:
                num, i = _argument(tex, i)
                den, i = _argument(tex, i)
                out.append(f"{_grouped(latex_to_text(num))}/{_grouped(latex_to_text(den))}")
            elif name == "sqrt":
                arg, i = _argument(tex, i)
                out.append("√" + _grouped(latex_to_text(arg)))
            elif name in _KEEP_ARG:
                arg, i = _argument(tex, i)
                out.append(latex_to_text(arg))
                if name == "operatorname" and re.match(r"[A-Za-z\\]", tex[i:i + 1]):
                    out.append(" ")  # \operatorname{Var}y -> "Var y"
            elif name in _SPACES:
                out.append(" ")
            elif name in _SYMBOLS:
                out.append(_SYMBOLS[name])
            elif name not in _DROP:
                out.append(name)  # \max, \log, \min, \exp, \det, ...
        elif ch == "^" and tex[i + 1:i + 2] in ("\\", "{"):
            arg, i = _argument(tex, i + 1)
            text = latex_to_text(arg)
            out.append("ᵀ" if text == "ᵀ" else "^" + _grouped(text))
        elif ch == "_" and tex[i + 1:i + 2] in ("\\", "{"):
            arg, i = _argument(tex, i + 1)
            text = latex_to_text(arg)
            out.append("_" + (text if re.fullmatch(r"\w+", text) else f"({text})"))
        elif ch in "{}":
            i += 1
        elif ch == "~":
            out.append(" ")
            i += 1
        else:
            out.append(ch)
            i += 1
    return re.sub(r"\s+", " ", "".join(out)).strip()


def plain_text(rst: str) -> str:
    """reST inline markup as plain text: ``:math:`` rendered, other roles and literals unquoted."""
    def role(m: re.Match) -> str:
        kind, body = m.group(1), m.group(2)
        if kind == "math":
            return latex_to_text(body)
        body = re.sub(r"\s*<[^>]*>$", "", body)  # :ref:`title <target>` -> title
        return body.rsplit(".", 1)[-1] if body.startswith("~") else body
    text = _ROLE.sub(role, rst)
    text = _LITERAL.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.M)  # "Example::" introduces a literal block
    return re.sub(r"^::$\n?", "", text, flags=re.M).replace("\\ ", "")


def first_sentence(paragraph: str) -> str:
    """The first sentence of a paragraph (up to ``. `` outside parentheses), whitespace collapsed."""
    text = re.sub(r"\s+", " ", paragraph).strip()
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1] == " ") \
                and not re.search(r"(?i)\b(e\.g|i\.e|cf|etc|vs)$", text[:i]):
            return text[:i + 1]
    return text


def _split_top_level(text: str, sep: str = ", ") -> list[str]:
    """``text`` split at ``sep`` outside parentheses and brackets."""
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(ch, 0)
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[last:i])
            last = i + len(sep)
    return parts + [text[last:]]


def numpydoc_parameters(doc: str) -> dict[str, str]:
    """Parameter name -> first sentence of its description and its type, from a numpydoc ``Parameters`` section.

    A group ``a, b : type`` whose description is a list of as many short items gives each name its item.

    >>> numpydoc_parameters('''Summary.
    ...
    ... Parameters
    ... ----------
    ... eta, alpha : float > 0
    ...     Step size, sharpening rate. More text.
    ... sigma : float
    ...     Noise, of the step.
    ... ''')
    {'eta': 'Step size (float > 0)', 'alpha': 'Sharpening rate (float > 0)', 'sigma': 'Noise, of the step. (float)'}
    """
    lines = doc.splitlines()
    try:
        start = next(k for k in range(len(lines) - 1)
                     if lines[k].strip() == "Parameters" and set(lines[k + 1].strip()) == {"-"})
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    kind = ""
    body: list[str] = []

    def flush():
        if not names or not body:
            return
        sentence = first_sentence(" ".join(body))
        items = _split_top_level(sentence.rstrip("."))
        if len(names) > 1 and len(items) == len(names) and all(len(i.split()) <= 4 for i in items):
            texts = [i[:1].upper() + i[1:] for i in items]  # "eta, alpha : ..." / "Step size, rate."
        else:  # one description for the group: given once, the others point to it
            texts = [sentence] + [f"{n}; see --{names[0].replace('_', '-')}" for n in names[1:]]
        out.update({n: t + (f" ({kind})" if kind else "") for n, t in zip(names, texts)})

    for k in range(start + 2, len(lines)):
        line = lines[k]
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            if set(line.strip()) <= set("-=~") or line.strip()[0] in ">.":
                break  # next section, a doctest or a directive
            if k + 1 < len(lines) and lines[k + 1].strip() and set(lines[k + 1].strip()) <= set("-="):
                break  # a new section title
            flush()
            head, _, kind = line.partition(":")
            names, kind, body = [n.strip() for n in head.split(",")], kind.strip(), []
        else:
            body.append(line.strip())
    flush()
    return out
