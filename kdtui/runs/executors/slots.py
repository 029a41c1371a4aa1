"""The run queue of one box: device slots held through OS file locks, first come first served, no daemon.

Every background run is its own process (kdtui.runs.executors.worker). Before it trains, it waits in line for a slot:

- a slot is a lock file, `<workspace>/queue/<slot>.lock`, held (flock) by the run's process for as
  long as it runs. The kernel drops the lock when that process dies, however it dies, so nobody has
  to clean up after a killed run;
- the line is a folder of tickets, `<workspace>/queue/<enqueue time ns>-<run id>.json`, written by
  the launcher in launch order. Only a run with no live ticket ahead of it in the same pool may take
  a free slot, so runs start in FIFO order. A ticket whose process is gone is dropped by whoever sees it.

Slots per device come from `--slots-per-gpu`, else the workspace's `settings.toml` (`[queue]
slots_per_gpu = N`), else 1. A run on the GPU holds one slot of one GPU and sees only that GPU
(CUDA_VISIBLE_DEVICES). Without GPUs, and for runs whose spec says `device = "cpu"`, the same number
of CPU slots applies. This module never imports torch: GPUs are counted with CUDA_VISIBLE_DEVICES or
nvidia-smi, before the run's process initialises CUDA.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from kdtui.core.procs import pid_alive
from kdtui.core.workspace import Workspace

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

QUEUE_DIR = "queue"
SETTINGS_NAME = "settings.toml"
DEFAULT_SLOTS_PER_GPU = 1
POLL_S = 0.25
TICKET_WAIT_S = 10.0  # how long a new worker waits for the ticket its launcher writes just after starting it


class QueueError(ValueError):
    """A bad slot setting (one line, naming the setting)."""


@dataclass(frozen=True)
class Slot:
    name: str           # "gpu0.1": GPU 0, its second slot; "cpu.0"
    gpu: str | None     # the GPU id as CUDA_VISIBLE_DEVICES names it; None for a CPU slot

    def environment(self) -> dict[str, str]:
        """What the run's process must see: only its GPU."""
        return {} if self.gpu is None else {"CUDA_VISIBLE_DEVICES": self.gpu}


def visible_gpus(env: dict | None = None, query: Callable[[], list[str]] | None = None) -> list[str]:
    """The GPU ids runs may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else none."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [part.strip() for part in env["CUDA_VISIBLE_DEVICES"].split(",") if part.strip()]
        # CUDA stops at the first invalid id ("-1" is the usual way to hide every GPU).
        valid = []
        for gpu in ids:
            if gpu.startswith("-"):
                break
            valid.append(gpu)
        return valid
    return (query or _nvidia_smi_gpus)()


def _nvidia_smi_gpus() -> list[str]:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]


def read_slots_per_gpu(workspace: Workspace) -> int:
    """`[queue] slots_per_gpu` of the workspace's settings.toml, else 1."""
    path = workspace.root / SETTINGS_NAME
    if not path.exists():
        return DEFAULT_SLOTS_PER_GPU
    try:
        value = tomllib.loads(path.read_text()).get("queue", {}).get("slots_per_gpu", DEFAULT_SLOTS_PER_GPU)
    except (tomllib.TOMLDecodeError, AttributeError) as exc:
        raise QueueError(f"{path}: not a valid settings file ({exc})".splitlines()[0]) from None
    return check_slots_per_gpu(value, f"{path}: queue.slots_per_gpu")


def check_slots_per_gpu(value, where: str = "--slots-per-gpu") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QueueError(f"{where} = {value!r}: must be a whole number ≥ 1")
    return value


def plan_slots(gpus: list[str], slots_per_gpu: int) -> dict[str, list[Slot]]:
    """The slot pools: one per GPU ("gpu<id>") when there are GPUs, and "cpu" always."""
    pools = {f"gpu{gpu}": [Slot(f"gpu{gpu}.{k}", gpu) for k in range(slots_per_gpu)] for gpu in gpus}
    pools["cpu"] = [Slot(f"cpu.{k}", None) for k in range(slots_per_gpu)]
    return pools


def pools_for_device(device: str, gpus: list[str]) -> list[str]:
    """Which pools a run may take a slot from, by its spec's device."""
    if device == "cpu" or not gpus:
        return ["cpu"]
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        if index >= len(gpus):
            raise QueueError(f"device = {device!r}: only {len(gpus)} GPU(s) visible ({', '.join(gpus)})")
        return [f"gpu{gpus[index]}"]
    return [f"gpu{gpu}" for gpu in gpus]  # auto / cuda: any GPU


def run_device(slot: Slot) -> str | None:
    """The device override for the run inside its slot: its only visible GPU is cuda:0; on a CPU
    slot, the spec's own device stands."""
    return "cuda:0" if slot.gpu is not None else None


class RunQueue:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.folder = workspace.root / QUEUE_DIR

    # -- the launcher's side -----------------------------------------------------------------

    def enqueue(self, run_id: str, enqueued_ns: int, pid: int) -> Path:
        """Put `run_id` (its worker: `pid`) in line, at the place of `enqueued_ns`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{enqueued_ns:020d}-{run_id}.json"
        _write_json(path, {"run": run_id, "pid": pid, "pools": None})
        return path

    # -- the worker's side -------------------------------------------------------------------

    def wait_for_slot(self, run_id: str, pools: list[str], slots: dict[str, list[Slot]],
                      give_up: Callable[[], bool]) -> tuple[Slot, FileLock] | None:
        """Block until this run is first in line and a slot of one of `pools` is free; return the
        slot and its held lock (release it, or exit, to free the slot). None if `give_up()` turns
        true first (the run was stopped or removed while it waited)."""
        ticket = self._own_ticket(run_id, give_up)
        if ticket is None:
            return None
        _write_json(ticket, {"run": run_id, "pid": os.getpid(), "pools": pools})
        try:
            while not give_up():
                if self._first_in_line(ticket, pools):
                    for pool in pools:
                        for slot in slots[pool]:
                            lock = FileLock(str(self.folder / f"{slot.name}.lock"))
                            try:
                                lock.acquire(timeout=0)
                            except Timeout:
                                continue
                            return slot, lock
                time.sleep(POLL_S)
            return None
        finally:
            ticket.unlink(missing_ok=True)

    def _own_ticket(self, run_id: str, give_up: Callable[[], bool]) -> Path | None:
        deadline = time.monotonic() + TICKET_WAIT_S
        while time.monotonic() < deadline:
            found = sorted(self.folder.glob(f"*-{run_id}.json"))
            if found:
                return found[0]
            if give_up():
                return None
            time.sleep(0.05)
        # Started without a launcher (or its ticket was lost): join the end of the line.
        return self.enqueue(run_id, time.time_ns(), os.getpid())

    def _first_in_line(self, mine: Path, pools: list[str]) -> bool:
        for ticket in self.tickets():
            if ticket["path"] == mine:
                return True
            if not pid_alive(ticket.get("pid")):
                ticket["path"].unlink(missing_ok=True)  # its worker died waiting: it holds no place
                continue
            theirs = ticket.get("pools")
            if theirs is None or set(theirs) & set(pools):
                return False  # a live run ahead of us wants one of our pools (or has not said which yet)
        return True

    def tickets(self) -> list[dict]:
        """The waiting runs, first in line first: {"path", "run", "pid", "pools", "enqueued"}."""
        if not self.folder.exists():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # vanished (it just took its slot) or, briefly, being replaced
            stamp = path.name.split("-", 1)[0]
            out.append({**data, "path": path, "enqueued": int(stamp) / 1e9 if stamp.isdigit() else None})
        return out


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)
