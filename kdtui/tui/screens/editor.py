"""The spec editor: start from a preset, a spec file or a past run; edit the fields (or the raw
TOML) with validation as you type; see how many runs the sweep expands to; save; launch.

The form edits a TOML-shaped dict (the spec as written, not resolved: left-out fields keep their
data-set defaults, shown as placeholders). Every change is checked by `kdtui.core.spec.spec_from_dict`,
and a problem shows the same one-line message the CLI prints.
"""
from __future__ import annotations

import copy
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
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Select, Static, TabbedContent, TabPane, TextArea

from kdtui.core.spec import FIELD_PATHS, Spec, SpecError, spec_from_dict
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
    texts: dict[str, str]


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


def form_fields() -> list[str]:
    return ["name", *FIELD_PATHS]


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


def _sweep_text(sweep: dict | None) -> str:
    if not sweep:
        return ""
    return tomli_w.dumps({str(k): v for k, v in sweep.items()})


# -- the screen ----------------------------------------------------------------------------------

class EditorScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+l,f5", "launch", "Launch", priority=True),
        Binding("ctrl+o", "open_file", "Open file", priority=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, source_id: str | None = None):
        super().__init__()
        self.start_source = source_id or "preset:digits"
        self.data: dict = {}
        self.source = "spec"
        self.path = ""
        self.spec: Spec | None = None
        self.error: SpecError | None = None
        self.texts: dict[str, str] = {}
        self._loaded_source = ""
        self._toml_dirty = False
        self._form_dirty = False
        self._programmatic: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="editor-top"):
            yield Select([], prompt="start from…", id="editor-source", compact=True)
            yield Input(placeholder="or a spec file path + enter", id="editor-path", compact=True)
        with TabbedContent(id="editor-tabs", initial="tab-form"):
            with TabPane("Form", id="tab-form"):
                with VerticalScroll(id="editor-form"):
                    section = ""
                    for path in form_fields():
                        head = path.split(".")[0] if "." in path else "run"
                        if head != section:
                            section = head
                            yield Label(Text(f"[{section}]" if section != "run" else "run"), classes="form-section")
                        with Horizontal(classes="form-row"):
                            yield Label(Text(path), classes="form-label")
                            yield self._field_widget(path)
            with TabPane("Sweep", id="tab-sweep"):
                yield Static(SWEEP_HELP.replace("# ", "").strip(), classes="hint")
                yield TextArea("", id="editor-sweep", compact=True)
            with TabPane("TOML", id="tab-toml"):
                yield TextArea("", id="editor-toml", compact=True)
        yield Static("", id="editor-status")
        yield Footer()

    def _field_widget(self, path: str):
        kind = field_kind(path)
        wid = widget_id(path)
        if kind == "enum":
            choices = CHOICES[path.rsplit(".", 1)[-1]]
            return Select([(c, c) for c in choices], prompt="(default)", id=wid, compact=True, classes="form-field")
        if kind == "bool":
            return Select([("true", True), ("false", False)], prompt="(default)", id=wid, compact=True,
                          classes="form-field")
        return Input(id=wid, compact=True, classes="form-field")

    def on_mount(self) -> None:
        self._list_sources()
        self._read_source(self.start_source)

    # -- sources (read in workers) ------------------------------------------------------------

    def _list_sources(self) -> None:
        records = list(reversed(self.app.records))[:50]

        def work() -> None:
            from kdtui.tui.sources import all_presets

            presets = all_presets()
            options = [(p.title, p.id) for p in presets]
            options += [(f"run {r['id']} — {r.get('name', '')}", f"run:{r['id']}") for r in records]
            self.post_message(SourcesListed(options, {p.id: p.text for p in presets}))
        self.run_worker(work, thread=True, group="editor-sources", exit_on_error=False)

    def on_sources_listed(self, message: SourcesListed) -> None:
        self.texts.update(message.texts)
        select = self.query_one("#editor-source", Select)
        self._programmatic.add("editor-source")
        select.set_options(message.options)
        if any(value == self._loaded_source for _, value in message.options):
            select.value = self._loaded_source

    def _read_source(self, source_id: str) -> None:
        workspace = self.app.workspace

        def work() -> None:
            from kdtui.tui.sources import all_presets, read_run_spec

            kind, _, name = source_id.partition(":")
            try:
                if kind == "run":
                    self.post_message(SourceRead(read_run_spec(workspace, name), f"run {name}"))
                    return
                for preset in all_presets():
                    if preset.id == source_id:
                        self.post_message(SourceRead(preset.text, f"{name}.toml"))
                        return
                self.post_message(SourceRead("", source_id, error=f"no such preset: {name}"))
            except OSError as exc:
                self.post_message(SourceRead("", source_id, error=f"cannot read {source_id}: {exc.strerror or exc}"))
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
            self.notify(message.error, severity="error")
            return
        self.source = message.source
        self.path = message.path
        self.load_text(message.text)

    def load_text(self, text: str) -> None:
        """Take a whole spec as TOML text: fill the form, the sweep and the TOML tab."""
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
        for path in form_fields():
            widget = self.query_one(f"#{widget_id(path)}")
            value = get_path(self.data, path)
            if isinstance(widget, Select):
                new = value if value is not None else Select.NULL
                if widget.value != new or type(widget.value) is not type(new):
                    self._programmatic.add(widget.id)
                    try:
                        widget.value = new
                    except Exception:  # not one of the choices: the validator says why
                        widget.value = Select.NULL
            else:
                text = show_value(value)
                if widget.value != text:
                    self._programmatic.add(widget.id)
                    widget.value = text
        sweep = self.query_one("#editor-sweep", TextArea)
        text = _sweep_text(self.data.get("sweep"))
        if sweep.text != text:
            self._programmatic.add("editor-sweep")
            sweep.load_text(text)
        self._update_placeholders()

    def _update_placeholders(self) -> None:
        """Left-out fields show the default they would get (per data set) as a placeholder."""
        dataset = get_path(self.data, "data.dataset") or "digits"
        try:
            base = spec_from_dict({"data": {"dataset": dataset}}).resolved().model_dump(mode="json")
        except SpecError:
            return
        for path in form_fields():
            widget = self.query_one(f"#{widget_id(path)}")
            default = get_path(base, path)
            shown = show_value(default) if default is not None else ""
            if path == "student.model" or path == "student.norm":
                shown = f"{shown} (the teacher's)"
            if isinstance(widget, Input):
                widget.placeholder = shown
            elif isinstance(widget, Select):
                widget.prompt = f"({shown})" if shown else "(default)"

    def on_input_changed(self, event: Input.Changed) -> None:
        wid = event.input.id or ""
        if not wid.startswith("f-"):
            return
        event.stop()
        if wid in self._programmatic:
            self._programmatic.discard(wid)
        path = self._path_of(wid)
        set_path(self.data, path, parse_field(field_kind(path), event.value))
        self._toml_dirty = True
        self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        wid = event.select.id or ""
        if wid == "editor-source":
            if wid in self._programmatic:
                self._programmatic.discard(wid)
                return
            if event.value is not Select.NULL and event.value != self._loaded_source:
                self._read_source(str(event.value))
            return
        if not wid.startswith("f-"):
            return
        event.stop()
        self._programmatic.discard(wid)
        path = self._path_of(wid)
        value = None if event.value is Select.NULL else event.value
        if get_path(self.data, path) == value and type(get_path(self.data, path)) is type(value):
            return
        set_path(self.data, path, value)
        if path == "data.dataset":
            self._update_placeholders()
        self._toml_dirty = True
        self.validate()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        wid = event.text_area.id
        if wid in self._programmatic:
            self._programmatic.discard(wid)
            return
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
        if pane == "tab-toml" and self._toml_dirty:
            self._toml_dirty = False
            self._programmatic.add("editor-toml")
            self.query_one("#editor-toml", TextArea).load_text(tomli_w.dumps(self.data))
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
        self._set_status(Text(f"valid · launches {n} run{'s' if n != 1 else ''}", style="green"), None)
        return True

    def _show_error(self, message: str, path: str | None = None) -> None:
        self._set_status(Text(f"error: {message}", style="bold red"), path)

    def _set_status(self, text: Text, bad_path: str | None) -> None:
        self.query_one("#editor-status", Static).update(text)
        for widget in self.query(".form-field"):
            widget.set_class(bad_path is not None and widget.id == widget_id(bad_path), "-invalid")

    @property
    def status_text(self) -> str:
        renderable = self.query_one("#editor-status", Static).render()
        return str(getattr(renderable, "plain", renderable))

    # -- actions ------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

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
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text)
                tmp.replace(path)
                return f"saved {path}"
            self.path = str(path)
            self.app.run_task("save", write)
        self.app.push_screen(PromptScreen("Save the spec (TOML) as:", default), chosen)

    def action_launch(self) -> None:
        if self.query_one(TabbedContent).active == "tab-toml":
            self.validate_text(self.query_one("#editor-toml", TextArea).text)
        else:
            self.validate()
        if self.spec is None:
            message = self.error.message if self.error else "the spec is not valid"
            self.notify(f"not launched: {message}", severity="error")
            return
        self.app.launch_spec(self.spec, source=self.source)

    def on_task_done_here(self, message) -> None:
        if message.kind == "launch" and message.severity == "information":
            self.app.pop_screen()
