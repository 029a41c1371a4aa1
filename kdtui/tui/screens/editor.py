"""The spec editor: start from a preset, a spec file or a past run; edit the fields (or the raw
TOML) with validation as you type; see how many runs the sweep expands to; save; launch.

The form edits a TOML-shaped dict (the spec as written, not resolved: left-out fields keep their
data-set defaults, shown as placeholders). Every change is checked by `kdtui.core.spec.spec_from_dict`,
and a problem shows the same one-line message the CLI prints.
"""
from __future__ import annotations

import copy
import functools
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, Select, Static, TabbedContent, TabPane, TextArea

from kdtui.core.files import atomic_write
from kdtui.core.spec import FIELD_PATHS, Spec, SpecError, spec_from_dict
from kdtui.tui.text import literal, plain
from kernels import catalog

CHOICES = {"model": catalog.MODELS, "norm": catalog.NORMS, "optimizer": catalog.OPTIMIZERS,
           "schedule": catalog.SCHEDULES, "dataset": catalog.DATASETS, "loss": catalog.LOSSES,
           "init": catalog.INITS}
FREE_TEXT = {"name", "device", "data.root"}   # strings typed as they are (no TOML parsing)
SWEEP_HELP = ('# one line per swept field: a dotted path = a list of values, e.g.\n'
              '# seed = [0, 1, 2]\n# "distill.temperature" = [1.0, 4.0]\n')


@dataclass
class SourceRead(Message):
    text: str
    source: str          # what messages call it (a file name, "digits.toml", "run <id>")
    path: str = ""       # the file, when it came from one (save offers it)
    error: str = ""


@dataclass
class SourcesListed(Message):
    options: list[tuple[str, str]]    # (title, source id)


# -- fields --------------------------------------------------------------------------------------

def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def field_kind(path: str) -> str:
    """enum | bool | list | str | number, from the spec's pydantic models."""
    leaf = path.rsplit(".", 1)[-1]
    if path in FREE_TEXT:
        return "str"
    model: Any = Spec
    for part in path.split(".")[:-1]:
        model = _unwrap(model.model_fields[part].annotation)
    annotation = _unwrap(model.model_fields[leaf].annotation)
    if leaf in CHOICES and annotation is str:
        return "enum"
    if annotation is bool:
        return "bool"
    if typing.get_origin(annotation) is list or annotation is list:
        return "list"
    if annotation is str:
        return "str"
    return "number"


@functools.cache
def field_help(path: str) -> str:
    """A field's meaning as docs/spec.md gives it (the model's description, else the line
    kdtui.core.spec_docs keeps for it), and its choices when it has a fixed set."""
    from kdtui.core.spec_docs import MEANINGS

    model: Any = Spec
    *sections, leaf = path.split(".")
    for part in sections:
        model = _unwrap(model.model_fields[part].annotation)
    info = model.model_fields[leaf]
    text = info.description or MEANINGS.get(path, "")
    if path not in FREE_TEXT and field_kind(path) == "enum":
        text += f" One of: {', '.join(CHOICES[leaf])}."
    return text


def form_fields() -> list[str]:
    return ["name", *FIELD_PATHS]


def section_of(path: str) -> str:
    """The form section a field is listed under: its table, or "run" for the top-level keys."""
    return path.split(".")[0] if "." in path else "run"


@functools.cache
def section_starts() -> frozenset[str]:
    """The first field of each section (a heading row goes above it)."""
    starts, section = set(), None
    for path in form_fields():
        if section_of(path) != section:
            section = section_of(path)
            starts.add(path)
    return frozenset(starts)


def widget_id(path: str) -> str:
    return "f-" + path.replace(".", "-").replace("_", "-")


