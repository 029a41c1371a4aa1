"""docs/architecture.md: "Statuses and event types come from kdtui/core/events.py, never from string
literals." Checked over the syntax trees of kdtui/ and kernels/.

A name such as `done` or `epoch` is also an ordinary word (a progress bar's "done", the `epoch`
metric), so the check looks for a literal used *as* a status or an event type:

- compared with something that reads a status or a type (`record["status"] == "done"`,
  `event.get("type") in ("epoch", "log")`, `kind == "stopped"`);
- written where a status or a type goes: `{"type": "log"}`, `status="failed"`, `types=("epoch",)`,
  `record["status"] = "done"`, a parameter `status="queued"`, a class's `type = "stopped"`;
- a hand-made group of them: a tuple, list or set of two or more such names, or a dict keyed by them.

The guards at the top show that each of these forms is found, and that ordinary words are not.
"""
from __future__ import annotations

import ast
from pathlib import Path

from kdtui.core.events import EVENT_TYPES, STATUSES

ROOT = Path(__file__).resolve().parents[1]
# The two files that define the vocabulary: the app's, and the engine's (kernels cannot import kdtui).
VOCABULARY_FILES = {ROOT / "kdtui" / "core" / "events.py", ROOT / "kernels" / "events.py"}
NAMES = frozenset(STATUSES) | frozenset(EVENT_TYPES)
# Keys, attributes and variable names that hold a status or an event type.
HOLDERS = frozenset({"status", "type", "kind"})


def _is_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES


def _names_in(node: ast.AST) -> list[ast.Constant]:
    """The literal itself, or the literals of a tuple/list/set written in place."""
    if _is_name(node):
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e for e in node.elts if _is_name(e)]
    return []


def _holder_key(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in HOLDERS


def _reads_holder(node: ast.AST) -> bool:
    """`x.status`, `x.type`, `x["status"]`, `x.get("type")`, or a variable `status`/`kind`/`type`."""
    if isinstance(node, ast.Name):
        return node.id in HOLDERS
    if isinstance(node, ast.Attribute):
        return node.attr in HOLDERS
    if isinstance(node, ast.Subscript):
        return _holder_key(node.slice)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and _holder_key(node.args[0])
    return False


def literal_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of every status or event-type literal used as one in `source`."""
    found: list[ast.Constant] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_reads_holder(side) for side in sides):
                for side in sides:
                    found += _names_in(side)
        elif isinstance(node, ast.Dict):
            pairs = [(k, v) for k, v in zip(node.keys, node.values) if k is not None]
            found += [v for k, v in pairs if _holder_key(k) and _is_name(v)]
            keys = [k for k, _ in pairs]
            if len(keys) >= 2 and all(_is_name(k) for k in keys):
                found += keys
        elif isinstance(node, ast.keyword) and node.arg in HOLDERS | {"types"}:  # read_all(types=...)
            found += _names_in(node.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Subscript) and _holder_key(t.slice) or isinstance(t, ast.Name) and t.id in HOLDERS
                   for t in targets):
                found += _names_in(node.value)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            if len(node.elts) >= 2 and all(_is_name(e) for e in node.elts):
                found += node.elts
        elif isinstance(node, ast.arguments):
            params = [*node.posonlyargs, *node.args]
            defaults = [None] * (len(params) - len(node.defaults)) + list(node.defaults)
            pairs = list(zip(params, defaults)) + list(zip(node.kwonlyargs, node.kw_defaults))
            found += [d for p, d in pairs if d is not None and p.arg in HOLDERS and _is_name(d)]
    return sorted({(c.lineno, c.value) for c in found})


# -- guards: the check finds each form, and leaves ordinary words alone --------------------------------

def test_the_check_finds_each_form_of_a_literal_status_or_type():
    forbidden = '''
if record["status"] == "done": pass
if event.get("type") in ("epoch", "log"): pass
if kind != "stopped": pass
if self.status == "queued": pass
line = {"type": "phase_start", "phase": "student"}
store.update(run_id, status="failed"); read_all(path, types=("epoch",))
record["status"] = "interrupted"
FINAL = frozenset({"done", "failed"})
STYLE = {"running": "cyan", "done": "green"}
def settle(run_id, status="running"): pass
class Paused(Event):
    type: ClassVar[str] = "stopped"
'''
    assert literal_uses(forbidden) == [
        (2, "done"), (3, "epoch"), (3, "log"), (4, "stopped"), (5, "queued"), (6, "phase_start"), (7, "epoch"), (7, "failed"),
        (8, "interrupted"), (9, "done"), (9, "failed"), (10, "done"), (10, "running"), (11, "running"),
        (13, "stopped")]


def test_the_check_leaves_ordinary_words_alone():
    allowed = '''
progress.update(task, left="done")
row = {k: v for k, v in metrics.items() if k != "epoch"}
table.add_column("epoch", justify="right")
LISTED = ("epoch", "train_agreement", "test_acc")
ax.set_xscale("log")
Binding("v", "log", "Event log")
if status == DONE: pass
text = "stopped" + message
'''
    assert literal_uses(allowed) == []


def test_no_status_or_event_type_literals_outside_the_vocabulary():
    offenders = []
    for path in sorted([*(ROOT / "kdtui").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]):
        if path in VOCABULARY_FILES:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: {name!r}" for line, name in literal_uses(path.read_text())]
    assert offenders == [], "use the constants and classes of kdtui/core/events.py:\n" + "\n".join(offenders)


def test_the_vocabulary_files_are_what_the_check_would_flag():
    # Their class definitions (`type: ClassVar[str] = "stopped"`) are of a forbidden kind: only the
    # exemption lets them be.
    for path in VOCABULARY_FILES:
        assert literal_uses(path.read_text()), path
