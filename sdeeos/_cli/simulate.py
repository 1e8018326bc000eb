"""``sdeeos simulate MODEL --param ... [--out run.nc] [--json]``.

Model options are generated from each registered model's constructor signature, so a new model
needs no CLI code.  Their help comes from the model's ``cli_help`` or, failing that, from the
``Parameters`` section of its docstring; docstrings are written for Sphinx and shown here as plain
text (`sdeeos._cli._plain`).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shutil
import sys
from pathlib import Path

from .._dask_connect import DEFAULT_NO_WORKERS_TIMEOUT_S
from .._errors import ParameterError
from .._io import check_checkpoint_path, check_output_path, write_dataset
from .._rng import RNGS
from .._simulate import simulate
from ..engines import ENGINES
from ..models import MODEL_REGISTRY
from ._plain import first_sentence, numpydoc_parameters, plain_text

__all__ = ["register", "summary_dict", "BACKENDS"]

#: the simulation backends (cupy needs an NVIDIA GPU and the gpu extra)
BACKENDS = tuple(ENGINES)


def _model_options(parser: argparse.ArgumentParser, cls) -> tuple[list[str], dict[str, str]]:
    """One option per constructor parameter; returns the names and {name: option} of the renamed
    required ones (checked after parsing: their old spelling is a hidden alias)."""
    names, renamed_required = [], {}
    sig = inspect.signature(cls.__init__)
    helps = {**numpydoc_parameters(inspect.getdoc(cls) or ""), **getattr(cls, "cli_help", {})}
    # cli_names: a clearer option name than the parameter's (QuadraticRegression's P -> --n-params)
    renames, choices = getattr(cls, "cli_names", {}), getattr(cls, "cli_choices", {})
    for name, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = p.annotation if p.annotation in (int, float, str, "int", "float", "str") else float
        kind = {"int": int, "float": float, "str": str}.get(kind, kind)
        required = p.default is inspect.Parameter.empty
        default = None if required else p.default
        plain, option = name.replace("_", "-"), renames.get(name, name.replace("_", "-"))
        parser.add_argument(
            f"--{option}", dest=f"model_{name}", type=kind, required=required and option == plain, default=default,
            metavar=None if name in choices else option.upper().replace("-", "_"), choices=choices.get(name),
            help=plain_text(helps.get(name, f"model parameter {name}"))
            + ("" if required or default is None else f" (default: {default})"),
        )
        if option != plain:  # the parameter's own spelling still works, unlisted
            parser.add_argument(f"--{plain}", dest=f"model_{name}", type=kind, choices=choices.get(name),
                                help=argparse.SUPPRESS)
            if required:
                renamed_required[name] = option
        names.append(name)
    return names, renamed_required


def register(subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="run an ensemble of trajectories of a model",
                                   description="Run an ensemble of trajectories and summarise it.")
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)
    for name, cls in MODEL_REGISTRY.items():
        summary = plain_text((inspect.getdoc(cls) or name).split("\n\n")[0])
        mp = models.add_parser(name, help=first_sentence(summary), description=summary)
        names, renamed_required = _model_options(mp, cls)
        mp.add_argument("--method", choices=cls.methods, default=None,
                        help="update rule (default: the model's natural method)")
        mp.add_argument("--n-traj", type=int, default=1000, help="number of trajectories (default: 1000)")
        mp.add_argument("--steps", type=int, default=10_000, help="steps per trajectory (default: 10000)")
        mp.add_argument("--burn-in", type=int, default=None, help="steps discarded before averaging (default: steps/2)")
        mp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        mp.add_argument("--backend", default="numba", choices=BACKENDS,
                        help="numba (default), numpy (reference) or cupy (NVIDIA GPU)")
        mp.add_argument("--record-every", type=int, default=None, help="record paths every K steps")
        mp.add_argument("--threads", type=int, default=None, help="Numba threads (results do not depend on it)")
        mp.add_argument("--checkpoint", default=None, help="checkpoint file: resume an interrupted run")
        mp.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="precision of the state: float64 (default) or float32 (numba/cupy, symbolic models)")
        mp.add_argument("--rng", choices=RNGS, default=None,
                        help="counter-based random-number family (default: philox for float32, splitmix for "
                             "float64; docs/rng.md)")
        mp.add_argument("--scheduler", default=None,
                        help="run the trajectories as shards on the Dask scheduler at this address (tcp://host:port)")
        mp.add_argument("--n-shards", type=int, default=None,
                        help="split the trajectories into this many shards (Dask tasks; default with --scheduler: "
                             "one per worker; without: run one after another in this process)")
        keep = mp.add_mutually_exclusive_group()
        keep.add_argument("--per-trajectory", dest="per_trajectory", action="store_const", const=True, default=None,
                          help="keep the per-trajectory variables (default, unless a sharded run's would not fit "
                               "in memory)")
        keep.add_argument("--summaries", dest="per_trajectory", action="store_const", const=False,
                          help="summaries only: each shard reduced to exact sums where it runs; memory independent "
                               "of --traj")
        mp.add_argument("--no-workers-timeout", type=float, default=DEFAULT_NO_WORKERS_TIMEOUT_S, metavar="S",
                        help="with --scheduler: stop once the cluster has had no worker for S seconds "
                             f"(default {DEFAULT_NO_WORKERS_TIMEOUT_S:g}); finished shards stay in the checkpoint")
        mp.add_argument("--out", default=None, help="write the dataset here (.nc NetCDF, or .zarr)")
        mp.add_argument("--json", action="store_true", help="print the ensemble summary as one JSON object")
        mp.add_argument("--no-progress", action="store_true", help="never show a progress bar")
        mp.set_defaults(func=_run, model_cls=cls, model_param_names=names, model_renamed_required=renamed_required)


def _jsonable(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_dict(ds) -> dict:
    """Scalar variables and the run's main attributes, JSON-ready (NaN -> null)."""
    out = {k: ds.attrs[k] for k in ("model", "method", "n_traj", "n_steps", "burn_in", "seed", "rng_scheme",
                                   "dtype", "n_shards", "backend", "sdeeos_version", "git_revision") if k in ds.attrs}
    out["parameters"] = {k: ds.attrs[k] for k in ds.attrs.get("parameter_names", "").split()}
    for k in ("stationary_state", "closure_validity_ratio", "warning"):
        if k in ds.attrs:
            out[k] = ds.attrs[k]
    for name, var in ds.data_vars.items():
        if var.ndim == 0:
            out[name] = _jsonable(var.values)
    out["wall_time_s"] = ds.attrs.get("wall_time_s")
    return {k: _jsonable(v) for k, v in out.items()}


