"""Help: the keys of the screen underneath, generated from its BINDINGS (and the app's)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from kdtui.tui.text import plain

KEY_NAMES = {"slash": "/", "question_mark": "?", "escape": "esc", "space": "space", "enter": "enter",
             "backspace": "backspace", "ctrl+p": "ctrl+p", "delete": "del"}


def key_text(keys: str) -> str:
    return " / ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def _as_binding(item) -> Binding:
    return item if isinstance(item, Binding) else Binding(*item)


def screen_bindings(screen: Screen) -> list[tuple[str, str]]:
    """(keys, what they do) for a screen: its class's BINDINGS (own class first), then the app's."""
    keys_of: dict[tuple[str, str], list[str]] = {}   # (action, description) -> keys, in order
    seen: set[str] = set()
    owners = [cls for cls in type(screen).__mro__ if "BINDINGS" in vars(cls) and cls.__module__.startswith("kdtui")]
    owners.append(type(screen.app))
    for owner in owners:
        for item in vars(owner).get("BINDINGS", []):
            binding = _as_binding(item)
            if not binding.description:
                continue
            fresh = [k.strip() for k in binding.key.split(",") if k.strip() not in seen]
            seen.update(fresh)
            if fresh:
                keys_of.setdefault((binding.action, binding.description), []).extend(fresh)
    rows = [(key_text(",".join(keys)), description) for (_, description), keys in keys_of.items()]
    rows.append(("ctrl+p", "command palette"))
    return rows


def store_size(app) -> str:
    """The teacher store's size on disk, caches included (it grows by GBs per CIFAR-100 teacher)."""
    from kdtui.core.teachers import TeacherStore, human_size

    workspace = getattr(app, "workspace", None)
    return human_size(TeacherStore(workspace.teachers_dir).total_bytes()) if workspace else "unknown"


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark", "close", "Close")]

    def __init__(self, under: Screen):
        super().__init__()
        self.under = under
        self.rows = screen_bindings(under)

    def compose(self) -> ComposeResult:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        table.add_column("key", no_wrap=True)
        table.add_column("does")
        for keys, what in self.rows:
            table.add_row(plain(keys, style="bold"), plain(what))
        title = getattr(type(self.under), "__name__", "screen").replace("Screen", "").lower() or "app"
        with VerticalScroll(id="help-box"):
            yield Static(Text(f"Keys: {title} screen", style="bold"), id="help-title")
            yield Static(table, id="help-table")
            notes = getattr(self.under, "HELP_NOTES", "")
            if notes:
                yield Static(plain(notes), id="help-notes")
            yield Static(plain(f"teacher store: {store_size(self.app)} (kdtui teachers list / prune)"), id="help-store")
            yield Static("esc closes", id="help-foot")

    def action_close(self) -> None:
        self.dismiss()
