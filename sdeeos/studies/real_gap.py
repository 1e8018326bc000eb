r"""Study kind ``real_gap`` (``studies/real_gap.toml``): the measured SGD sharpness gap of one network.

One setting of the ``regime`` study (`sdeeos.studies.regime`, same keys and outputs): the gap
measured from :math:`2/\eta` and from :math:`S_{\rm GD}` against the 1-D prediction
:math:`\eta G_{11}\sigma_1^2/(4\alpha)` with the *plateau* α (the gradient-flow sharpening rate, and α
with the top-k eigenspace projected out of :math:`\nabla L`) and against the k-direction closure
(docs/theory.md#k-directions).  The earlier version took α from GD's early sharpening phase, about
twice the plateau rate, and is gone.  Needs the ``torch`` extra.
"""

from __future__ import annotations

from .regime import SCHEMA, plot, run

__all__ = ["SCHEMA", "run", "plot"]