def _run(args) -> int:
    # Outputs are checked before any work: a bad path fails in a second, not after the run.
    if args.out:
        check_output_path(args.out, "--out")
    if args.checkpoint:
        check_checkpoint_path(args.checkpoint, "--checkpoint")
    for name, option in args.model_renamed_required.items():
        if getattr(args, f"model_{name}") is None:
            raise ParameterError(f"the option --{option} is required")
    kwargs = {n: getattr(args, f"model_{n}") for n in args.model_param_names}
    model = args.model_cls(**kwargs)
    ds = simulate(model, args.method, n_traj=args.n_traj, n_steps=args.steps, burn_in=args.burn_in,
                  seed=args.seed, backend=args.backend, record_every=args.record_every,
                  n_threads=args.threads, progress=False if args.no_progress else None,
                  checkpoint=args.checkpoint, dtype=args.dtype, rng=args.rng, scheduler=args.scheduler, n_shards=args.n_shards,
                  keep_checkpoint=bool(args.out), per_trajectory=args.per_trajectory,
                  no_workers_timeout=args.no_workers_timeout)
    if args.out:
        write_dataset(ds, args.out)
        if args.checkpoint:  # only now: the output is safely in place
            Path(args.checkpoint).unlink(missing_ok=True)
            shutil.rmtree(f"{args.checkpoint}.shards", ignore_errors=True)
    summary = summary_dict(ds)
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>36}: {v}")
        if args.out:
            print(f"{'written':>36}: {args.out}")
    sys.stdout.flush()
    return 0
