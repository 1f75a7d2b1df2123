"""The import graph of memrl (read with ast, nothing imported): no cycle between its packages, and none
between the modules of a package."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "memrl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The memrl modules a file imports (anywhere in it, including inside functions and TYPE_CHECKING)."""
    out = set()
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("memrl")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("memrl"):
                out.add(base)
                # `from memrl.x import y` where y is a module
                out |= {
                    f"{base}.{a.name}"
                    for a in node.names
                    if (PKG.parent / f"{base}.{a.name}".replace(".", "/")).exists()
                    or (PKG.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).exists()
                }
    return out


def package_of(module: str) -> str:
    """memrl.rl.trainer -> rl; memrl.apps -> apps (a top-level module is its own node)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "memrl"


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[tuple[str, str], str]]:
    """(package edges, module edges, an example module edge for each package edge)."""
    packages: dict[str, set[str]] = defaultdict(set)
    modules: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], str] = {}
    for path in sorted(PKG.rglob("*.py")):
        src = module_name(path)
        for dst in imports(path):
            if dst == src or src.startswith(dst + ".") and (PKG.parent / dst.replace(".", "/")).is_dir():
                continue  # a package's own __init__ imported by its modules is not an edge
            modules[src].add(dst)
            a, b = package_of(src), package_of(dst)
            if a != b and b != "memrl":
                packages[a].add(b)
                why.setdefault((a, b), f"{src} imports {dst}")
    return packages, modules, why


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_between_packages():
    packages, _, why = graph()
    found = cycles(packages)
    detail = [[why[(a, b)] for a in c for b in c if (a, b) in why] for c in found]
    assert not found, f"package cycles: {detail}"


def test_no_cycle_between_modules():
    _, modules, _ = graph()
    assert not cycles(modules)


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
