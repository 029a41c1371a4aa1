"""Hidden commands: the entry points of the processes kdtui starts itself (a queue worker, one
torchrun rank, the detached Ray driver). They are not for people, so `--help` does not list them;
they exist so that every process kdtui starts goes through this one command line."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdtui.cli.common import finish, noun

WorkspaceFolder = Annotated[Path, typer.Option("--workspace", file_okay=False)]
Retrain = Annotated[bool, typer.Option("--retrain-teachers")]

worker, ddp_rank, ray_driver = noun(), noun(), noun()


@worker.command("worker", hidden=True)
def worker_command(workspace: WorkspaceFolder,
                   slots_per_gpu: Annotated[Optional[int], typer.Option(min=1)] = None,
                   run_ids: Annotated[Optional[list[str]], typer.Argument()] = None) -> None:
    """A background worker: hold one device slot and run the queue's runs on it, first in line first."""
    from kdtui.runs.executors.worker import serve

    raise finish(serve(workspace, tuple(run_ids or ()), slots_per_gpu=slots_per_gpu))


@ddp_rank.command("ddp-rank", hidden=True)
def ddp_rank_command(workspace: WorkspaceFolder, run_id: str, retrain_teachers: Retrain = False) -> None:
    """One torchrun process of a data-parallel run."""
    from kdtui.runs.executors.ddp import run_rank

    raise finish(run_rank(workspace, run_id, retrain_teachers=retrain_teachers))


@ray_driver.command("ray-driver", hidden=True)
def ray_driver_command(workspace: WorkspaceFolder, run_ids: list[str], retrain_teachers: Retrain = False,
                       address: Annotated[Optional[str], typer.Option()] = None,
                       gpus_per_run: Annotated[float, typer.Option(min=0.0)] = 0.0) -> None:
    """The detached driver of `run --executor ray --detach`."""
    from kdtui.runs.executors.ray_cluster import drive_detached

    raise finish(drive_detached(workspace, list(run_ids), address=address, gpus_per_run=gpus_per_run,
                                retrain_teachers=retrain_teachers))
