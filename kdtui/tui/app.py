"""The kdtui terminal app: one client of the workspace, like the CLI.

Threads: a registry watcher and an event streamer run as `@work(thread=True)` loops and post
`RunsLoaded` / `EventsBatch`; actions that touch disk (launch, stop, resume, delete, save, export)
run as one-shot thread workers and post `TaskDone`. The UI thread only folds those messages into
`records` / `live` and redraws the active screen, at most `REDRAW_HZ` times a second.
Runs are separate processes in their own session: quitting the app never stops them.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.widget import AwaitMount
from textual.notifications import Notification
from textual.reactive import var
from textual.screen import ModalScreen
from textual.worker import get_current_worker

from kdtui.core.registry import RegistryCorrupt, RegistryNeedsReindex, RunStore
from kdtui.runs.service import RunService, ServiceError
from kdtui.tui.commands import KdtuiCommands
from kdtui.tui.messages import EventsBatch, RunsLoaded, TaskDone
from kdtui.tui.state import ACTIVE, RunLive
from kdtui.tui.streaming import EventStreamer, RegistryWatcher
from kdtui.tui.text import literal
from kdtui.tui.widgets.gpus import GpuSampler, GpusRead, format_gpus
from kdtui.core.workspace import Workspace

REGISTRY_POLL_S = 1.0
EVENTS_POLL_S = 0.1
REDRAW_HZ = 10


class KdtuiApp(App):
    CSS_PATH = str(Path(__file__).with_name("kdtui.tcss"))  # absolute: subclasses live elsewhere
    TITLE = "kdtui"
    COMMANDS = App.COMMANDS | {KdtuiCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", show=False),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("f1,question_mark", "help", "Help"),
    ]
    gpu_line = var("")   # each GPU's use and memory, as the one sampler last read it; '' for none

    def __init__(self, workspace: Workspace | str | None = None, *, registry_poll: float = REGISTRY_POLL_S,
                 events_poll: float = EVENTS_POLL_S):
        super().__init__()
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.sub_title = literal(self.workspace.root)  # the header shows it as text (not markup)
        self.records: list[dict] = []           # oldest first, as the registry lists them
        self.by_id: dict[str, dict] = {}
        self.live: dict[str, RunLive] = {}
        self.marked: list[str] = []
        self.loaded = False                     # the registry has been read once
        self.registry_error = ""                # why the registry cannot be read now, if it cannot
        self.streamer = EventStreamer(self.workspace)
        self.watcher = RegistryWatcher(self.workspace)
        self.gpus = GpuSampler()
        self.registry_poll = registry_poll
        self.events_poll = events_poll
        self._dirty_records = False
        self._dirty_live: set[str] = set()
        self._flush_pending = False
        self._last_flush = 0.0
        self._closing = False
        self._editor_mounting: AwaitMount | None = None   # the editor being built out of sight
        self._quitting = False                               # exit() was called
        self.errors: list[BaseException] = []   # unexpected errors that stopped the app
        self.crash_file: Path | None = None     # where their tracebacks were written
        self._toasted: set[str] = set()          # notifications already shown as toasts
        self.held: list[Notification] = []      # those raised while a dialog was up: shown after it

    def get_system_commands(self, screen):
        # Textual's Quit and Keys, replaced by ours (one entry each in the palette): quitting leaves
        # the runs going, and the keys are this app's help screen.
        for command in super().get_system_commands(screen):
            if command.title not in ("Quit", "Keys"):
                yield command
        yield SystemCommand("Keys", "the keys of this screen (F1 or ?)", self.action_help)
        yield SystemCommand("Quit", "runs keep going in the background", self.action_quit)

    # -- start ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        from kdtui.tui.screens.runs import RunsScreen

        self.push_screen(RunsScreen())
        self._registry_loop()
        self._events_loop()
        self._gpus_loop()

    @work(thread=True, exclusive=True, group="registry", exit_on_error=False)
    def _registry_loop(self) -> None:
        worker = get_current_worker()
        records: list[dict] | None = None
        last_error = ""
        while not (worker.is_cancelled or self._closing):
            try:
                fresh = self.watcher.poll(records)
                last_error = ""
            except (RegistryNeedsReindex, RegistryCorrupt) as exc:
                # Not "0 runs": the runs screen says what is wrong and what to do, until it is fixed.
                if str(exc) != last_error:
                    last_error = str(exc)
                    self.post_message(RunsLoaded([], error=str(exc)))
                fresh = None
            except Exception as exc:  # e.g. a registry locked too long: say so once, keep watching
                if str(exc) != last_error:
                    last_error = str(exc)
                    self.post_message(TaskDone(f"registry: {exc}", "error"))
                fresh = None
            if fresh is not None:
                records = fresh
                self.post_message(RunsLoaded(fresh))
            self.watcher.force.wait(self.registry_poll)

    @work(thread=True, exclusive=True, group="events", exit_on_error=False)
    def _events_loop(self) -> None:
        worker = get_current_worker()
        while not (worker.is_cancelled or self._closing):
            batch = self.streamer.poll()
            if batch:
                self.post_message(EventsBatch(batch, time.time()))
            self.streamer.wake.wait(self.events_poll)
            self.streamer.wake.clear()

    @work(thread=True, exclusive=True, group="gpus", exit_on_error=False)
    def _gpus_loop(self) -> None:
        self.gpus.run(lambda readings: self.post_message(GpusRead(readings)))

    def on_unmount(self) -> None:
        # Wake the loops so their threads end now; the runs themselves are other processes.
        self._closing = True
        self.watcher.force.set()
        self.streamer.wake.set()
        self.gpus.stop.set()

    def _refresh_notifications(self) -> None:
        """Toasts never cover a dialog (help, a question, the palette): one raised while a dialog
        is up waits, and gets its full time once the dialog closes. (Textual shows toasts on the
        top screen, over the dialog: the launch toast hid the help.) Those shown before stay on the
        screen under the dialog."""
        if self.screen_stack and isinstance(self.screen, ModalScreen):
            for notification in list(self._notifications):
                if notification.identity not in self._toasted:
                    self._unnotify(notification, refresh=False)
                    self.held.append(notification)
            return
        now = time.time()
        for notification in self.held:
            notification.raised_at = now
            self._notifications.add(notification)
        self.held = []
        self._toasted = {notification.identity for notification in self._notifications}
        super()._refresh_notifications()

    def copy_run_id(self, run_id: str) -> None:
        """Copy a run's id to the clipboard by OSC 52 (most terminals; tmux with `set-clipboard
        on`), and show it with the run's folder as text to select where OSC 52 does not reach."""
        self.copy_to_clipboard(run_id)
        folder = self.workspace.run_dir(run_id)
        self.notify(literal(f"{run_id}\nfolder: {folder}\n(copied where the terminal takes OSC 52)"),
                    title="run id", timeout=20, markup=False)

    def refresh_registry(self) -> None:
        """Reread the registry now (after this app changed it)."""
        self.watcher.force.set()

    # -- folding the workers' news in --------------------------------------------------------

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        old_ids = set(self.by_id)
        self.registry_error = message.error
        self.records = message.records
        self.by_id = {r["id"]: r for r in message.records if isinstance(r.get("id"), str)}
        for run_id in old_ids - set(self.by_id):  # deleted (here or from the shell)
            self.streamer.forget(run_id)
            self.live.pop(run_id, None)
            if run_id in self.marked:
                self.marked.remove(run_id)
        for run_id, record in self.by_id.items():
            if record.get("status") in ACTIVE:
                self.live_state(run_id)
                self.streamer.want(run_id, "active")
            else:
                self.streamer.unwant(run_id, "active")
        if not self.loaded:
            self.call_after_refresh(self.prepare_editor)  # once the runs are on screen
        self.loaded = True
        self._dirty_records = True
        self._schedule_flush()

    def on_events_batch(self, message: EventsBatch) -> None:
        for run_id, events in message.events.items():
            self.live_state(run_id).feed(events)
            self._dirty_live.add(run_id)
        self._schedule_flush()

    def on_gpus_read(self, message: GpusRead) -> None:
        self.gpu_line = format_gpus(message.readings)

    def live_state(self, run_id: str) -> RunLive:
        live = self.live.get(run_id)
        if live is None:
            live = self.live[run_id] = RunLive(run_id)
        return live

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        self._flush_pending = True
        delay = self._last_flush + 1.0 / REDRAW_HZ - time.monotonic()
        if delay > 0.002:
            self.set_timer(delay, self._redraw_now)
        else:
            self.call_later(self._redraw_now)

    def _redraw_now(self) -> None:
        self._flush_pending = False
        self._last_flush = time.monotonic()
        records_changed, live_ids = self._dirty_records, self._dirty_live
        self._dirty_records, self._dirty_live = False, set()
        if self._closing or not self.screen_stack:
            return  # shutting down
        # The active screen redraws what changed; a screen under a modal (help, confirm) that
        # asks to (`keep_current`) keeps up too. One being taken down (quitting) is skipped.
        screens = [self.screen] + [s for s in self.screen_stack[:-1] if getattr(s, "keep_current", False)]
        for screen in screens:
            handler = getattr(screen, "on_data", None)
            if handler is None or not screen.is_attached:
                continue
            try:
                handler(records_changed, live_ids)
            except NoMatches:
                pass

    # -- background actions ------------------------------------------------------------------

    def run_task(self, kind: str, fn: Callable[[], TaskDone | str]) -> None:
        """Run `fn` in a worker thread; its result (or its error, in one line) comes back as TaskDone."""
        def job() -> None:
            try:
                result = fn()
                done = result if isinstance(result, TaskDone) else TaskDone(str(result))
            except Exception as exc:
                done = TaskDone(_one_line(exc), "error")
            done.kind = done.kind or kind
            self.post_message(done)
        self.run_worker(job, thread=True, group=f"task-{kind}", exit_on_error=False)

    def on_task_done(self, message: TaskDone) -> None:
        if self._closing or not self.screen_stack:
            return
        if message.message:
            self.notify(literal(message.message), severity=message.severity,
                        timeout=8 if message.severity == "error" else 5, markup=False)
        self.refresh_registry()
        handler = getattr(self.screen, "on_task_done_here", None)
        if handler is not None:
            handler(message)

    def store(self) -> RunStore:
        return RunStore(self.workspace)

    def service(self) -> RunService:
        return RunService(self.workspace, self.store())

    def stop_runs(self, run_ids: list[str]) -> None:
        def stop() -> TaskDone:
            service = self.service()
            messages = []
            for run_id in run_ids:
                record = service.store.get(run_id)
                messages.append(service.stop(record).message if record else f"{run_id}: gone")
            head = f"stopping {_count(len(run_ids), 'run')}"
            return TaskDone("\n".join([head, *messages[:5]] + ([f"… and {len(messages) - 5} more"]
                                                              if len(messages) > 5 else [])), run_ids=run_ids)
        self.run_task("stop", stop)

    def resume_runs(self, run_ids: list[str]) -> None:
        def resume() -> TaskDone:
            service = self.service()
            records = [record for record in map(service.store.get, run_ids) if record is not None]
            if not records:
                return TaskDone("nothing to resume", "warning")
            try:
                service.resume_detached(records)
            except ServiceError as exc:
                return TaskDone(str(exc), "warning")
            resumed = [record["id"] for record in records]
            return TaskDone(f"resumed {_count(len(resumed), 'run')} in the background: {_ids(resumed)}",
                            run_ids=resumed)
        self.run_task("resume", resume)

    def delete_runs(self, run_ids: list[str]) -> None:
        def delete() -> TaskDone:
            service = self.service()
            records = [record for record in map(service.store.get, run_ids) if record is not None]
            try:
                outcomes = service.remove(records)
            except ServiceError as exc:
                return TaskDone(str(exc), "warning")
            done = [outcome.run_id for outcome in outcomes]
            message = f"deleted {_count(len(done), 'run')}: {_ids(done)}" if done else "nothing deleted"
            return TaskDone(message, run_ids=done)
        self.run_task("delete", delete)

    def launch_source(self, source_id: str) -> None:
        """Launch a spec source (a preset at a scale, from the palette) as it is."""
        def launch() -> TaskDone:
            from kdtui.core.spec import parse_spec
            from kdtui.tui.sources import read_source

            text, name, _ = read_source(self.workspace, source_id)
            kind, _, rest = source_id.partition(":")
            # A paper preset at a scale ("preset:<id>:<scale>"): its records keep (id, scale).
            preset = tuple(rest.split(":")) if kind == "preset" and rest.count(":") == 1 else None
            return self._launch(parse_spec(text, source=name), name, preset)
        self.run_task("launch", launch)

    def launch_spec(self, spec, source: str = "spec") -> None:
        """Register every point of the spec's sweep and start them in the background: the same as
        `kdtui run SPEC --detach`."""
        self.run_task("launch", lambda: self._launch(spec, source))

    def _launch(self, spec, source: str, preset: tuple[str, str] | None = None) -> TaskDone:
        from kdtui.core.spec import check_files, expand_sweep

        points = [point.resolved() for point in expand_sweep(spec, source=source)]
        check_files(points, source)  # a `tensors:` file that is not there fails now, not in the run
        try:  # a bad slot setting or a device no slot fits: one line, nothing registered
            run_ids, _ = self.service().submit_detached(points, preset=preset)
        except ServiceError as exc:
            return TaskDone(str(exc), "error")
        what = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs"
        return TaskDone(f"launched {what} in the background (queued for a device slot)", run_ids=run_ids)

    # -- navigation (keys, the command palette) ----------------------------------------------

    def action_help(self) -> None:
        from kdtui.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        self.push_screen(HelpScreen(self.screen))

    def open_run(self, run_id: str) -> None:
        from kdtui.tui.screens.live import LiveScreen

        self.push_screen(LiveScreen(run_id))

    @work(thread=True, group="prepare-editor", exit_on_error=False)
    def prepare_editor(self) -> None:
        """Build the spec editor out of sight, so that opening it only has to show it: importing it
        (pydantic comes with the spec) and composing its ~50 fields took most of a second on the
        first open. The import happens here, off the UI thread; the screen is built on it."""
        import kdtui.tui.screens.editor  # noqa: F401

        self.call_later(self.build_editor)

    def build_editor(self) -> None:
        from kdtui.tui.screens.editor import EditorScreen

        if self._quitting or not self.is_running or self.is_screen_installed("editor"):
            return  # on the way out: it would never finish
        self.install_screen(EditorScreen(), name="editor")
        # Pushed and popped in one go (no frame in between): it composes and mounts in the
        # background, and `open_editor` finds it installed.
        self._editor_mounting = self.push_screen("editor")
        self.pop_screen()

    def _handle_exception(self, error: Exception) -> None:
        # An error nothing caught stops the app (Textual's way, exit status 1). Its traceback goes to
        # a file in the workspace and `run_app` prints one line naming it; the runs are untouched.
        from kdtui.tui.crash import write_crash

        self.errors.append(error)
        try:
            self.crash_file = write_crash(self.workspace.root, self.errors, self.crash_file)
        except OSError:
            pass  # no file: Textual prints the traceback to the terminal instead
        super()._handle_exception(error)

    def _print_error_renderables(self) -> None:
        if self.crash_file is None:
            super()._print_error_renderables()

    async def _editor_built(self) -> None:
        """Let the editor's out-of-sight build finish (a fraction of a second) before the app goes
        down. Textual closes an installed screen that is on no stack node by node, in no set order
        (it prunes only the screens on a stack), and once `exit` is called no widget counts as
        attached: quitting mid-build left the editor's widgets half mounted, and its ContentTabs
        found no tab ("No Tab with id '--content-tab-tab-form'"), a crash on the way out."""
        mounting, self._editor_mounting = self._editor_mounting, None
        if mounting is not None:
            try:
                await asyncio.wait_for(mounting(), timeout=10)
            except Exception:  # noqa: BLE001 - a build that fails or hangs must not stop the quit
                pass

    def exit(self, *args, **kwargs) -> None:
        self._quitting = True  # no editor build starts from here on
        super().exit(*args, **kwargs)

    async def action_quit(self) -> None:
        await self._editor_built()
        self.exit()

    async def _shutdown(self) -> None:
        await self._editor_built()  # (the test harness shuts the app down without quitting it)
        await super()._shutdown()

    def open_editor(self, source_id: str | None = None) -> None:
        from kdtui.tui.screens.editor import EditorScreen

        # One editor for the app's life (installed screens survive being popped): building its
        # form again on each open took seconds.
        if not self.is_screen_installed("editor"):
            self.install_screen(EditorScreen(source_id), name="editor")
            self.push_screen("editor")
            return
        editor = self.get_screen("editor")
        if editor in self.screen_stack:
            while self.screen is not editor:
                self.pop_screen()
        else:
            self.push_screen("editor")
        editor.start(source_id)

    def open_compare(self, run_ids: list[str] | None = None) -> None:
        from kdtui.tui.screens.compare import CompareScreen

        run_ids = list(run_ids if run_ids is not None else self.marked)
        if len(run_ids) < 2:
            self.notify("mark two or more runs first (space or m on the runs screen)", severity="warning",
                        markup=False)
            return
        # The marks stay (compare again, or stop the same set); the runs screen shows them and how
        # many, and u or esc clears them.
        self.push_screen(CompareScreen(run_ids))

    def open_queue(self) -> None:
        from kdtui.tui.screens.queue import QueueScreen

        if not isinstance(self.screen, QueueScreen):
            self.push_screen(QueueScreen())

    def open_log(self, run_id: str) -> None:
        from kdtui.tui.screens.log import LogScreen

        self.push_screen(LogScreen(run_id))

    def go_home(self) -> None:
        from kdtui.tui.screens.runs import RunsScreen

        while len(self.screen_stack) > 1 and not isinstance(self.screen, RunsScreen):
            self.pop_screen()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ids(run_ids: list[str], shown: int = 4) -> str:
    more = f" and {len(run_ids) - shown} more" if len(run_ids) > shown else ""
    return ", ".join(run_ids[:shown]) + more


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def run_app(workspace: str | None = None, mouse: bool = True) -> int:
    """Start the terminal app on `workspace` (--workspace, else $KDTUI_HOME, else ./runs); return its
    exit status: non-zero after a crash, with one line on stderr naming the crash file."""
    import sys

    from kdtui.tui.crash import crash_line

    app = KdtuiApp(workspace)
    app.run(mouse=mouse)
    if app.crash_file is not None:
        print(crash_line(app.errors[0], app.crash_file), file=sys.stderr)
    return app.return_code or 0
