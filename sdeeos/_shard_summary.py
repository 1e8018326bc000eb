r"""Summary mode of a sharded run: each shard reduced to exact sums where it ran.

A shard (or a chunk of one) is collected by its model as usual (``model.collect``), and then
reduced to a `ShardSummary`: the integer counts of its summary (``n_diverged``, ``n_alive``, ...)
and, for every ensemble mean and standard error, the `EnsembleStat` (count, exact sum, exact sum
of squares) of the per-trajectory variable it was computed from, over the surviving
trajectories.  Merging adds counts and stats, so the merged summary is the same, bit for bit, as
the summary `simulate` computes from the whole ensemble's arrays (`ensemble_summary` is computed
from the same exact sums), whatever the split.  Diverged trajectories are counted, never summed.

The per-trajectory variable behind a summary is found by the naming convention of the models
(``<obs>_mean`` and ``<obs>_mean_stderr`` from ``<obs>_time_mean``, ``<obs>_meansq`` from
``<obs>_time_meansq``, ``<x>_mean`` from ``<x>``, ``<obs>_final_mean`` from ``final_<obs>``),
and every shard checks that the stat reproduces the model's own value exactly; a summary that
cannot be reduced this way refuses summary mode in one line instead of guessing.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from ._errors import ParameterError
from ._exact_sums import EnsembleStat

__all__ = ["ShardSummary"]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _candidates(key: str) -> tuple[str, str, list[str]]:
    """``(stat kind, key, per-trajectory variables it may come from)`` for a summary key."""
    kind = "stderr" if key.endswith("_stderr") else "mean"
    part = key[: -len("_stderr")] if kind == "stderr" else key
    names: list[str] = []
    if part.endswith("_meansq"):
        names.append(part[: -len("_meansq")] + "_time_meansq")
    elif part.endswith("_mean"):
        base = part[: -len("_mean")]
        names += [base + "_time_mean", base]
        if base.endswith("_final"):
            names.append("final_" + base[: -len("_final")])
    return kind, key, names


def _per_traj(entry) -> np.ndarray | None:
    dims = entry[0]
    if dims not in ("traj", ("traj",)):
        return None
    values = np.asarray(entry[1])
    return values if values.dtype.kind == "f" else None


@dataclasses.dataclass(frozen=True)
class ShardSummary:
    """Counts and exact stats of some trajectories of a run; ``+`` merges two (any order)."""

    n_traj: int
    counts: dict          # summary key -> int
    stats: dict           # per-trajectory variable -> EnsembleStat over the surviving trajectories
    keys: dict            # summary key -> (variable, "mean" or "stderr")

    @classmethod
    def of_run(cls, spec, run, model_name: str = "") -> "ShardSummary":
        """Collect ``run`` (trajectories of ``spec``) with its model and reduce it."""
        data, _, summary = spec.model.collect(spec, run)
        counted = run.alive.astype(bool)
        counts, stats, keys = {}, {}, {}
        for key, value in summary.items():
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ParameterError(f"summary mode cannot reduce the summary {key!r} of model {spec.model.name!r}; "
                                     "use per_trajectory=True")
            if isinstance(value, (int, np.integer)):
                counts[key] = int(value)
                continue
            kind, _, names = _candidates(key)
            found = None
            for name in names:
                values = _per_traj(data[name]) if name in data else None
                if values is None:
                    continue
                if name not in stats:
                    stats[name] = EnsembleStat.of(values, counted & np.isfinite(values))
                stat = stats[name]
                if _same(float(value), stat.mean() if kind == "mean" else stat.stderr()):
                    found = name
                    break
            if found is None:
                raise ParameterError(
                    f"summary mode cannot reduce the summary {key!r} of model {spec.model.name!r} (no per-trajectory "
                    "variable reproduces it); use per_trajectory=True")
            keys[key] = (found, kind)
        used = {name for name, _ in keys.values()}
        return cls(spec.n_traj, counts, {k: v for k, v in stats.items() if k in used}, keys)

    def __add__(self, other: "ShardSummary") -> "ShardSummary":
        if self.keys != other.keys or set(self.counts) != set(other.counts):
            raise ValueError("shard summaries of different runs cannot be merged")
        return ShardSummary(self.n_traj + other.n_traj,
                            {k: v + other.counts[k] for k, v in self.counts.items()},
                            {k: v + other.stats[k] for k, v in self.stats.items()}, self.keys)

    def summary(self) -> dict:
        """The scalar summaries, as the model's ``collect`` would give them for these trajectories."""
        out: dict = {}
        for key, (name, kind) in self.keys.items():
            stat = self.stats[name]
            out[key] = stat.mean() if kind == "mean" else stat.stderr()
        out.update(self.counts)
        return out

    def to_arrays(self) -> dict:
        """One 0-d string array (for a shard checkpoint); `from_arrays` reads it back exactly."""
        doc = {"n_traj": self.n_traj, "counts": self.counts, "keys": self.keys,
               "stats": {k: v.to_json() for k, v in self.stats.items()}}
        return {"shard_summary": np.array(json.dumps(doc, sort_keys=True))}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "ShardSummary":
        doc = json.loads(str(arrays["shard_summary"]))
        return cls(int(doc["n_traj"]), {k: int(v) for k, v in doc["counts"].items()},
                   {k: EnsembleStat.from_json(v) for k, v in doc["stats"].items()},
                   {k: (v[0], v[1]) for k, v in doc["keys"].items()})
