"""The Slurm executor's light half: its options (command line over the workspace's settings.toml)
and cancelling a run's job. `kdtui runs stop` and the app use it, so it never imports torch, the
runner or submitit; kdtui.runs.executors.slurm submits and follows the jobs.

    [slurm]                      # in <workspace>/settings.toml; the command line's options win
    partition = "gpu"
    gpus_per_run = 1
    time = "12:00:00"            # Slurm's forms: minutes, H:MM:SS, D-HH[:MM[:SS]]
    mem = "16G"                  # K, M, G or T; a bare number is megabytes, as for sbatch
    array_parallelism = 8        # at most this many runs of a sweep at once
    cluster = "slurm"            # "local": submitit's local executor, processes on this box
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kdtui.core.workspace import Workspace
from kdtui.runs.executors.slots import SETTINGS_NAME

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

SECTION = "slurm"
CLUSTERS = ("slurm", "local")
DEFAULT_TIME_MIN = 60  # on Slurm when none is given (submitit would ask for 5 minutes; the partition's own default is out of its reach)
DEFAULT_ARRAY_PARALLELISM = 64
LOCAL_PREFIX = "local:"  # the job id of a run on submitit's local executor: "local:<controller pid>"
SCANCEL_TIMEOUT_S = 30


class SlurmSettingError(ValueError):
    """A bad Slurm option or setting; one line naming it."""


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 0
    time_min: int | None = None  # None: DEFAULT_TIME_MIN on Slurm, no limit to speak of locally
    mem_mb: int | None = None
    array_parallelism: int = DEFAULT_ARRAY_PARALLELISM
    cluster: str = "slurm"


def slurm_options(workspace: Workspace, *, partition: str | None = None, gpus_per_run: float | None = None,
                  time: str | None = None, mem: str | None = None, array_parallelism: int | None = None) -> SlurmOptions:
    """The options of one submission: each given one, else the workspace's [slurm] setting, else the
    default. SlurmSettingError names the option or the setting that is wrong."""
    settings, where = _settings(workspace)
    given = {"partition": partition, "gpus_per_run": gpus_per_run, "time": time, "mem": mem,
             "array_parallelism": array_parallelism}

    def pick(key: str):
        if given.get(key) is not None:
            return given[key], f"--{key.replace('_', '-')}"
        return settings.get(key), f"{where}: {SECTION}.{key}"

    unknown = sorted(set(settings) - {*given, "cluster"})
    if unknown:
        raise SlurmSettingError(f"{where}: unknown setting {SECTION}.{unknown[0]} (known: partition, gpus_per_run, "
                                f"time, mem, array_parallelism, cluster)")
    options = {}
    value, name = pick("partition")
    if value is not None:
        if not isinstance(value, str) or not value.strip():
            raise SlurmSettingError(f"{name} = {value!r}: must be a partition's name")
        options["partition"] = value.strip()
    value, name = pick("gpus_per_run")
    if value is not None:
        options["gpus_per_run"] = _whole(value, name, minimum=0)
    value, name = pick("time")
    if value is not None:
        options["time_min"] = parse_time(value, name)
    value, name = pick("mem")
    if value is not None:
        options["mem_mb"] = parse_mem(value, name)
    value, name = pick("array_parallelism")
    if value is not None:
        options["array_parallelism"] = _whole(value, name, minimum=1)
    cluster = settings.get("cluster", "slurm")
    if cluster not in CLUSTERS:
        raise SlurmSettingError(f"{where}: {SECTION}.cluster = {cluster!r}: one of {', '.join(CLUSTERS)}")
    return SlurmOptions(**options, cluster=cluster)


def _settings(workspace: Workspace) -> tuple[dict, Path]:
    path = workspace.root / SETTINGS_NAME
    if not path.exists():
        return {}, path
    try:
        table = tomllib.loads(path.read_text()).get(SECTION, {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SlurmSettingError(f"{path}: not a valid settings file ({exc})".splitlines()[0]) from None
    if not isinstance(table, dict):
        raise SlurmSettingError(f"{path}: [{SECTION}] must be a table")
    return table, path


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SlurmSettingError(f"{name} = {value!r}: must be a whole number ≥ {minimum}")
    return value


_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_time(value, name: str = "--time") -> int:
    """A Slurm time limit in whole minutes (rounded up): minutes (an integer too), MM:SS, H:MM:SS,
    D-HH, D-HH:MM or D-HH:MM:SS."""
    text = str(value).strip() if not isinstance(value, bool) else ""
    match = _TIME.fullmatch(text)
    if match is None:
        raise SlurmSettingError(f"{name} = {value!r}: a time limit such as 90, 1:30:00 or 2-00:00:00")
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
        seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    elif len(parts) == 3:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    else:  # minutes, or minutes:seconds
        seconds = parts[0] * 60 + (parts[1] if len(parts) == 2 else 0)
    if seconds <= 0:
        raise SlurmSettingError(f"{name} = {value!r}: must be longer than zero")
    return math.ceil(seconds / 60)


_MEM_UNITS_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_mem(value, name: str = "--mem") -> int:
    """Memory per run in whole megabytes: 16G, 16GB, 500M, 1T; a bare number is megabytes (sbatch's
    own default unit)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(value).strip(), re.IGNORECASE) \
        if not isinstance(value, bool) else None
    if match is None or float(match.group(1)) <= 0:
        raise SlurmSettingError(f"{name} = {value!r}: memory such as 16G or 500M")
    return max(1, math.ceil(float(match.group(1)) * _MEM_UNITS_MB[(match.group(2) or "M").upper()]))


def cancel(record: dict) -> str | None:
    """Cancel the Slurm job of a run (its record's `slurm_job`); None, or one line on what failed.
    Slurm sends the job SIGTERM, which the run takes as a stop request: it ends `stopped`, with its
    last checkpoint. A job that has already ended is left alone."""
    job_id = record.get("slurm_job")
    if not isinstance(job_id, str) or not job_id:
        return None
    if job_id.startswith(LOCAL_PREFIX):
        return _cancel_local(job_id.removeprefix(LOCAL_PREFIX))
    try:
        result = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=SCANCEL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scancel {job_id} failed: {exc}".splitlines()[0]
    if result.returncode != 0:
        return f"scancel {job_id}: {(result.stderr or result.stdout).strip()}".splitlines()[0]
    return None


def _cancel_local(pid_text: str) -> str | None:
    """SIGTERM to the job's submitit controller, which passes it on to the run's process (as Slurm
    would); only while that pid is still such a controller (a pid may be reused)."""
    try:
        pid = int(pid_text)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (ValueError, OSError):
        return None  # no such process: the job has ended
    if b"submitit.local._local" not in command:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return None


# sacct's states of a job that may still run (every other state is an end: COMPLETED, FAILED,
# CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE).
_LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED"}


def job_ended(record: dict) -> bool:
    """Whether the run's job is known to have ended; False while it may run, or when nobody can
    tell (no sacct, no answer). A detached run whose task died stays `running` in the registry (its
    process was on another machine) until `kdtui runs stop` asks this."""
    job_id = record.get("slurm_job")
    if not isinstance(job_id, str) or not job_id:
        return False
    if job_id.startswith(LOCAL_PREFIX):
        try:
            command = Path(f"/proc/{int(job_id.removeprefix(LOCAL_PREFIX))}/cmdline").read_bytes()
        except (ValueError, OSError):
            return True
        return b"submitit.local._local" not in command
    try:
        result = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                                text=True, timeout=SCANCEL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = result.stdout.split()
    return result.returncode == 0 and bool(states) and states[0] not in _LIVE_STATES
