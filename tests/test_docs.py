"""The documentation: the Sphinx site builds with no warnings, citations resolve, help texts are plain.

* the site (``docs/``: theory, architecture, study gallery, API reference from the docstrings) is
  built with ``-W --keep-going``: any docstring that is not valid reST fails the test;
* every ``theory.md#<anchor>`` cited anywhere in the repository is a heading of ``docs/theory.md``;
* no file cites the reference notes the project does not ship;
* every study figure is in the gallery;
* ``--help`` of every subcommand shows no reST markup (``:math:`` roles, backquotes).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdeeos._cli import build_parser
from sdeeos._cli._plain import first_sentence, latex_to_text, numpydoc_parameters, plain_text
from sdeeos.theory import batch_noise, gd_stability, mean_square, minimalist
from sdeeos.theory import self_stabilization as ss
from sdeeos.theory.derivations import names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# what the project's own files may cite: these folders and the README
CITING = ("sdeeos", "tests", "derivations", "studies", "benchmarks", "scripts", "docs")


def _project_files():
    for folder in CITING:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".md", ".toml", ".rst", ".sh", ".txt") \
                    and "_build" not in path.parts:
                yield path
    yield ROOT / "README.md"


def _github_slug(heading: str) -> str:
    """The anchor GitHub and MyST (``myst_heading_anchors``) give a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _theory_anchors() -> set[str]:
    text = (DOCS / "theory.md").read_text(encoding="utf-8")
    return {_github_slug(m.group(1)) for m in re.finditer(r"^#{1,3} +(.+)$", text, flags=re.M)}


