"""The package's import graph: layers import only the layers below them, and nothing imports in a circle.

Layers, bottom to top (docs/design.md, "Architecture"); a module may import its own layer and those
below. The one upward import allowed is the lazy ``inr_fast.fit`` in ``inr_fast/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inr_fast"
LAYERS = [
    {
        "inr_fast",
        "inr_fast.errors",
        "inr_fast.layout",
        "inr_fast.util",
        "inr_fast.atomic",
        "inr_fast._ext",
        "inr_fast.progress",
        "inr_fast._build_info",
    },
    {"inr_fast.data"},
    {"inr_fast.model", "inr_fast.ops"},
    {"inr_fast.metrics"},
    {"inr_fast.train"},
    {"inr_fast.store"},
    {"inr_fast.jobs"},
    {"inr_fast.report"},
    {"inr_fast.bench"},
    {"inr_fast.commands", "inr_fast.cli"},
    {"inr_fast.testing"},
]
ALLOWED_UPWARD = {("inr_fast", "inr_fast.train.api")}  # the lazy `inr_fast.fit`


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (i, len(name))
    assert best is not None, f"{module} is in no layer; add it to LAYERS (and docs/design.md)"
    return best[0]


def imports(path: Path) -> set[str]:
    """inr_fast modules imported anywhere in the file (function bodies included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("inr_fast"):
            for alias in node.names:  # `from inr_fast.x import y` may name a submodule y
                sub = f"{node.module}.{alias.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("inr_fast")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute inr_fast imports")
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{mod} -> {dep}"
        for mod, deps in g.items()
        for dep in deps
        if layer_of(dep) > layer_of(mod) and (mod, dep) not in ALLOWED_UPWARD
    )


def find_circle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle of the graph (a list of modules, first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_import_points_down_or_sideways():
    bad = upward_imports(graph())
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_circles():
    g = graph()
    g = {m: {d for d in deps if d in g and (m, d) not in ALLOWED_UPWARD} for m, deps in g.items()}
    circle = find_circle(g)
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checks_catch_a_circle_and_an_upward_import():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert upward_imports({"inr_fast.store": {"inr_fast.report.html", "inr_fast.train.api"}}) == [
        "inr_fast.store -> inr_fast.report.html"
    ]
