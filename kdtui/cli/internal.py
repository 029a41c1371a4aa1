"""Hidden commands: the entry points of the processes kdtui starts itself (a queue worker, one
torchrun rank, the detached Ray driver). They are not for people, so `--help` does not list them;
they exist so that every process kdtui starts goes through this one command line."""
from __future__ import annotations

from pathlib import Path

import click

from kdtui.cli.common import finish

_WORKSPACE = click.option("--workspace", required=True, type=click.Path(file_okay=False, path_type=Path))
_RETRAIN = click.option("--retrain-teachers", is_flag=True)


@click.command("worker", hidden=True)
@_WORKSPACE
@click.option("--slots-per-gpu", type=click.IntRange(min=1), default=None)
@click.argument("run_ids", nargs=-1)
def worker(workspace: Path, slots_per_gpu: int | None, run_ids: tuple[str, ...]) -> None:
    """A background worker: hold one device slot and run the queue's runs on it, first in line first."""
    from kdtui.runs.executors.worker import serve

    raise finish(serve(workspace, run_ids, slots_per_gpu=slots_per_gpu))


@click.command("ddp-rank", hidden=True)
@_WORKSPACE
@_RETRAIN
@click.argument("run_id")
def ddp_rank(workspace: Path, retrain_teachers: bool, run_id: str) -> None:
    """One torchrun process of a data-parallel run."""
    from kdtui.runs.executors.ddp import run_rank

    raise finish(run_rank(workspace, run_id, retrain_teachers=retrain_teachers))


@click.command("ray-driver", hidden=True)
@_WORKSPACE
@_RETRAIN
@click.option("--address", default=None)
@click.option("--gpus-per-run", type=click.FloatRange(min=0), default=0.0)
@click.argument("run_ids", nargs=-1, required=True)
def ray_driver(workspace: Path, retrain_teachers: bool, address: str | None, gpus_per_run: float,
               run_ids: tuple[str, ...]) -> None:
    """The detached driver of `run --executor ray --detach`."""
    from kdtui.runs.executors.ray_cluster import drive_detached

    raise finish(drive_detached(workspace, list(run_ids), address=address, gpus_per_run=gpus_per_run,
                                retrain_teachers=retrain_teachers))
