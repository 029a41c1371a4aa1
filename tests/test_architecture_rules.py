"""The rules of docs/architecture.md ("Rules that hold everywhere") checked over the source.

Each check reads the files as text or as Python syntax trees, and each has a guard that shows it
can fail: it finds the thing it forbids where that thing is allowed, or in a small sample.
(The import rules are tests/test_import_structure.py's; statuses and event names as literals, and
status writes, have their own tests.)
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# -- the project cites nothing outside itself ----------------------------------------------------

# The design notes the project was written from live outside it; their names are built here so
# that this file does not name them itself.
OUTSIDE_FILES = tuple(f"{stem}.md" for stem in ("PRODUCT", "ENGINEERING", "PAPER")) + ("../" + "shared",)
CITING_PLACES = ("kdtui", "kernels", "docs", "tests", "bench", "README.md")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".json", ".yaml", ".yml", ".tcss", ".css", ".sh"}


def project_text_files() -> list[Path]:
    files = []
    for place in CITING_PLACES:
        path = ROOT / place
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [f for f in candidates if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts]
    return files


def citations(text: str) -> list[str]:
    return [name for name in OUTSIDE_FILES if name in text]


def test_citation_finder_finds_one():
    assert citations("see " + OUTSIDE_FILES[0] + ", section 2") == [OUTSIDE_FILES[0]]
    assert citations("see docs/metrics.md") == []


def test_nothing_cites_a_file_outside_the_project():
    files = project_text_files()
    assert any(f.name == "architecture.md" for f in files) and any(f.suffix == ".toml" for f in files)
    found = [f"{f.relative_to(ROOT)}: {', '.join(citations(f.read_text(errors='replace')))}"
             for f in files if citations(f.read_text(errors="replace"))]
    assert not found, "cite docs/ instead:\n" + "\n".join(found)


# -- files are replaced only through kernels/atomic.py ---------------------------------------------

ATOMIC_HELPER = ROOT / "kernels" / "atomic.py"
# os.replace / os.rename / os.renames / shutil.move, however imported.
RENAMING_FUNCTIONS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}


def python_files(*places: str) -> list[Path]:
    return [f for place in places for f in sorted((ROOT / place).rglob("*.py")) if "__pycache__" not in f.parts]


def renames(source: str) -> list[int]:
    """Lines that rename a file over another: the functions above, called or imported, and a
    `.replace(target)` / `.rename(target)` method call with one argument (pathlib's; `str.replace`
    takes two, and `dataclasses.replace` / `datetime.replace` take keywords)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil"):
            lines += [node.lineno for a in node.names if (node.module, a.name) in RENAMING_FUNCTIONS]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in RENAMING_FUNCTIONS:
                lines.append(node.lineno)
            elif node.func.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords:
                lines.append(node.lineno)
    return lines


def test_rename_finder_sees_every_spelling():
    sample = ("import os, shutil\nfrom os import rename\nos.replace(a, b)\nshutil.move(a, b)\n"
              "Path(a).replace(b)\ntmp.rename(b)\n'x'.replace('a', 'b')\nreplace(record, status=1)\n")
    assert renames(sample) == [2, 3, 4, 5, 6]


def test_only_the_atomic_helper_renames_files():
    assert renames(ATOMIC_HELPER.read_text()), "the helper itself renames: the finder must see it"
    found = [f"{f.relative_to(ROOT)}:{line}" for f in python_files("kdtui", "kernels")
             if f != ATOMIC_HELPER for line in renames(f.read_text())]
    assert not found, "replace files through kernels.atomic (kdtui.core.files):\n" + "\n".join(found)


def test_the_atomic_helper_needs_no_torch():
    """The app shares it with the engine, so it must not load torch."""
    imports = {alias.name.split(".")[0] for node in ast.walk(ast.parse(ATOMIC_HELPER.read_text()))
               if isinstance(node, ast.Import) for alias in node.names}
    imports |= {(node.module or "").split(".")[0] for node in ast.walk(ast.parse(ATOMIC_HELPER.read_text()))
                if isinstance(node, ast.ImportFrom)}
    assert "torch" not in imports and "kdtui" not in imports


# -- checkpoints are loaded with weights_only=True -----------------------------------------------

