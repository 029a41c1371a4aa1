"""The house holds by its structure (docs/architecture.md, "Import rules"): the app, the registry, the analysis and
the run service never reach torch or the code that executes a run, and no arrow runs back up between
the groups of `kdtui/`.

The static check reads the source (every import statement, those inside functions included, since
a function-level import is still an arrow), follows `kdtui.*` and `kernels.*` imports transitively and
names the chain that breaks a rule. The runtime check imports the app in a fresh interpreter and
looks at what got loaded.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("kdtui", "kernels")

# What a module that must stay light may never reach: torch itself, and the modules that train.
HEAVY = ("torch", "torchvision", "kdtui.runs.execute", "kernels.engine", "kernels.models", "kernels.data")

# The light parts of the house: the app, the shared core, analysis, the run service and the launcher.
LIGHT_ROOTS = ("kdtui/tui", "kdtui/core", "kdtui/analysis", "kdtui/runs/service.py",
               "kdtui/runs/executors/launcher.py")

# group -> groups it must not import (the arrows point down: cli, tui -> runs -> analysis?/core).
FORBIDDEN_ARROWS = {
    "core": ("runs", "analysis", "cli", "tui"),
    "runs": ("cli", "tui"),
    "analysis": ("runs", "cli", "tui"),
    "tui": ("cli",),
    "cli": ("tui",),
}

# The one place the command line may import the app: `kdtui` with no command opens it, from the
# entry point's own function (checked to be a lazy import there, see below): the root callback of the
# typer app (`app` itself is the typer.Typer object since the command line moved to typer).
APP_OPENER = ("kdtui.cli", "open_app")

# What the torch package may never import: the app's libraries and the app itself.
KERNELS_NEVER = ("kdtui", "textual", "tinydb", "typer", "click", "rich")


def module_file(name: str) -> Path | None:
    """The source file of a project module, or None (not ours, or not a module)."""
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_under(relative: str) -> list[str]:
    path = ROOT / relative
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return [module_name(f) for f in files]


@lru_cache(maxsize=None)
def imports_of(name: str) -> frozenset[str]:
    """Every module `name` imports anywhere in its source. `from a import b` counts as `a`, and as
    `a.b` when that is a module; importing `a.b.c` also runs the packages `a` and `a.b`."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}"))
    with_parents = set(found)
    for imported in found:
        parts = imported.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(with_parents)


def reachable(start: str) -> dict[str, str | None]:
    """Every module reachable from `start` through project modules: module -> who imported it."""
    parent: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        current = todo.popleft()
        if module_file(current) is None:
            continue  # a library: its own imports are not ours to follow
        for imported in sorted(imports_of(current)):
            if imported not in parent:
                parent[imported] = current
                todo.append(imported)
    return parent


def chain(parent: dict[str, str | None], end: str) -> str:
    steps = [end]
    while parent[steps[-1]] is not None:
        steps.append(parent[steps[-1]])
    return " -> ".join(reversed(steps))


def is_heavy(name: str) -> bool:
    return any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)


def group_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "kdtui" and len(parts) > 1 and module_file(name) else None


LIGHT_MODULES = sorted({m for root in LIGHT_ROOTS for m in modules_under(root)})


def test_the_walk_sees_the_project():
    """A guard on the check itself: it finds the modules and follows their imports."""
    assert "kdtui.tui.app" in LIGHT_MODULES and "kdtui.core.registry" in LIGHT_MODULES
    reached = reachable("kdtui.runs.execute")
    assert "torch" in reached, "kdtui.runs.execute trains with torch: the walk must reach it"
    assert is_heavy("torch.nn") and not is_heavy("torchmetrics_is_not_torch")


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_never_reach_torch_or_the_runner(module):
    parent = reachable(module)
    heavy = sorted(name for name in parent if is_heavy(name))
    assert not heavy, f"{module} reaches {heavy[0]}: {chain(parent, heavy[0])}"


def test_no_arrow_runs_back_up_between_the_groups():
    wrong = []
    for path in sorted((ROOT / "kdtui").rglob("*.py")):
        name = module_name(path)
        group = group_of(name)
        for imported in sorted(imports_of(name)):
            if group_of(imported) in FORBIDDEN_ARROWS.get(group, ()) and not opens_the_app(name, imported):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def opens_the_app(name: str, imported: str) -> bool:
    """`kdtui` with no command opens the app: the entry point's `app` function may import kdtui.tui
    (inside that function only, so no command pays for Textual)."""
    if name != APP_OPENER[0] or group_of(imported) != "tui":
        return False
    tree = ast.parse(module_file(name).read_text())
    opener = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == APP_OPENER[1])
    inside = {node.module for node in ast.walk(opener) if isinstance(node, ast.ImportFrom)}
    at_top = {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    return imported.startswith("kdtui.tui") and any(m and m.startswith("kdtui.tui") for m in inside) \
        and not any(m and m.startswith("kdtui.tui") for m in at_top)


def test_only_the_entry_point_opens_the_app():
    """A guard on the exception above: it is one function of one module, and it holds today."""
    assert opens_the_app("kdtui.cli", "kdtui.tui")
    assert not opens_the_app("kdtui.cli.runs", "kdtui.tui.state")


def test_kernels_import_nothing_of_the_app():
    wrong = []
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        name = module_name(path)
        wrong += [f"{name} imports {imported}" for imported in sorted(imports_of(name))
                  if imported.split(".")[0] in KERNELS_NEVER]
    assert not wrong, "\n".join(wrong)


def project_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its source (inside functions too), the
    packages a dotted import runs on the way left out unless named themselves."""
    graph = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            named = set()
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    named.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:  # relative: from the package this module is in
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join(anchor + ([node.module] if node.module else []))
                    subs = [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")]
                    named.update(subs or [base])
            graph[name] = {m for m in named if module_file(m) and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_lazy_loop():
    """A guard on the check: a loop closed by an import inside a function is a loop."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = project_graph()
    assert "kdtui.analysis.flat" in graph["kdtui.analysis.labels"], "the walk must see the modules' imports"
    assert "kernels.catalog" in graph["kernels.data"], "and relative imports"
    found = cycles(graph)
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_importing_the_app_loads_neither_torch_nor_the_runner():
    code = ("import sys\nimport kdtui.tui.app\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')"
            " or m == 'kdtui.runs.execute'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
