"""The package layout has no import circle: module-level imports between the project's modules form a DAG.

Imports inside functions are deliberately lazy (optional dependencies, CLI start-up time) and are not edges.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("runtime", "export", "train", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _edges(modules):
    """{module: set of project modules it imports at module level (``if TYPE_CHECKING`` blocks excluded)}."""
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"
        base = name if is_pkg else name.rpartition(".")[0]
        deps = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for n in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
                if isinstance(n, ast.Import):
                    targets = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom):
                    if n.level:
                        anchor = base.split(".")[: len(base.split(".")) - (n.level - 1)]
                        mod = ".".join(anchor + ([n.module] if n.module else []))
                    else:
                        mod = n.module or ""
                    targets = [mod] + [f"{mod}.{a.name}" for a in n.names]
                else:
                    continue
                deps |= {t for t in targets if t in modules and t != name}
        out[name] = deps
    return out


def _find_cycle(graph):
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_circle():
    modules = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
               if ".cache" not in p.parts}
    assert len(modules) > 60  # the walk found the packages
    graph = _edges(modules)
    assert any(graph.values())  # and their imports
    cycle = _find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_walk_finds_a_circle():
    """The checker itself: a two-module circle is reported."""
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
