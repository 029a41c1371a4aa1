"""The command palette's kdtui commands (Textual's built-in palette, ctrl+p).

A query matches a command's title or its description: "preset" finds every paper preset (their
descriptions say so), "e7" finds preset E7 by its id. Quit and the keys live in the system
commands (`KdtuiApp.get_system_commands`), once.
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Callable, NamedTuple

from textual.command import DiscoveryHit, Hit, Hits, Provider

from kdtui.tui.text import highlighted, literal, markup_literal, plain

EXACT = 10.0   # the score of an exact id match: above every fuzzy one (at most 1)


class Command(NamedTuple):
    title: str
    help: str
    run: Callable[[], object]
    ids: tuple[str, ...] = ()   # words that match exactly (a preset's id: "e7")


class KdtuiCommands(Provider):
    """The main actions, launching or editing each paper preset, and "open run …" for every run."""

    async def startup(self) -> None:
        # Reading the preset files happens once per palette, off the UI thread.
        from kdtui.tui.sources import paper_presets

        self._presets = await asyncio.to_thread(paper_presets)

    def _actions(self) -> list[Command]:
        app = self.app
        return [
            Command("Launch a run (spec editor)", "start from a preset, a file or a past run", app.open_editor),
            Command("Compare marked runs", "side by side, with curves", app.open_compare),
            Command("Runs", "back to the list of runs", app.go_home),
            Command("Queue", "device slots, running runs and the waiting line", app.open_queue),
            Command("Filter runs", "by name, id or status", partial(self._on_runs, "action_filter")),
            Command("Clear marks", "unmark every run", partial(self._on_runs, "action_clear_marks")),
            Command("Reload the registry", "reread kdtui.json now", app.refresh_registry),
        ]

    def _preset_commands(self) -> list[Command]:
        app = self.app
        out = []
        for source in getattr(self, "_presets", []):
            preset_id = source.id.split(":")[1]
            out.append(Command(f"Edit preset {source.title}", source.about,
                               partial(app.open_editor, source.id), (preset_id,)))
            out.append(Command(f"Launch preset {source.title}", source.about,
                               partial(app.launch_source, source.id), (preset_id,)))
        return out

    def _run_commands(self) -> list[Command]:
        out = []
        for record in reversed(self.app.records):
            title = literal(f"Open run {record.get('name', '')} ({record.get('id')}, {record.get('status')})")
            out.append(Command(title, "the live view: curves, epochs, log", partial(self.app.open_run, record["id"])))
        return out

    def _on_runs(self, action: str) -> None:
        self.app.go_home()
        getattr(self.app.screen, action, lambda: None)()

    async def discover(self) -> Hits:
        for command in self._actions():
            # Shown as text: titles and descriptions name runs and presets (the palette reads a
            # `str` as markup; its help takes only a `str`).
            yield DiscoveryHit(plain(command.title), command.run, text=command.title,
                               help=markup_literal(command.help))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        words = query.lower().split()
        groups = ((self._actions(), 1.0), (self._preset_commands(), 0.95), (self._run_commands(), 0.9))
        for commands, weight in groups:
            for command in commands:
                if words and all(word in command.ids for word in words):
                    # The exact id: "e7" is preset E7, above any fuzzy match (a run id with a 7).
                    score = EXACT
                else:
                    # The description counts a little less than the title.
                    score = weight * max(matcher.match(command.title), 0.8 * matcher.match(command.help))
                if score > 0:
                    yield Hit(score, highlighted(command.title, matcher), command.run,
                              text=command.title, help=markup_literal(command.help))
