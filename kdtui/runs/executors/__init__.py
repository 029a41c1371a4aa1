"""Where registered runs execute. Every way kdtui runs them implements `Executor`:

- local.LocalExecutor            one after another in this process (the foreground `kdtui run`)
- ddp.DataParallelExecutor       the same, each run as N torchrun processes (`--nproc N`)
- launcher.QueueExecutor         in the background, through the workspace's queue (`--detach`, the app)
- ray_cluster.RayExecutor        as Ray tasks, followed from here or from a detached driver

They differ in what they hand back, so `Started` carries both: a foreground executor returns when
every run has ended, with their final records; a background one returns at once with the pids of
the processes it started (none when running workers already serve the line). Options (retrain,
device, slots, the cluster) go to each constructor: they are not the same for any two of them.

This package's `__init__` stays free of torch and of kdtui.runs.execute: the run service and the
app import the queue's modules from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Started:
    records: list[dict] = field(default_factory=list)  # final records, from an executor that waits for them
    pids: list[int] = field(default_factory=list)      # background processes started (workers, a driver)
    interrupted: bool = False                          # Ctrl-C or a stop ended the foreground early


class Executor(Protocol):
    def start(self, run_ids: list[str]) -> Started:
        """Run registered, queued runs, in the order given."""
        ...
