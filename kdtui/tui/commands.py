"""The command palette's kdtui commands (Textual's built-in palette, ctrl+p)."""
from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class KdtuiCommands(Provider):
    """The main actions, plus "open run …" for every run."""

    def _actions(self) -> list[tuple[str, str, object]]:
        app = self.app
        return [
            ("Launch a run (spec editor)", "start from a preset, a file or a past run", app.open_editor),
            ("Compare marked runs", "side by side, with curves", app.open_compare),
            ("Runs", "back to the list of runs", app.go_home),
            ("Filter runs", "by name, id or status", partial(self._on_runs, "action_filter")),
            ("Keys of this screen", "help (F1 or ?)", app.action_help),
            ("Reload the registry", "reread kdtui.json now", app.refresh_registry),
            ("Quit", "runs keep going in the background", app.exit),
        ]

    def _on_runs(self, action: str) -> None:
        self.app.go_home()
        getattr(self.app.screen, action, lambda: None)()

    async def discover(self) -> Hits:
        for title, help_text, command in self._actions():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, command in self._actions():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, text=title, help=help_text)
        for record in reversed(self.app.records):
            title = f"Open run {record.get('name', '')} ({record.get('id')}, {record.get('status')})"
            score = matcher.match(title)
            if score > 0:
                yield Hit(score * 0.9, matcher.highlight(title), partial(self.app.open_run, record["id"]),
                          text=title)