def get_path(data: dict, path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(data: dict, path: str, value: Any) -> None:
    """Set (or, with None, remove) a dotted path; empty sections are removed."""
    *sections, leaf = path.split(".")
    node = data
    trail = []
    for part in sections:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is None:
                return
            child = node[part] = {}
        trail.append((node, part))
        node = child
    if value is None:
        node.pop(leaf, None)
        for parent, part in reversed(trail):
            if parent[part]:
                break
            del parent[part]
    else:
        node[leaf] = value


def _scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string ("lenet5"); the validator judges it


def parse_field(kind: str, text: str) -> Any:
    """The value typed in a field; None when empty (= leave it out: the default applies)."""
    text = text.strip()
    if not text:
        return None
    if kind == "str":
        return text
    if kind == "list":
        if text.startswith("["):
            return _scalar(text)
        return [_scalar(part.strip()) for part in text.split(",") if part.strip()]
    return _scalar(text)


def show_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(show_value(v) for v in value)
    return str(value)


def sweep_size(spec: Spec) -> int:
    return math.prod(len(v) for v in (spec.sweep or {}).values()) if spec.sweep else 1


PREVIEW_POINTS = 50   # points listed; the count covers them all


def sweep_preview(spec: Spec) -> Text:
    """'6 runs:' then one line per point with its values (`seed=0, distill.temperature=1.0`),
    the first PREVIEW_POINTS of them; each point validated as `expand_sweep` does at launch."""
    from kdtui.core.spec import expand_sweep

    n = sweep_size(spec)
    if not spec.sweep:
        return Text("no sweep: launches 1 run", style="dim")
    if n > PREVIEW_POINTS:
        # Validating thousands of points on each key press would stall typing: list the first ones.
        import itertools

        keys = list(spec.sweep)
        combos = itertools.islice(itertools.product(*(spec.sweep[k] for k in keys)), PREVIEW_POINTS)
        lines = [", ".join(f"{k}={v}" for k, v in zip(keys, combo)) for combo in combos]
    else:
        try:
            lines = [point.name[len(spec.name) + 1:-1].replace(",", ", ") for point in expand_sweep(spec)]
        except SpecError as exc:
            return Text(f"error: {exc.message}", style="bold red")
    text = Text(f"{n} run{'s' if n != 1 else ''}:\n", style="bold")
    text.append("\n".join(f"{i + 1:>4}  {line}" for i, line in enumerate(lines)))
    if n > len(lines):
        text.append(f"\n      … and {n - len(lines)} more")
    return text


def _sweep_text(sweep: dict | None) -> str:
    if not sweep:
        return ""
    return tomli_w.dumps({str(k): v for k, v in sweep.items()})


@functools.lru_cache(maxsize=16)
def placeholders(dataset: str) -> dict[str, str] | None:
    """Each field's placeholder for a data set: the default a left-out field gets (the student's
    model and norm: the teacher's); None for an unknown data set. Read-only: it is cached."""
    try:
        base = spec_from_dict({"data": {"dataset": dataset}}).resolved().model_dump(mode="json")
    except SpecError:
        return None
    shown = {}
    for path in form_fields():
        default = get_path(base, path)
        shown[path] = show_value(default) if default is not None else ""
    for path in ("student.model", "student.norm"):
        shown[path] = f"{shown[path]} (the teacher's)"
    return shown


def _source_message(workspace, source_id: str) -> SourceRead:
    from kdtui.tui.sources import read_source

    try:
        text, name, path = read_source(workspace, source_id)
        return SourceRead(text, name, path=path)
    except KeyError as exc:
        return SourceRead("", source_id, error=str(exc.args[0]))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        return SourceRead("", source_id, error=f"cannot read {source_id}: {why}")


def _leaves(data: dict, prefix: str = ""):
    """(dotted path, value) for every value of a nested spec dict."""
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _file_title(source_id: str) -> str:
    """A file loaded by path, as the picker lists it: its name first (the picker is half the width)."""
    path = Path(source_id[5:])
    return f"file {path.name} ({path.parent})"


def _same_file(options: list[tuple[str, str]], path: str) -> str | None:
    """The `spec:` source among `options` that is the file at `path` (however either is spelled)."""
    target = Path(path).expanduser().resolve()
    return next((v for _, v in options if v.startswith("spec:") and Path(v[5:]).resolve() == target), None)


class FormLabels(Widget):
    """The form's label column: each section's heading, then its fields' paths, one per line,
    level with the column of one-row inputs beside it (each section's first input keeps a row free
    for the heading). One widget draws them all: a Label per row doubled the widgets Textual
    restyles each time the editor is shown."""

    COMPONENT_CLASSES = {"form-labels--heading"}
    DEFAULT_CSS = """
    FormLabels { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    FormLabels > .form-labels--heading { text-style: bold; color: $accent; }
    """

    def __init__(self, paths: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.styles.width = 2 + max(map(len, paths))  # the longest path, a space either side

    def render(self) -> Text:
        heading = self.get_component_rich_style("form-labels--heading")
        lines = []
        for path in self.paths:
            if path in section_starts():
                section = section_of(path)
                lines.append(Text(section if section == "run" else f"[{section}]", heading))
            lines.append(Text(f" {path}"))
        return Text("\n", no_wrap=True, overflow="ellipsis", end="").join(lines)


# -- the screen ----------------------------------------------------------------------------------

DEFAULT_SOURCE = "preset:digits"

class EditorScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+l,f5", "launch", "Launch", priority=True),
        Binding("ctrl+o", "open_file", "Open file", show=False, priority=True),  # the footer fits 80 columns
        Binding("f2", "tab('tab-form')", "Form", priority=True),
        Binding("f3", "tab('tab-sweep')", "Sweep", priority=True),
        Binding("f4", "tab('tab-toml')", "TOML", priority=True),
        Binding("ctrl+pagedown", "next_tab(1)", "Next tab", show=False, priority=True),
        Binding("ctrl+pageup", "next_tab(-1)", "Previous tab", show=False, priority=True),
        Binding("escape", "back", "Back"),
    ]
    TABS = ("tab-form", "tab-sweep", "tab-toml")
    # What help says beyond the keys.
    HELP_NOTES = ("F2, F3 and F4 show the form, the sweep and the TOML and put the cursor in them. The line "
                  "above the status explains the field the cursor is in (as docs/spec.md does). Started "
                  "from a past run (e on the runs or live screen), the form holds that run's resolved spec: "
                  "change a value and launch (ctrl+l) to run it again as a new run, named after the change.")

    def __init__(self, source_id: str | None = None):
        super().__init__()
        self.start_source = source_id or DEFAULT_SOURCE
        self.data: dict = {}
        self.source = "spec"
        self.path = ""
        self.spec: Spec | None = None
        self.error: SpecError | None = None
        self._loaded_source = ""
        self._toml_dirty = False
        self._form_dirty = False
        self._options: list[tuple[str, str]] = []
        self._built = False          # composed and mounted: the fields can be filled
        self.edited = False          # changed by hand since it was loaded or saved
        self._loaded_text = ""
        self._bad_path: str | None = None
        self._redo_of: dict | None = None   # the past run's spec as loaded, when the editor started from one
        self._paths = set(form_fields())
        self._preview_of: object = ()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="editor-top"):
            yield Select([], prompt="start from…", id="editor-source", compact=True)
            yield Input(placeholder="or a spec file path + enter", id="editor-path", compact=True)
        with TabbedContent(id="editor-tabs", initial="tab-form"):
            with TabPane("Form", id="tab-form"):
                with VerticalScroll(id="editor-form"):
                    yield FormLabels(form_fields(), id="form-labels")
                    with Vertical(id="form-fields"):
                        starts = section_starts()
                        for path in form_fields():
                            yield self._field_widget(path, section_start=path in starts)
            with TabPane("Sweep", id="tab-sweep"):
                yield Static(plain(SWEEP_HELP.replace("# ", "").strip()), classes="hint")
                yield TextArea("", id="editor-sweep", compact=True)
                with VerticalScroll(id="editor-preview-box"):
                    yield Static("", id="editor-preview")
            with TabPane("TOML", id="tab-toml"):
                yield TextArea("", id="editor-toml", compact=True)
        yield Static("", id="editor-field-help")  # the focused field's help
        yield Static("", id="editor-status")
        yield Footer()

    def _field_widget(self, path: str, section_start: bool) -> Input:
        """An input per field; a field with a fixed set of values suggests them as you type (a
        drop-down per field made the editor slow to open). The spec validates the fields, not
        Textual: its own validation (`validate_on`) would restyle each field as it first gets a
        value, and take the `-invalid` mark off a bad field when the cursor leaves it."""
        kind = field_kind(path)
        choices = CHOICES[path.rsplit(".", 1)[-1]] if kind == "enum" else ("true", "false") if kind == "bool" else None
        suggester = SuggestFromList(choices, case_sensitive=False) if choices else None
        tooltip = plain(f"one of: {', '.join(choices)}") if choices else None
        classes = "form-field -section-start" if section_start else "form-field"
        return Input(id=widget_id(path), compact=True, classes=classes, suggester=suggester, tooltip=tooltip,
                     validate_on=())

    def on_mount(self) -> None:
        self._built = True
        self.start(self.start_source)

    def start(self, source_id: str | None) -> None:
        """Show `source_id`'s spec, unedited, on the form tab. The app keeps one editor and calls
        this on each open: composing the form's widgets anew took most of a second. The spec is one
        small file, read here so that the first frame already shows it (not the last one's).
        Called while the editor is still being built (the app builds it in the background), it
        leaves the source for `on_mount`."""
        self.start_source = source_id or DEFAULT_SOURCE
        if not self._built:
            return
        self._loaded_source = self.start_source
        self.query_one(TabbedContent).active = "tab-form"
        self._list_sources()
        self.on_source_read(_source_message(self.app.workspace, self.start_source))

    # -- sources (read in workers) ------------------------------------------------------------

    def _list_sources(self) -> None:
        records = list(reversed(self.app.records))[:50]
        workspace = self.app.workspace

        def work() -> None:
            from kdtui.tui.sources import all_presets, workspace_specs

            presets = all_presets()
            options = [(p.title, p.id) for p in presets + workspace_specs(workspace)]
            options += [(f"run {r['id']} — {r.get('name', '')}", f"run:{r['id']}") for r in records]
            self.post_message(SourcesListed(options))
        self.run_worker(work, thread=True, group="editor-sources", exit_on_error=False)

    def on_sources_listed(self, message: SourcesListed) -> None:
        options = message.options
        if self._loaded_source.startswith("spec:"):  # a file: listed under the name the list gives it
            self._loaded_source = _same_file(options, self._loaded_source[5:]) or self._loaded_source
            if all(v != self._loaded_source for _, v in options):
                options = [*options, (_file_title(self._loaded_source), self._loaded_source)]
        self._show_sources(options)

    def _show_sources(self, options: list[tuple[str, str]]) -> None:
        """The picker's list, and the loaded source picked in it (none when it is not listed)."""
        select = self.query_one("#editor-source", Select)
        # Filled by the editor, not picked by the user: no Select.Changed. The same list again
        # (most opens) is left as it is; rebuilding the picker's list costs a frame.
        with self.prevent(Select.Changed):
            if options != self._options:
                self._options = options
                # As text: a sweep point's name (`…[seed=0,x=1.0]`) broke the markup parser.
                select.set_options([(plain(title), value) for title, value in options])
            if any(value == self._loaded_source for _, value in options):
                select.value = self._loaded_source
            else:
                select.clear()

    def _follow_file(self, path: str) -> None:
        """A spec loaded by its path: the picker names that file (listed if it was not), not the
        source loaded before it."""
        listed = _same_file(self._options, path)
        self._loaded_source = listed or f"spec:{Path(path).expanduser().resolve()}"
        options = self._options if listed else [*self._options, (_file_title(self._loaded_source), self._loaded_source)]
        self._show_sources(options)

    def _read_source(self, source_id: str) -> None:
        workspace = self.app.workspace

        def work() -> None:
            self.post_message(_source_message(workspace, source_id))
        self._loaded_source = source_id
        self.run_worker(work, thread=True, group="editor-read", exclusive=True, exit_on_error=False)

    def _read_file(self, path_text: str) -> None:
        path = Path(path_text).expanduser()

        def work() -> None:
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                self.post_message(SourceRead("", str(path), error=f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"))
                return
            self.post_message(SourceRead(text, str(path), path=str(path)))
        self.run_worker(work, thread=True, group="editor-read", exclusive=True, exit_on_error=False)

    def on_source_read(self, message: SourceRead) -> None:
        if message.error:
            self.notify(literal(message.error), severity="error", markup=False)
            return
        self.source = message.source
        self.path = message.path
        if message.path:
            self._follow_file(message.path)
        self.load_text(message.text)
        self._redo_of = copy.deepcopy(self.data) if self._loaded_source.startswith("run:") else None
        self.edited = False
        self._toml_dirty = self._form_dirty = False

    def load_text(self, text: str) -> None:
        """Take a whole spec as TOML text: fill the form, the sweep and the TOML tab, and
        validate it once."""
        self._loaded_text = text
        with self.prevent(TextArea.Changed):  # not an edit, and validated below
            self.query_one("#editor-toml", TextArea).load_text(text)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            self.data = {}
            self.validate_text(text)
            return
        self.data = data
        self._fill_form()
        self.validate()

    # -- form <-> data ------------------------------------------------------------------------

    def _fill_form(self) -> None:
        """Show `self.data` in the fields and the sweep. Filling is not editing: no Changed
        messages (~50 of them bubbled through the screen on each open), and the caller validates."""
        with self.prevent(Input.Changed, TextArea.Changed):
            for path in form_fields():
                widget = self.query_one(f"#{widget_id(path)}", Input)
                text = show_value(get_path(self.data, path))
                if widget.value != text:
                    widget.value = text
            sweep = self.query_one("#editor-sweep", TextArea)
            text = _sweep_text(self.data.get("sweep"))
            if sweep.text != text:
                sweep.load_text(text)
        self._update_placeholders()

    def _update_placeholders(self) -> None:
        """Left-out fields show the default they would get (per data set) as a placeholder."""
        shown = placeholders(get_path(self.data, "data.dataset") or "digits")
        if shown is None:
            return
        for path in form_fields():
            self.query_one(f"#{widget_id(path)}", Input).placeholder = shown[path]

    def on_descendant_focus(self, event) -> None:
        """The focused field's help on the line above the status (the sweep box: the sweep's)."""
        wid = getattr(event.widget, "id", None) or ""
        path = self._path_of(wid) if wid.startswith("f-") else "sweep" if wid == "editor-sweep" else None
        # Three lines, always there: no layout pass on each move (the form has ~50 fields to place
        # again); the longest meanings are cut at 80 columns (docs/spec.md has them whole).
        help_text = plain(f"{path}: {field_help(path)}" if path else "")
        self.query_one("#editor-field-help", Static).update(help_text, layout=False)

    def on_input_changed(self, event: Input.Changed) -> None:
        wid = event.input.id or ""
        if not wid.startswith("f-"):
            return
        event.stop()
        self.edited = True
        path = self._path_of(wid)
        set_path(self.data, path, parse_field(field_kind(path), event.value))
        if path == "data.dataset":
            self._update_placeholders()
        self._toml_dirty = True
        self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "editor-source":
            return
        if event.value is not Select.NULL and event.value != self._loaded_source:
            self._read_source(str(event.value))

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        wid = event.text_area.id
        # The TOML tab: typing back the text it was filled with (on load, or from the form) is no edit.
        if wid != "editor-toml" or event.text_area.text != self._loaded_text:
            self.edited = True
        if wid == "editor-sweep":
            text = event.text_area.text
            try:
                sweep = tomllib.loads(text) if text.strip() else None
            except tomllib.TOMLDecodeError as exc:
                self._show_error(f"sweep: invalid TOML: {exc}")
                return
            set_path(self.data, "sweep", sweep or None)
            self._toml_dirty = True
            self.validate()
        elif wid == "editor-toml":
            text = event.text_area.text
            if self.validate_text(text):
                self.data = tomllib.loads(text)
                self._form_dirty = True

    _by_id: dict[str, str] = {}

    @classmethod
    def _path_of(cls, wid: str) -> str:
        if not cls._by_id:
            cls._by_id.update((widget_id(p), p) for p in form_fields())
        return cls._by_id[wid]

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id
        focused = self.focused
        if focused is not None and any(isinstance(a, TabPane) and a.id != pane for a in focused.ancestors):
            # A tab picked (a click) with the cursor in a pane going out of sight: the focus would
            # move on inside that pane, and the tabs follow it back.
            self.query_one(self.FOCUS_IN_TAB[pane]).focus()
        if pane == "tab-toml" and self._toml_dirty:
            self._toml_dirty = False
            self._loaded_text = tomli_w.dumps(self.data)
            with self.prevent(TextArea.Changed):  # the form's spec, already validated
                self.query_one("#editor-toml", TextArea).load_text(self._loaded_text)
        elif pane in ("tab-form", "tab-sweep") and self._form_dirty:
            self._form_dirty = False
            self._fill_form()

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> bool:
        try:
            self.spec = spec_from_dict(copy.deepcopy(self.data), source=self.source)
        except SpecError as exc:
            self.spec, self.error = None, exc
            self._show_error(exc.message, exc.path)
            return False
        self.error = None
        n = sweep_size(self.spec)
        runs = "1 run" if n == 1 else f"{n} runs (sweep)"
        self._preview(self.spec)
        self._set_status(Text(f"valid · launches {runs} · ctrl+l launch · ctrl+s save", style="green"), None)
        return True

    def validate_text(self, text: str) -> bool:
        from kdtui.core.spec import parse_spec

        try:
            self.spec = parse_spec(text, source=self.source)
        except SpecError as exc:
            self.spec, self.error = None, exc
            self._show_error(exc.message, exc.path)
            return False
        self.error = None
        n = sweep_size(self.spec)
        self._preview(self.spec)
        self._set_status(Text(f"valid · launches {n} run{'s' if n != 1 else ''}", style="green"), None)
        return True

    def _show_error(self, message: str, path: str | None = None) -> None:
        self._set_status(Text(f"error: {message}", style="bold red"), path)

    def _set_status(self, text: Text, bad_path: str | None) -> None:
        self.query_one("#editor-status", Static).update(text)
        # Only the fields whose state changes: restyling ~50 fields on each key press is slow.
        if bad_path != self._bad_path:
            for path, invalid in ((self._bad_path, False), (bad_path, True)):
                if path is not None and path in self._paths:
                    self.query_one(f"#{widget_id(path)}").set_class(invalid, "-invalid")
            self._bad_path = bad_path

    @property
    def status_text(self) -> str:
        renderable = self.query_one("#editor-status", Static).render()
        return str(getattr(renderable, "plain", renderable))

    # -- actions ------------------------------------------------------------------------------

    def _preview(self, spec: Spec) -> None:
        """The grid the sweep will run, point by point (the Sweep tab), once per sweep change."""
        key = repr(spec.sweep)
        if key == self._preview_of:
            return
        self._preview_of = key
        self.query_one("#editor-preview", Static).update(sweep_preview(spec))

    FOCUS_IN_TAB = {"tab-form": f"#{widget_id('name')}", "tab-sweep": "#editor-sweep", "tab-toml": "#editor-toml"}

    def action_tab(self, pane: str) -> None:
        """Show the tab and put the cursor in it (F3: in the sweep box, ready to type)."""
        self.query_one(TabbedContent).active = pane
        self.query_one(self.FOCUS_IN_TAB[pane]).focus()

    def action_next_tab(self, step: int) -> None:
        # With the cursor in it too: left in a field of the pane going out of sight, the focus moved
        # to the next field of that pane, and the tabs followed it back.
        tabs = self.query_one(TabbedContent)
        self.action_tab(self.TABS[(self.TABS.index(tabs.active) + step) % len(self.TABS)])

    def action_back(self) -> None:
        from kdtui.tui.screens.modals import ConfirmScreen

        if not self.edited:
            self.app.pop_screen()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.pop_screen()
        self.app.push_screen(ConfirmScreen("Discard the unsaved edits to this spec?\n(ctrl+s saves it first)"),
                             answered)

    def action_open_file(self) -> None:
        self.query_one("#editor-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "editor-path" and event.value.strip():
            event.stop()
            self._read_file(event.value.strip())

    def _current_text(self) -> str:
        if self.query_one(TabbedContent).active == "tab-toml":
            return self.query_one("#editor-toml", TextArea).text
        return tomli_w.dumps(self.data)

    def action_save(self) -> None:
        from kdtui.tui.screens.modals import PromptScreen

        text = self._current_text()
        name = str(get_path(self.data, "name") or "spec").replace("/", "_").replace(" ", "_")
        default = self.path or str(Path.cwd() / f"{name}.toml")

        def chosen(path_text: str | None) -> None:
            if not path_text:
                return
            path = Path(path_text).expanduser()

            def write() -> str:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text)
                return f"saved {path}"
            self.path = str(path)
            self.edited = False
            self.app.run_task("save", write)
        self.app.push_screen(PromptScreen("Save the spec (TOML) as:", default), chosen)

    def action_launch(self) -> None:
        if self.query_one(TabbedContent).active == "tab-toml":
            self.validate_text(self.query_one("#editor-toml", TextArea).text)
        else:
            self.validate()
        if self.spec is None:
            message = self.error.message if self.error else "the spec is not valid"
            self.notify(literal(f"not launched: {message}"), severity="error", markup=False)
            return
        self.app.launch_spec(self._redo_named(self.spec), source=self.source)

    def _redo_named(self, spec: Spec) -> Spec:
        """A past run launched again with changed values and its name untouched: named after the
        change, as `kdtui run --from ID --set KEY=VALUE` names it (kdtui.core.redo.redo_name), so the
        new run does not carry the old values in its label."""
        from kdtui.core.redo import redo_name

        before = self._redo_of
        if before is None or spec.sweep or spec.name != before.get("name"):
            return spec
        # The values as typed (`8`, not the model's `8.0`): the name the CLI gives `--set distill.temperature=8`.
        old, new = dict(_leaves(before)), dict(_leaves(self.data))
        changes = [(key, value) for key, value in new.items() if key != "name" and key in old and old[key] != value]
        if not changes:
            return spec
        try:
            return spec_from_dict({**spec.model_dump(mode="json", exclude_none=True),
                                   "name": redo_name(spec.name, changes)}, source=self.source)
        except SpecError:  # e.g. the name grown past its limit: the run keeps the name as written
            return spec

    def on_task_done_here(self, message) -> None:
        if message.kind == "launch" and message.severity == "information":
            self.app.pop_screen()
