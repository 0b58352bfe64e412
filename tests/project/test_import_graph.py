"""The house's rules, read off the code: medxfer's modules import each other without cycles, and the
training engine (``medxfer.train``) names no stage.

Why a test: a circle of imports (``a`` needs ``b`` needs ``a``) is where a module stops having one job
— neither side can be read, tested or moved alone, and the lazy imports that keep such a circle from
failing at import time hide it from the reader. Every import counts here, the lazy ones inside
functions too. The engine is the layer stages build on (a stage hands it its trainee and inputs), so
an import from ``medxfer.train`` into a stage runs upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "medxfer"
#: Packages the engine must not import: the stages and what is built on them.
ABOVE_THE_ENGINE = ("medxfer.stages", "medxfer.supervised", "medxfer.ssl", "medxfer.lifecycle", "medxfer.experiments",
                    "medxfer.cli", "medxfer.demo", "medxfer.evaluate")


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The module ``name`` is, or the package whose attribute it is."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the medxfer modules it imports, anywhere in its body."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            deps |= {o for t in targets if t.startswith("medxfer") and (o := _owner(t, modules))}
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_medxfer_imports_have_no_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each line: modules that import each other, directly or not):\n  " + \
        "\n  ".join(" <-> ".join(c) for c in found)


def test_the_training_engine_names_no_stage():
    graph = import_graph()
    upward = sorted(f"{m} imports {d}" for m, deps in graph.items() if m.startswith("medxfer.train")
                    for d in deps if d.startswith(ABOVE_THE_ENGINE))
    assert not upward, "medxfer.train is the engine stages build on; these imports run upward:\n  " + "\n  ".join(upward)


def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    """The rules can fail: a made-up graph with a cycle is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
