"""The dependency rule, read from the source: edge → workers → services → domain and jobs → models
and db; no import cycles; no private names across packages; adapters never import ``app``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each layer may import (itself included). ``core`` is the bottom: tables, the database and
# the unit of work, settings, metrics, logging, token hashing.
LAYERS = {
    "core": {"core"},
    "domain": {"core", "domain"},
    "jobs": {"core", "jobs"},
    "services": {"core", "domain", "jobs", "services"},
    "workers": {"core", "domain", "jobs", "services", "workers"},
    "edge": {"core", "domain", "jobs", "services", "workers", "edge"},
}
EDGE_MODULES = ("app.api", "app.cli", "app.console", "app.main", "app.errors", "app.pagination")


def layer_of(module: str) -> str:
    if module.startswith(EDGE_MODULES):
        return "edge"
    for name in ("domain", "jobs", "services", "workers"):
        if module == f"app.{name}" or module.startswith(f"app.{name}."):
            return name
    return "core"


def package_of(module: str) -> str:
    """``app.services.push`` → ``app.services``; a top-level module is a package of its own."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts[:2])
    return ".".join(parts[:2]) if path.is_dir() else module


def modules(top: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports_of(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """Every import in the file, function-level ones included, as (module, names imported from it)."""
    found = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The modules of ours an import reaches (``from app.services import push`` reaches push)."""
    reached = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    if target in known and len(reached) < max(1, len(names)):
        reached.append(target)
    return reached


def graph() -> dict[str, set[str]]:
    known = {**modules("app"), **modules("adapters")}
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for target, names in imports_of(path, module):
            edges[module].update(t for t in resolve(target, names, known) if t != module)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for source, targets in edges.items():
        if not source.startswith("app"):
            continue
        mine = package_of(source)
        packages.setdefault(mine, set()).update(
            package_of(t) for t in targets if t.startswith("app") and package_of(t) != mine)
    return packages


EDGES = graph()


def test_no_import_cycle_between_app_packages():
    assert cycles(package_graph(EDGES)) == []


def test_no_import_cycle_between_modules():
    assert cycles(EDGES) == []


def test_each_layer_imports_only_what_lies_below_it():
    wrong = [f"{source} ({layer_of(source)}) imports {target} ({layer_of(target)})"
             for source, targets in EDGES.items() if source.startswith("app")
             for target in targets if target.startswith("app")
             and layer_of(target) not in LAYERS[layer_of(source)]]
    assert wrong == []


def test_only_the_http_edge_imports_app_api():
    wrong = [f"{source} imports {target}" for source, targets in EDGES.items()
             for target in targets if target.startswith("app.api") and layer_of(source) != "edge"]
    assert wrong == []


def test_adapters_import_nothing_from_app():
    wrong = [f"{source} imports {target}" for source, targets in EDGES.items() if source.startswith("adapters")
             for target in targets if target.startswith("app")]
    assert wrong == []


def test_adapter_platforms_do_not_import_each_other():
    platforms = {p.name for p in (ROOT / "adapters").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    wrong = [f"{source} imports {target}" for source, targets in EDGES.items() if source.startswith("adapters.")
             for target in targets
             if source.split(".")[1] in platforms and target.startswith("adapters.")
             and target.split(".")[1] in platforms and target.split(".")[1] != source.split(".")[1]]
    assert wrong == []


def test_no_private_name_is_imported_across_packages():
    known = {**modules("app"), **modules("adapters")}
    wrong = []
    for module, path in known.items():
        for target, names in imports_of(path, module):
            if not target.startswith(("app", "adapters")) or package_of(target) == package_of(module):
                continue
            wrong += [f"{module} imports {target}.{n}" for n in names if n.startswith("_") and n != "__version__"]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(m for m in modules("app") | modules("adapters")
                                          if not modules("app").get(m, Path("x")).name == "__main__.py"))
def test_every_module_says_what_it_is_for(module):
    path = {**modules("app"), **modules("adapters")}[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not tree.body:  # an empty package marker
        return
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
