"""The import contract of the package, read from the source with `ast` (every import, top-level or not).

* Layers, bottom to top: base helpers -> theory -> the run contract -> engines -> models -> simulate/sweep
  -> studies, plots, CLI.  A module imports only its own layer or the ones below it.  The torch side sits
  beside the engines: it imports only the base helpers and theory, and only studies and the CLI import it.
* No import circles among sdeeos modules.
* Imports sit at the top of a module; only optional dependencies (`OPTIONAL`) may be imported inside a
  function, where a missing extra is reported when the feature is used.
* No underscore name is imported from another module (a name used across modules is public there).
* The deprecated aliases of old module paths are gone (no release carried them).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sdeeos"

#: bottom to top; a module belongs to the first entry that is it or a package above it
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("sdeeos._errors", "sdeeos._validation", "sdeeos._version", "sdeeos._rng", "sdeeos._io",
              "sdeeos._provenance", "sdeeos._toml", "sdeeos._statistics", "sdeeos._stationarity",
              "sdeeos._labels", "sdeeos._dask_connect", "sdeeos._checksum", "sdeeos._storelock",
              "sdeeos._interrupts", "sdeeos._resources", "sdeeos._checkpoint", "sdeeos._exact_sums",
              "sdeeos._optimizer_defaults")),
    ("theory", ("sdeeos.theory",)),
    ("contract", ("sdeeos._contract",)),
    ("engines", ("sdeeos.engines",)),
    ("models", ("sdeeos.models",)),
    ("simulate/sweep", ("sdeeos._simulate", "sdeeos._sharded", "sdeeos._shard_summary", "sdeeos.sweeps")),
    ("studies/CLI", ("sdeeos.studies", "sdeeos.plotting", "sdeeos.torch", "sdeeos._train_config", "sdeeos._cli",
                     "sdeeos.__main__", "sdeeos")),
)

#: third-party packages of the extras (or not declared at all): imported where they are used
OPTIONAL = {"torch", "dask", "distributed", "zarr", "cupy", "cupyx", "matplotlib", "mpl_toolkits", "sklearn",
            "mnist1d", "threadpoolctl", "tomli"}
#: sdeeos modules that need an optional dependency (the torch side imports torch)
OPTIONAL_SDEEOS = ("sdeeos.torch",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_module(name: str, modules) -> bool:
    return name in modules


def imports_of(name: str, path: Path, modules=MODULES):
    """``(node, target module or None, imported names, at top level)`` for every import in the file.

    ``from pkg import sub`` targets the module ``pkg.sub`` when it is one, else ``pkg``; the target is
    None for modules outside sdeeos.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = set()

    def walk_top(body):
        for node in body:
            top.add(id(node))
            if isinstance(node, ast.If):
                walk_top(node.body)
                walk_top(node.orelse)
            elif isinstance(node, ast.Try):
                walk_top(node.body)
                walk_top(node.orelse)
                walk_top(node.finalbody)
                for handler in node.handlers:
                    walk_top(handler.body)

    walk_top(tree.body)
    for node in ast.walk(tree):
        at_top = id(node) in top
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                yield node, alias.name, (target or None), (), at_top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in modules:
                    yield node, full, full, (), at_top
                else:
                    target = source
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    yield node, source, (target or None), (alias.name,), at_top


def layer_of(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or (p != "sdeeos" and module.startswith(p + ".")):
                return i
    return None


def edges(modules=MODULES) -> dict[str, set[str]]:
    out = {m: set() for m in modules}
    for m, path in modules.items():
        for _, _, target, _, _ in imports_of(m, path, modules):
            if target and target != m:
                out[m].add(target)
    return out


def upward_imports(graph) -> list[str]:
    bad = []
    for m, targets in graph.items():
        for t in targets:
            if layer_of(t) > layer_of(m):
                bad.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})")
    return sorted(bad)


def circles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


# ------------------------------------------------------------------------------------------ the checks
def test_the_graph_sees_known_imports():
    """The reader finds imports of every form (guards the other checks against reading nothing)."""
    graph = edges()
    assert "sdeeos._contract" in graph["sdeeos._simulate"]                   # from ._contract import ...
    assert "sdeeos._rng" in graph["sdeeos.sweeps._api"]                      # from .. import _rng
    assert "sdeeos.theory.batch_noise" in graph["sdeeos.sweeps._parameter_maps"]  # from ..theory import module
    assert "sdeeos.engines" in graph["sdeeos.models._base"]                   # models may import engines


def test_the_checks_catch_planted_violations():
    graph = {"sdeeos._contract": {"sdeeos.models._base"}, "sdeeos.models._base": {"sdeeos._contract"}}
    assert upward_imports(graph) == ["sdeeos._contract (contract) imports sdeeos.models._base (models)"]
    assert circles(graph) == [["sdeeos._contract", "sdeeos.models._base"]]


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == [], "add the module to LAYERS"


def test_no_import_runs_up_a_layer():
    assert upward_imports(edges()) == []


def test_no_import_circles():
    assert circles(edges()) == []


def test_imports_at_the_top_except_optional_dependencies():
    hidden = []
    for m, path in MODULES.items():
        for node, source, _, _, at_top in imports_of(m, path):
            optional = source.split(".")[0] in OPTIONAL or any(
                source == p or source.startswith(p + ".") for p in OPTIONAL_SDEEOS)
            if not at_top and not optional:
                hidden.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {source} inside a function")
    assert sorted(set(hidden)) == []


def test_no_private_names_imported_across_modules():
    private = []
    for m, path in MODULES.items():
        for node, source, target, names, _ in imports_of(m, path):
            if target is None:
                continue
            private += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {n} from {source}"
                        for n in names if n.startswith("_") and n != "__version__"]
    assert private == []


#: the torch side sits beside the engines: it and the engine/model/run layers never import each other
TORCH_SIDE = ("sdeeos.torch", "sdeeos._train_config")


def test_torch_side_and_the_ensemble_layers_are_independent():
    def torch_side(m):
        return any(m == p or m.startswith(p + ".") for p in TORCH_SIDE)

    allowed = {"base", "theory"}
    bad = []
    for m, targets in edges().items():
        for t in targets:
            if torch_side(m) and not torch_side(t) and LAYERS[layer_of(t)][0] not in allowed:
                bad.append(f"{m} imports {t}")
            if torch_side(t) and not torch_side(m) and LAYERS[layer_of(m)][0] not in ("studies/CLI",):
                bad.append(f"{m} imports {t}")
    assert bad == []


#: old module paths, removed before the first release: none may come back, as a file or an import hook
REMOVED = ("sdeeos._sweep", "sdeeos.engines._base", "sdeeos._study", "sdeeos._studies", "sdeeos._moved",
           "sdeeos._deprecation", "sdeeos.toy_studies", "sdeeos.torch.studies", "sdeeos.torch._studies")


@pytest.mark.parametrize("old", REMOVED)
def test_removed_module_paths_do_not_import(old):
    importlib.import_module("sdeeos")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


def test_torch_package_has_no_forwarding_getattr():
    assert "__getattr__" not in (ROOT / "torch" / "__init__.py").read_text(encoding="utf-8")