# ------------------------------------------------------------------------------------ citations
def test_theory_headings_give_the_cited_anchors():
    anchors = _theory_anchors()
    assert {"gap-closure", "reduced-model", "noise-kernel", "batch-noise", "minimalist"} <= anchors
    cited = {}
    for path in _project_files():
        for m in re.finditer(r"theory\.md#([a-z0-9\-]+)", path.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(m.group(1), path.relative_to(ROOT))
    missing = {a: str(p) for a, p in cited.items() if a not in anchors}
    assert not missing, f"cited anchors that docs/theory.md does not define: {missing}"


def test_no_file_cites_the_unshipped_reference_notes():
    name = "math" + ".md"  # spelled in two parts so that this file does not cite it
    offenders = [str(p.relative_to(ROOT)) for p in _project_files()
                 if name in p.read_text(encoding="utf-8", errors="replace")]
    assert not offenders, f"files citing {name}, which is not in the repository: {offenders}"


def test_every_derivation_named_in_theory_exists():
    text = (DOCS / "theory.md").read_text(encoding="utf-8")
    named = set(re.findall(r"[Dd]erivations? `([a-z0-9_]+)`", text))
    named |= set(re.findall(r"\(derivation `([a-z0-9_]+)`", text))
    assert named, "theory.md names no derivation"
    assert named <= set(names()), f"unknown derivations: {named - set(names())}"
    assert set(names()) <= named, f"derivations theory.md does not document: {set(names()) - named}"


def test_gallery_shows_every_study_figure():
    gallery = (DOCS / "gallery.md").read_text(encoding="utf-8")
    figures = sorted(p.name for p in (ROOT / "studies" / "figures").glob("*.png"))
    assert figures
    missing = [f for f in figures if f"../studies/figures/{f})" not in gallery]
    assert not missing, f"figures not in docs/gallery.md: {missing}"


def _theory_text() -> str:
    return re.sub(r"\s+", " ", (DOCS / "theory.md").read_text(encoding="utf-8"))


def test_numbers_quoted_in_the_theory_document_come_from_the_code():
    """Each reference value theory.md quotes is recomputed from the lambdified theory, to its quoted digits."""
    text = _theory_text()

    def quoted(value: float, digits: int) -> str:
        s = f"{value:.{digits}f}"
        assert s in text, f"theory.md does not quote {s}"
        return s

    quoted(float(ss.gap_leading(0.01, 1, 100, 10)), 0)                    # leading 25
    quoted(float(ss.gap_exact(0.01, 1, 100, 10)), 3)                      # closure 29.289
    quoted(float(ss.gap_corrected(0.01, 1, 100, 10)), 3)                  # corrected 29.311
    quoted(float(ss.cycle_period(0.01, 1.0)), 2)                          # 444.29 steps
    sizes = [50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2500]
    assert ", ".join(map(str, sizes)) in text
    a = [batch_noise.centred_coefficient(b, 5000, "without_replacement") for b in sizes]
    quoted(float(np.polyfit(np.log(sizes), np.log(a), 1)[0]), 3)          # slope -1.137
    h = np.random.default_rng(0).uniform(0.5, 3.0, 20)
    thresholds = [mean_square.one_dimensional_threshold(h, b, "without_replacement") for b in (1, 2, 5, 10, 20)]
    assert ",\\ ".join(f"{t:.4f}" for t in thresholds) in text             # 0.9330, ..., 1.1230
    quoted(float(minimalist.gf_limit_sharpness(6.0, 0.05)), 3)           # S_GF = 72.106
    assert gd_stability.heavy_ball_threshold(0.5) == 3.0 and "2+2\\beta" in text
    assert abs(gd_stability.nesterov_threshold(0.5) - 3 / 2) < 1e-12 and "\\frac{2+2\\beta}{1+2\\beta}" in text


# ------------------------------------------------------------------------------------ the site
@pytest.mark.skipif(importlib.util.find_spec("sphinx") is None or importlib.util.find_spec("myst_parser") is None,
                    reason="needs the docs extra (sphinx, myst-parser)")
def test_sphinx_site_builds_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    theory = (out / "theory.html").read_text(encoding="utf-8")
    for anchor in _theory_anchors():
        assert f'id="{anchor}"' in theory, f"theory.html lacks the anchor #{anchor}"
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in ("sdeeos.simulate", "sdeeos.theory.self_stabilization.gap_exact", "SelfStabilization"):
        assert name in api, f"API reference lacks {name}"
    gallery = (out / "gallery.html").read_text(encoding="utf-8")
    figures = list((ROOT / "studies" / "figures").glob("*.png"))
    assert all(f"_images/{f.name}" in gallery for f in figures)
    assert all((out / "_images" / f.name).is_file() for f in figures)


# ------------------------------------------------------------------------------------ help texts
def _all_parsers(parser: argparse.ArgumentParser, path=("sdeeos",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, path + (name,))


_MARKUP = re.compile(r":[a-z]+:`|`|\\(frac|tfrac|math|eta|alpha|beta|sigma|lambda|top|rm)\b")


def test_help_texts_have_no_rst_markup():
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 5  # sdeeos, its subcommands and the models of `simulate`
    bad = {}
    for path, parser in parsers:
        text = parser.format_help()
        hits = sorted({m.group(0) for m in _MARKUP.finditer(text)})
        if hits:
            bad[" ".join(path)] = hits
    assert not bad, f"raw markup in help texts: {bad}"


def test_simulate_help_documents_model_parameters_from_docstrings():
    parsers = dict(_all_parsers(build_parser()))
    text = parsers[("sdeeos", "simulate", "self-stabilization")].format_help()
    text = re.sub(r"\s+", " ", re.sub(r"-\n\s*", "-", text))  # undo argparse's wrapping
    assert "--eta ETA Step size (float > 0)" in text
    assert "--beta BETA Self-stabilization strength (float > 0)" in text
    assert "--sigma SIGMA Standard deviation of the projected gradient noise σ_u. (float >= 0) (default: 0.0)" in text
    assert "--x0 X0 Initial condition, the same for every trajectory" in text
    assert "--y0 Y0 y0; see --x0 (float)" in text  # one description for the pair, given once
    assert "model parameter" not in text
    listing = parsers[("sdeeos", "simulate")].format_help()
    assert "f(x,y)=1/4(x^2y^2-1)^2" in re.sub(r"\s+", "", listing)


# ------------------------------------------------------------------------------------ renderer
@pytest.mark.parametrize("tex, text", [
    (r"\frac{\eta\beta\sigma^2}{4\alpha}", "(ηβσ^2)/(4α)"),
    (r"\tfrac14(x^2y^2-1)^2", "1/4(x^2y^2-1)^2"),
    (r"\tfrac\beta2 x^2", "β/2 x^2"),
    (r"\sqrt{2\alpha/\beta}", "√(2α/β)"),
    (r"u^\top\Sigma_Bu", "uᵀΣ_Bu"),
    (r"\eta\lambda_{\max}<2", "ηλ_max<2"),
    (r"\Delta S_{\rm exact}", "ΔS_exact"),
    (r"dX=-\kappa(X-\mu)\,dt+s\,dW", "dX=-κ(X-μ) dt+s dW"),
    (r"\mathbb E\big[\lVert g\rVert^2\big]", "E[‖g‖^2]"),
    (r"\operatorname{Var}y\le\mathcal K", "Var y≤K"),
    (r"x^{2k}", "x^(2k)"),
])
def test_latex_to_text(tex, text):
    assert latex_to_text(tex) == text


def test_plain_text_removes_roles_and_literals():
    assert plain_text(r"see :func:`~sdeeos.theory.sde.ou_mean`, ``x0`` and `a`") == "see ou_mean, x0 and a"
    assert plain_text(r":class:`sdeeos.Model`") == "sdeeos.Model"
    assert plain_text(r":math:`\alpha` (:ref:`theory <gap-closure>`)") == "α (theory)"


def test_first_sentence_and_parameters():
    assert first_sentence("The reduced (x, y) model (see e.g. the theory). More.") == \
        "The reduced (x, y) model (see e.g. the theory)."
    assert first_sentence("E.g. a model, i.e. one class. Then more.") == "E.g. a model, i.e. one class."
    doc = "Summary.\n\nParameters\n----------\na, b : float\n    First. Second.\nc : int\n    Third.\n\n" \
          "Returns\n-------\nint\n    Never a parameter.\n"
    # one description for a group: given once, the others point to it (not repeated in --help)
    assert numpydoc_parameters(doc) == {"a": "First. (float)", "b": "b; see --a (float)", "c": "Third. (int)"}
    assert numpydoc_parameters("No sections.") == {}
