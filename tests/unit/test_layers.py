"""The house drawing: ``src/steprl`` has no import cycle, and no module imports from a layer above its own.

Layers, lowest first (README, "Layout"): ``core/`` (pure tensor functions: imports nothing else of steprl) <-
the run's configuration and helpers (``utils/``, ``config``, ``job``, ``resume``) <- ``models/`` (and ``export``,
which loads a trained policy) <- ``rollout/`` <- ``rewards/`` <- ``tasks/`` <- ``algos/`` <- ``callbacks/`` <- the
entry points (``train``, ``eval``, ``cli``, ``plot``, ``report``). A module may import from its own layer or any
layer below. Every import counts, the ones inside functions too: a lazy import still ties the two modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import steprl

SRC = Path(steprl.__file__).parent
LAYERS = (
    ("core",),
    ("utils", "config", "job", "resume"),
    ("models", "export"),
    ("rollout",),
    ("rewards",),
    ("tasks",),
    ("algos",),
    ("callbacks",),
    ("train", "eval", "cli", "plot", "report"),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def modules(root: Path = SRC) -> dict[str, Path]:
    """``steprl.x.y`` -> its file, for every module and package of ``root`` (the root package itself left out:
    it imports nothing)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = ("steprl",) + p.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            out[".".join(parts)] = p
    return out


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the steprl modules it imports anywhere in its body (``from a import b`` counts as ``a.b`` where
    ``b`` is a module, else as ``a``)."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:  # `import steprl.core.losses as L`, a name in a module
                    t = t.rpartition(".")[0]
                if t in mods and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> str:
    return module.split(".")[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} (layer {RANK[layer_of(m)]}: {layer_of(m)}) imports {t} (layer {RANK[layer_of(t)]}: {layer_of(t)})"
            for m in sorted(graph) for t in sorted(graph[m]) if RANK[layer_of(t)] > RANK[layer_of(m)]]


GRAPH = import_graph(modules())


def test_every_module_has_a_layer():
    missing = sorted({layer_of(m) for m in GRAPH} - set(RANK))
    assert not missing, f"steprl.{missing[0]} is in no layer: add it to LAYERS in {__file__} and to the README layout"


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles in src/steprl: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_from_a_higher_layer():
    up = upward_imports(GRAPH)
    assert not up, "imports that run up the layers:\n" + "\n".join(up)


def test_core_imports_only_core():
    outside = [f"{m} imports {t}" for m in GRAPH if layer_of(m) == "core" for t in GRAPH[m] if layer_of(t) != "core"]
    assert not outside, "core/ is pure tensor math: " + "; ".join(outside)


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return modules(tmp_path)


def test_the_check_finds_a_lazy_cycle_and_an_upward_import(tmp_path):
    """The checks can fail: a cycle closed by an import inside a function, and core importing algos."""
    mods = _tree(tmp_path, {
        "__init__.py": "",
        "config.py": "def f():\n    from steprl import resume\n",
        "resume.py": "from steprl.config import f\n",
        "core/__init__.py": "from .losses import x\n",
        "core/losses.py": "import steprl.algos.base as B\nx = 1\n",
        "algos/__init__.py": "",
        "algos/base.py": "from steprl.core import losses\n",
    })
    g = import_graph(mods)
    assert g["steprl.core"] == {"steprl.core.losses"}
    assert g["steprl.core.losses"] == {"steprl.algos.base"}
    assert cycles(g) == [["steprl.algos.base", "steprl.core.losses"], ["steprl.config", "steprl.resume"]]
    assert upward_imports(g) == ["steprl.core.losses (layer 0: core) imports steprl.algos.base (layer 6: algos)"]


@pytest.mark.parametrize("line, target", [
    ("from steprl import job", "steprl.job"),
    ("from steprl.config import ConfigError", "steprl.config"),
    ("from . import config", "steprl.config"),
    ("import steprl.config", "steprl.config"),
])
def test_import_forms(tmp_path, line, target):
    mods = _tree(tmp_path, {"__init__.py": "", "job.py": "", "config.py": "", "cli.py": line + "\n"})
    assert import_graph(mods)["steprl.cli"] == {target}


def test_unit_tests_mirror_src_names():
    """tests/unit/<name>/ tests steprl.<name> (a package or a top-level module); besides those only the engine's
    step-level tests (engine/: algos.base and its helpers run end to end), the scale checks, the bench scripts
    and the docs have folders, and the only test at the top is this one (the package as a whole)."""
    unit = Path(__file__).parent
    names = {p.stem for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    other = {"engine", "scale", "bench", "docs"}
    folders = {p.name for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert not folders - names - other, f"tests/unit/ folders that name nothing in src/steprl: {folders - names - other}"
    assert [p.name for p in unit.glob("test_*.py")] == [Path(__file__).name]
