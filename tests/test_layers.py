"""The package's layers only import downwards, and no module imports itself back through others.

Read from the source (ast), function-level imports included: a module may import its own package
and every package in a layer below it, never one beside or above it. The order is the README's
Layout; change both together."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "fermetric"

# bottom to top; a module of a package may import the packages of the layers before its own
LAYERS = [
    ("errors", "version", "run_layout"),  # the leaves: exception types, the version, the run-directory format
    ("utils",),             # I/O, checks, runtime (threads, precision, compile), run locks, output rules
    ("config",),            # the run config: dataclasses, YAML, overrides
    ("data",),              # data sets: FER2013, folders, FER+, SynthFER, transforms, audit
    ("plotting",),          # figures from arrays
    ("models",),            # architectures, the model factory, layer lookup
    ("runs",),              # reading a run directory: its layout, checkpoints, the Run
    ("retrieval",),         # a run's embeddings and FAISS kNN index; neighbours; verification
    ("scoring",),           # images in, class scores out: every Scorer, TTA, a run's scorers
    ("evaluation",),        # metrics, calibration, ensembles' weights, the kNN report, other data sets
    ("analysis",),          # explanations and their faithfulness
    ("zoo",),               # pretrained entries: registry, opening by name, export
    ("training",),          # the trainer that writes runs
    ("inference",),         # faces in photos and the face predictor
    ("report",),            # the HTML report
    ("api",),               # each command's work as one call
    ("study",),             # the study runner (and the demo's workflow)
    ("cli",),               # click commands: parse, call one function, print
    ("__init__", "__main__"),  # the package's lazy top level
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The fermetric modules `name` imports (module level and inside functions)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: -node.level + (1 if is_pkg else 0)] if node.level > (0 if is_pkg else 0) else []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names]
            # `from package import submodule` imports the submodule; any other name, the package
            targets = subs if all(s in mods for s in subs) else [module] + subs
        for t in targets:
            if not (t == "fermetric" or t.startswith("fermetric.")):
                continue
            if t == "fermetric":
                t = "fermetric.__init__"
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t != name:
                out.add(t)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_every_package_has_a_layer(graph):
    missing = sorted({_package(m) for m in graph} - set(RANK))
    assert not missing, f"packages without a layer in LAYERS (and the README's Layout): {missing}"


def test_imports_only_point_down(graph):
    bad = []
    for src, targets in graph.items():
        for dst in targets:
            a, b = _package(src), _package(dst)
            if a != b and RANK[b] >= RANK[a]:
                bad.append(f"{src} -> {dst} ({a} is layer {RANK[a]}, {b} layer {RANK[b]})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycles(graph):
    # Tarjan's strongly connected components over modules
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_scan_sees_imports(graph):
    """The checks above would pass on an empty graph: the scan must find known edges."""
    assert "fermetric.scoring.base" in graph["fermetric.scoring.classifier"]
    assert "fermetric.runs.reader" in graph["fermetric.scoring.run"]
    assert {"fermetric.errors"} <= graph["fermetric.config"]