def unsafe_loads(source: str) -> list[int]:
    """Lines of `torch.load(...)` (or a bare `load` imported from torch) without `weights_only=True`."""
    tree = ast.parse(source)
    bare = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == "torch" for a in node.names if a.name == "load"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_load = (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                   and func.value.id == "torch") or (isinstance(func, ast.Name) and func.id in bare)
        safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords)
        if is_load and not safe:
            lines.append(node.lineno)
    return lines


def test_load_finder_sees_unsafe_loads():
    sample = ("import torch\nfrom torch import load as L\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
              "L(p)\ntorch.load(p, weights_only=True)\njson.load(f)\n")
    assert unsafe_loads(sample) == [3, 4, 5]


def test_every_torch_load_is_weights_only():
    files = python_files("kdtui", "kernels", "tests", "bench")
    assert any("torch.load(" in f.read_text() for f in files), "the project loads checkpoints: the scan must see them"
    found = [f"{f.relative_to(ROOT)}:{line}" for f in files for line in unsafe_loads(f.read_text())]
    assert not found, "load checkpoints with weights_only=True:\n" + "\n".join(found)


# -- tests never touch the network, and never assert a speed -------------------------------------

NETWORK_MODULES = ("urllib.request", "http.client", "requests", "httpx", "aiohttp", "ftplib", "smtplib")
# socket is imported for gethostname(); what opens a connection is one of these.
SOCKET_OPENERS = ("socket", "create_connection", "socketpair", "fromfd")


def network_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [n for n in names if any(n == m or n.startswith(m + ".") for m in NETWORK_MODULES)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SOCKET_OPENERS \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "socket":
            found.append(f"socket.{node.func.attr}")
    return found


def test_network_finder_sees_an_import():
    assert network_imports("import socket\nfrom urllib.request import urlopen\nsocket.gethostname()\n"
                           "socket.create_connection(('example.com', 80))\n") == ["urllib.request", "socket.create_connection"]


def test_tests_import_no_network_client():
    found = [f"{f.relative_to(ROOT)}: {', '.join(network_imports(f.read_text()))}"
             for f in python_files("tests") if network_imports(f.read_text())]
    assert not found, "\n".join(found)


CLOCKS = {"perf_counter", "monotonic", "time", "perf_counter_ns", "monotonic_ns"}
# An elapsed time held to less than this is a speed target (a loaded machine breaks it); a longer
# bound only keeps a test from hanging when what it waits for never happens.
SPEED_BOUND_S = 2.0


def _reads_clock(node: ast.AST) -> bool:
    return any(isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and c.func.attr in CLOCKS
               and isinstance(c.func.value, ast.Name) and c.func.value.id == "time" for c in ast.walk(node))


def timed_asserts(source: str) -> list[int]:
    """Lines of asserts that hold a clock reading (or a value computed from one) to under
    SPEED_BOUND_S seconds."""
    lines = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) or not function.name.startswith("test"):
            continue
        timed = {t.id for node in ast.walk(function) if isinstance(node, ast.Assign) and _reads_clock(node.value)
                 for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(function):
            if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)):
                continue
            clocked = _reads_clock(node.test) or bool({n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)} & timed)
            short = any(isinstance(c, ast.Constant) and isinstance(c.value, (int, float)) and not isinstance(c.value, bool)
                        and 0 < c.value < SPEED_BOUND_S for c in ast.walk(node.test))
            if clocked and short:
                lines.append(node.lineno)
    return lines


def test_timing_finder_sees_a_speed_assert():
    sample = ("import time\ndef test_fast():\n    t0 = time.perf_counter()\n    work()\n"
              "    took = time.perf_counter() - t0\n    assert took < 0.5\n    assert 1 == 1\n"
              "    assert time.perf_counter() - t0 < 30\n    assert time.monotonic() - t0 < 1.5\n")
    assert timed_asserts(sample) == [6, 9]


def test_no_test_asserts_a_speed():
    found = [f"{f.relative_to(ROOT)}:{line}" for f in python_files("tests") for line in timed_asserts(f.read_text())
             if f.name != Path(__file__).name]
    assert not found, "measure speed in bench/, do not assert it:\n" + "\n".join(found)
