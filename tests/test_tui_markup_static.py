"""Static check of the app's one rendering rule: a string that may hold a run's name, a path or an
error message never reaches a call that reads its `str` arguments as markup. Such a value goes
through `kdtui.tui.text.plain` (a rich Text), `markup_literal`, or the call says `markup=False`.

The check reads the source (an AST walk over kdtui/tui):
- Widgets made from text, notifications and the palette's highlight (Static, Label, Button, Option,
  notify, Matcher.highlight) take a string literal, a renderable built on the spot (`plain(...)`,
  `Text(...)`, a rich `Table`), or a name bound only to one in the same function; anything else
  (`Static(self.question)`, the delete dialog's crash) fails.
- Every other markup-reading call (update, add_row, add_column, update_cell, set_options, Hit,
  tooltip=...) fails on a string built at run time: an f-string with a value in it, a `+`/`%` on
  strings, `str(...)` or a string method's result. A plain name is not judged there (tables and
  updates take Text objects held in names); the hostile-name test (tests/test_tui_hostile_names.py)
  covers those at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TUI = Path(__file__).resolve().parents[1] / "kdtui" / "tui"

# Calls that read a `str` argument as markup (Textual's widgets and rich's tables).
SINKS = {"Static", "Label", "notify", "update", "add_row", "add_column", "update_cell", "set_options",
         "Option", "Button", "Select", "Hit", "DiscoveryHit", "add_option", "add_options", "Toast",
         "write"}
# Keyword arguments that are markup wherever they appear.
MARKUP_KEYWORDS = {"tooltip", "prompt", "help", "title", "placeholder"}
STR_METHODS = {name for name in dir(str) if not name.startswith("_")}
BUILDERS = {"str", "repr", "format", "printable", "literal", "age_text", "cut_middle", "metric_label"}


def built_string(node: ast.AST) -> bool:
    """True when `node` is a string built at run time from values (not a literal)."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        sides = (node.left, node.right)
        return any(built_string(s) or (isinstance(s, ast.Constant) and isinstance(s.value, str)) for s in sides)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in BUILDERS
        if isinstance(func, ast.Attribute):
            return func.attr in STR_METHODS and func.attr not in {"plain"}
    if isinstance(node, ast.IfExp):
        return built_string(node.body) or built_string(node.orelse)
    if isinstance(node, ast.Starred):
        return built_string(node.value)
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(built_string(element) for element in node.elts)
    if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
        return built_string(node.elt)
    return False


# Made from text: their first argument must be shown as text by construction. (`highlight`: the
# palette's `Matcher.highlight` reads its candidate as markup.)
STRICT_SINKS = {"Static", "Label", "Button", "Option", "notify", "highlight"}
# Calls that build a renderable that no widget reads as markup.
RENDERABLES = {"plain", "Text", "Content", "Table", "grid", "assemble", "sweep_preview", "queue_tables"}


def renderable_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in RENDERABLES


def renderable_names(function: ast.AST) -> set[str]:
    """Names that a function binds only to renderables built on the spot (`table = Table(...)`)."""
    bound: dict[str, bool] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound[target.id] = bound.get(target.id, True) and renderable_call(node.value)
    return {name for name, only in bound.items() if only}


def shown_as_text(node: ast.AST, safe_names: set[str]) -> bool:
    return ((isinstance(node, ast.Constant) and isinstance(node.value, str)) or renderable_call(node)
            or (isinstance(node, ast.Name) and node.id in safe_names))


def sink_name(call: ast.Call) -> str | None:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name


def violations(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: call(...)` for each call that may read a run's or a user's text as markup."""
    tree = ast.parse(source, filename)
    scopes = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    safe_in = {id(call): renderable_names(scope) for scope in scopes for call in ast.walk(scope)
               if isinstance(call, ast.Call)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if any(k.arg == "markup" and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in node.keywords):
            continue
        name = sink_name(node)
        if name in STRICT_SINKS and node.args and not shown_as_text(node.args[0], safe_in.get(id(node), renderable_names(tree))):
            bad = True
        else:
            arguments = list(node.args) if name in SINKS else []
            arguments += [k.value for k in node.keywords if k.arg in MARKUP_KEYWORDS]
            bad = any(built_string(argument) for argument in arguments)
        if bad:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:120]}")
    return found


def test_no_built_string_reaches_a_markup_reading_call():
    found = []
    for path in sorted(TUI.rglob("*.py")):
        found += violations(path.read_text(), str(path.relative_to(TUI.parent.parent)))
    assert not found, "run-time strings parsed as markup (use kdtui.tui.text.plain):\n" + "\n".join(found)


@pytest.mark.parametrize("bad", [
    'Static(f"Delete {name}?")',
    'self.notify(f"deleted {run_id}")',
    'self.notify("gone: " + name, severity="warning")',
    'box.update(message.error.strip())',
    'table.add_row(", ".join(names), key=k)',
    'select.set_options([(f"run {r}", r) for r in ids])',
    'Input(tooltip=f"one of: {x}")',
    'ConfirmScreen(question); Static(str(path))',
    'Hit(1.0, "Open " + title, run)',
    'Static(self.question, classes="dialog-text")',   # the delete dialog's crash
    'self.notify(message.message, severity="error")',
    'def f(x):\n    label = x.name\n    return Label(label)',
    'Hit(score, matcher.highlight(command.title), command.run)',   # the palette's titles
])
def test_the_check_finds_a_built_string(bad):
    assert violations(bad), bad


@pytest.mark.parametrize("good", [
    'Static(plain(f"Delete {name}?"))',
    'self.notify(literal(f"deleted {run_id}"), markup=False)',
    'Static("esc closes")',
    'table.add_row(plain(key), *(plain(v) for v in values))',
    'Input(tooltip=plain(f"one of: {x}"))',
    'Static(plain(self.question), classes="dialog-text")',
    'self.notify(message.message, markup=False)',
    'def f(rows):\n    table = Table(box=None)\n    return Static(table)',
])
def test_the_check_passes_text_and_literals(good):
    assert not violations(good), good
