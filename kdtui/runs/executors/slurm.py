"""`kdtui run SPEC --executor slurm`: each run of a sweep as one task of a Slurm job array, submitted
with submitit (`pip install 'kdtui[slurm]'`).

The workspace sits on the cluster's shared file system. A task runs the ordinary runner
(kdtui.runs.execute) on its compute node against that same workspace, so events, records,
checkpoints and the teacher store land where they land for local runs, and the app, `runs tail`,
`runs show` and `compare` read them unchanged. Runs that share a teacher share it through the
teacher store: the first task that needs it trains it under the store's lock, the others wait for
it and reuse it (so each run is a task of its own; `--array-parallelism` caps how many run at once).

Each record gets `executor = "slurm"` and `slurm_job` (the array task, `12345_3`). `kdtui runs stop`
cancels that task (slurm_jobs.cancel): a pending one never starts and reads `stopped`, a running one
gets Slurm's SIGTERM, which the runner takes as a stop request (`stopped`, with its last
checkpoint; `kdtui runs resume` continues it). In the foreground this process follows the jobs to
their end and settles a run whose task ended without recording an end (killed, out of memory, a
node failure) as `interrupted`; with `--detach` it submits and returns.

Options and the [slurm] settings: kdtui.runs.executors.slurm_jobs. With `cluster = "local"`, the
tasks are processes on this box, through submitit's local executor: a way to try a setup without
Slurm (the tests use it). Submitit keeps each job's pickled call, log and result in
<workspace>/slurm/<job id>/.
"""
from __future__ import annotations

import time
from typing import Callable

from kdtui.core import lifecycle
from kdtui.core.events import ACTIVE_STATUSES, QUEUED
from kdtui.core.registry import RunStore
from kdtui.core.workspace import STOP_FILE, Workspace
from kdtui.runs.executors import Started
from kdtui.runs.executors.slurm_jobs import DEFAULT_TIME_MIN, LOCAL_PREFIX, SlurmOptions

INSTALL_HINT = "--executor slurm needs submitit: pip install 'kdtui[slurm]'"
NO_SLURM_HINT = ("--executor slurm: no Slurm here (sbatch not found); run it on the cluster's login node, or set "
                 "[slurm] cluster = \"local\" in the workspace's settings.toml to try it with local processes")
JOBS_DIR = "slurm"
POLL_S = 1.0
LOCAL_TIME_MIN = 7 * 24 * 60  # submitit's local executor kills a task after its time limit (2 minutes unless told)


class SlurmUnavailable(RuntimeError):
    """submitit or Slurm is missing; the message is one line for the user."""


def require_submitit() -> None:
    """Fail early, with one line, where submitit is not installed."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SlurmUnavailable(INSTALL_HINT) from None


def run_task(workspace_root: str, run_id: str, retrain_teachers: bool) -> str:
    """A job array task's body, on a compute node: run one registered run in the shared workspace.
    Returns the run's final status (its record says the rest)."""
    from kdtui.runs.execute import execute

    workspace = Workspace(workspace_root)
    record = execute(workspace, RunStore(workspace), run_id, retrain_teachers=retrain_teachers)
    return str(record.get("status"))


def sbatch_parameters(options: SlurmOptions) -> dict:
    """submitit's SlurmExecutor parameters for these options: one task of one node per run."""
    parameters = {"job_name": "kdtui", "nodes": 1, "ntasks_per_node": 1, "time": options.time_min or DEFAULT_TIME_MIN,
                  "array_parallelism": options.array_parallelism, "stderr_to_stdout": True}
    if options.partition:
        parameters["partition"] = options.partition
    if options.gpus_per_run:
        parameters["gpus_per_node"] = options.gpus_per_run
    if options.mem_mb:
        parameters["mem"] = f"{options.mem_mb}M"
    return parameters


def _executor(workspace: Workspace, options: SlurmOptions):
    import submitit

    folder = workspace.root / JOBS_DIR / "%j"
    if options.cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=options.time_min or LOCAL_TIME_MIN, gpus_per_node=options.gpus_per_run,
                                   stderr_to_stdout=True)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError:  # submitit looks for srun
        raise SlurmUnavailable(NO_SLURM_HINT) from None
    executor.update_parameters(**sbatch_parameters(options))
    return executor


def _job_id(job, options: SlurmOptions) -> str:
    return f"{LOCAL_PREFIX}{job.job_id}" if options.cluster == "local" else str(job.job_id)


