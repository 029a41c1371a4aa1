"""The foreground executor: registered runs one after another in this process (`kdtui run`,
`kdtui runs resume`). The caller shows progress; this module decides what happens to the sweep.

- Ctrl-C between runs, or a run that ends `stopped`, ends the sweep: the runs after it that this
  process still owns become `stopped` (resumable), never left `queued`.
- A run stopped or removed from another shell while it waited is skipped.
- A failed run does not end the sweep.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from kdtui.core.events import STOPPED
from kdtui.core.procs import DeferredInterrupt
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kdtui.runs.execute import execute
from kdtui.runs.executors import Started
from kdtui.runs.service import RunService

OnEvent = Callable[[dict], None]


class LocalExecutor:
    """`watch(run_id)` is entered around each run and gives the run's event callback (a progress
    display); `on_record` hears each run's final record as it ends."""

    def __init__(self, workspace: Workspace, store: RunStore, *, retrain_teachers: bool = False,
                 watch: Callable[[str], ContextManager[OnEvent]] | None = None,
                 on_record: Callable[[dict], None] | None = None):
        self.workspace = workspace
        self.store = store
        self.retrain_teachers = retrain_teachers
        self.watch = watch or (lambda run_id: contextlib.nullcontext(lambda event: None))
        self.on_record = on_record or (lambda record: None)

    def run_one(self, run_id: str, on_event: OnEvent) -> dict:
        return execute(self.workspace, self.store, run_id, retrain_teachers=self.retrain_teachers, on_event=on_event)

    def start(self, run_ids: list[str]) -> Started:
        started = Started()
        for position, run_id in enumerate(run_ids):
            try:
                with DeferredInterrupt() as interrupt:
                    # execute() catches SIGINT itself while it runs; this covers the moments between.
                    with self.watch(run_id) as on_event:
                        interrupt.check()
                        record = self.run_one(run_id, on_event)
            except KeyboardInterrupt:  # Ctrl-C between runs, or while the progress display started
                self._stop_rest(run_ids[position:])
                started.records.append(self.store.get(run_id) or {"id": run_id, "status": STOPPED})
                started.interrupted = True
                break
            if record.get("skipped"):  # stopped or removed from another shell while it waited
                continue
            started.records.append(record)
            self.on_record(record)
            if record["status"] == STOPPED:
                self._stop_rest(run_ids[position + 1:])
                started.interrupted = True
                break
        return started

    def _stop_rest(self, run_ids: list[str]) -> None:
        RunService(self.workspace, self.store).release_owned(run_ids)