def submit(workspace: Workspace, store: RunStore, run_ids: list[str], options: SlurmOptions,
           retrain_teachers: bool = False) -> dict:
    """Submit the runs as one job array; returns {run id: submitit job}. The runs stay `queued`,
    owned by their job from now on (no pid of this process: it may exit)."""
    executor = _executor(workspace, options)
    count = len(run_ids)
    try:
        jobs = executor.map_array(run_task, [str(workspace.root)] * count, run_ids, [retrain_teachers] * count)
    except FileNotFoundError:  # sbatch
        raise SlurmUnavailable(NO_SLURM_HINT) from None
    for run_id, job in zip(run_ids, jobs):
        store.update(run_id, executor="slurm", slurm_job=_job_id(job, options), pid=None)
    return dict(zip(run_ids, jobs))


def settle(store: RunStore, run_id: str, job) -> dict:
    """The record of a run whose job has ended. A run the task ended records its own end; one still
    `queued` never started (cancelled: `stopped`; the task failed before it: `failed`, with why);
    one still `running` lost its process (`interrupted`, resumable)."""
    record = store.get(run_id)
    if record is None:  # removed meanwhile
        return {"id": run_id, "status": "removed"}
    if record.get("status") not in ACTIVE_STATUSES:
        return record
    if record["status"] == QUEUED:
        problem = _task_error(job)
        if problem is None or store.workspace.run_dir(run_id).joinpath(STOP_FILE).exists():
            return lifecycle.stop(store, run_id)
        return lifecycle.fail(store, run_id, f"slurm job {job.job_id} ended before the run started: {problem}")
    return lifecycle.interrupt(store, run_id)


def _task_error(job) -> str | None:
    """The first line of why a task failed (its exception), or None for a cancelled or clean one."""
    try:
        exception = job.exception()
    except Exception as exc:  # the job has no result at all (cancelled, killed)
        text = str(exc)
        return None if "CANCELLED" in text or "SIGTERM" in text else text.strip().splitlines()[-1][:300]
    return None if exception is None else str(exception).strip().splitlines()[-1][:300]


def follow(store: RunStore, jobs: dict, on_record: Callable[[dict], None] | None = None) -> Started:
    """Wait for every job to end, settling each run as its job ends; Ctrl-C stops the runs not yet
    ended (their jobs are cancelled) and returns at once, `interrupted`."""
    pending = dict(jobs)
    ended: dict[str, dict] = {}
    try:
        while pending:
            for run_id, job in list(pending.items()):
                if job.done():
                    ended[run_id] = settle(store, run_id, job)
                    del pending[run_id]
                    if on_record is not None:
                        on_record(ended[run_id])
            if pending:
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        from kdtui.runs.service import RunService

        service = RunService(store.workspace, store)
        for run_id in pending:
            current = store.get(run_id)
            if current is not None:
                service.stop(current)
                ended[run_id] = store.get(run_id) or current
        return Started(records=[ended[r] for r in jobs if r in ended], interrupted=True)
    return Started(records=[ended[r] for r in jobs])


class SlurmExecutor:
    """Runs as Slurm array tasks; followed to their end from this process unless `detach`."""

    def __init__(self, workspace: Workspace, store: RunStore, options: SlurmOptions, *,
                 retrain_teachers: bool = False, detach: bool = False,
                 on_record: Callable[[dict], None] | None = None):
        self.workspace, self.store, self.options = workspace, store, options
        self.retrain_teachers, self.detach, self.on_record = retrain_teachers, detach, on_record

    def start(self, run_ids: list[str]) -> Started:
        jobs = submit(self.workspace, self.store, run_ids, self.options, self.retrain_teachers)
        if self.detach:
            return Started()
        return follow(self.store, jobs, self.on_record)


def job_ids(store: RunStore, run_ids: list[str]) -> list[str]:
    """The `slurm_job` of each run, in order (what the CLI prints after a submission)."""
    return [str((store.get(run_id) or {}).get("slurm_job", "")) for run_id in run_ids]



def require_cluster(options: SlurmOptions) -> None:
    """Fail early, with one line, where the options ask for Slurm and this box cannot submit to it."""
    import shutil

    if options.cluster == "slurm" and shutil.which("sbatch") is None:
        raise SlurmUnavailable(NO_SLURM_HINT)
