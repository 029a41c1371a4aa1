"""The run queue of one box: one line of waiting runs, device slots held through OS file locks, no daemon.

- The line is `<workspace>/queue/line.json`: the waiting runs, first in line first, each with the
  slot pools it may use and its launch options. It is one file (a 5,000-point sweep is one write,
  not 5,000 files), replaced atomically, and only read or changed under `line.lock`.
- A slot is a lock file, `<workspace>/queue/<slot>.lock`, held (flock) by the worker that owns it
  (kdtui.runs.executors.worker) and by the run process it forks. The kernel drops the lock when the
  last of them dies, however it dies, so nobody has to clean up after a killed worker.
- A run in the line has no process of its own: its record's `pid` is None, which the registry's
  reconciliation leaves alone. A worker that takes a run from the line gives it its own pid first,
  then the pid of the process that runs it, so from then on a dead process means `interrupted`.

Slots per device come from `--slots-per-gpu`, else the workspace's `settings.toml` (`[queue]
slots_per_gpu = N`), else 1. A run on the GPU holds one slot of one GPU and sees only that GPU
(CUDA_VISIBLE_DEVICES). Without GPUs, and for runs whose spec says `device = "cpu"`, the same number
of CPU slots applies. This module never imports torch: GPUs are counted with CUDA_VISIBLE_DEVICES or
nvidia-smi, before any run's process initialises CUDA.
"""
from __future__ import annotations

import contextlib
# fcntl for the slot locks only: a slot's lock must pass to the run process the worker forks, and
# be freed by the kernel once both are gone (see HeldSlot). Every other lock is filelock's.
import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from kdtui.core.events import ACTIVE_STATUSES, QUEUED
from kdtui.core.files import atomic_write
from kdtui.core.procs import pid_alive
from kdtui.core.registry import RunStore
from kdtui.core.workspace import Workspace
from kernels.config import SLOTS_PER_DEVICE_ENV

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

QUEUE_DIR = "queue"
LINE_NAME = "line.json"
LINE_LOCK_NAME = "line.lock"
SETTINGS_NAME = "settings.toml"
DEFAULT_SLOTS_PER_GPU = 1


class QueueError(ValueError):
    """A bad slot setting (one line, naming the setting)."""


@dataclass(frozen=True)
class Slot:
    name: str           # "gpu0.1": GPU 0, its second slot; "cpu.0"
    gpu: str | None     # the GPU id as CUDA_VISIBLE_DEVICES names it; None for a CPU slot
    per_device: int = 1  # slots of this device: its runs share its memory (the teacher-cache budget)

    @property
    def pool(self) -> str:
        return self.name.rsplit(".", 1)[0]

    def environment(self) -> dict[str, str]:
        """What the run's process must see: only its GPU, and how many runs may share it."""
        shared = {SLOTS_PER_DEVICE_ENV: str(self.per_device)}
        return shared if self.gpu is None else {"CUDA_VISIBLE_DEVICES": self.gpu, **shared}


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


def slots_per_gpu_for(workspace: Workspace, override: int | None) -> int:
    """The launch's `--slots-per-gpu` if given, else the workspace's setting."""
    return check_slots_per_gpu(override) if override is not None else read_slots_per_gpu(workspace)


def plan_slots(gpus: list[str], slots_per_gpu: int) -> dict[str, list[Slot]]:
    """The slot pools: one per GPU ("gpu<id>") when there are GPUs, and "cpu" always."""
    pools = {f"gpu{gpu}": [Slot(f"gpu{gpu}.{k}", gpu, slots_per_gpu) for k in range(slots_per_gpu)] for gpu in gpus}
    pools["cpu"] = [Slot(f"cpu.{k}", None, slots_per_gpu) for k in range(slots_per_gpu)]
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


def is_waiting(record: dict | None) -> bool:
    """Whether a line entry's run still waits for the line to run it. Not if it was removed, stopped
    (`kdtui runs stop` takes a queued run out of the line at once by marking it), or is queued but
    owned by a live process (a foreground `kdtui runs resume` of a run that still had an entry)."""
    return record is not None and record.get("status") == QUEUED and not pid_alive(record.get("pid"))


class HeldSlot:
    """A slot's lock, held through a plain flock so that it survives a fork unchanged: the worker
    and the run process it forks share it, and it is free once both are gone."""

    def __init__(self, slot: Slot, fd: int):
        self.slot = slot
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing our descriptor; the lock goes once no process has it open
            self._fd = None


class RunQueue:
    """The line and the slots of one workspace. Change the line and take slots only inside `locked()`:
    that is what makes "the line is empty, so this worker exits" and "a run joined the line, so who
    serves it" exclusive (see kdtui.runs.executors.launcher)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.folder = workspace.root / QUEUE_DIR

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        import filelock  # here: importing it costs commands that never queue ~50 ms

        self.folder.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.folder / LINE_LOCK_NAME)):
            yield

    # -- the line (call inside `locked()`) ----------------------------------------------------------

    def read_line(self) -> list[dict]:
        """The entries, first in line first: {"run", "pools", "enqueued", "retrain_teachers", "device"}."""
        try:
            entries = json.loads((self.folder / LINE_NAME).read_text())
        except FileNotFoundError:
            return []
        except ValueError:
            return []  # only a writer bypassing kdtui.core.files could leave half a file
        return entries if isinstance(entries, list) else []

    def write_line(self, entries: list[dict]) -> None:
        atomic_write(self.folder / LINE_NAME, json.dumps(entries, separators=(",", ":")))

    def enqueue(self, store: RunStore, run_ids: list[str], gpus: list[str], *, retrain_teachers: bool = False,
                device: str | None = None) -> list[str]:
        """Put registered runs at the end of the line, in the order given, and hand them to the line
        (their `pid` becomes None); returns the ids enqueued. Every run's pools are checked before
        anything is written (QueueError). A run already in the line moves to the end (a resume)."""
        listed = {row["id"]: row for row in store.all()}
        entries = []
        for record in store.with_details(listed[run_id] for run_id in run_ids if run_id in listed):  # not removed
            run_id = record["id"]
            wanted = device or (record.get("spec") or {}).get("device") or "auto"
            entries.append(self.entry(run_id, pools_for_device(wanted, gpus), retrain_teachers=retrain_teachers,
                                      device=device))
        self.append(entries)
        # After the line is written: a launcher killed in between leaves runs that still name it,
        # so they read as interrupted (never runs that wait with nobody to know about them). Runs
        # registered straight into the line (RunService.submit_detached) need no rewrite here.
        store.update_many([entry["run"] for entry in entries], pid=None, slot=None, gpu=None, worker=None)
        return [entry["run"] for entry in entries]

    @staticmethod
    def entry(run_id: str, pools: list[str], *, retrain_teachers: bool = False, device: str | None = None) -> dict:
        return {"run": run_id, "pools": pools, "enqueued": time.time(), "retrain_teachers": retrain_teachers,
                "device": device}

    def append(self, entries: list[dict]) -> None:
        """Put entries at the end of the line; a run already in it moves to the end (a resume)."""
        ids = {entry["run"] for entry in entries}
        self.write_line([e for e in self.read_line() if e.get("run") not in ids] + entries)

    def waiting(self, store: RunStore) -> tuple[list[dict], dict[str, dict]]:
        """The entries whose runs still wait (see `is_waiting`), and the registry's records by id."""
        records = {record["id"]: record for record in store.all()}
        return [e for e in self.read_line() if is_waiting(records.get(e.get("run")))], records

    def take_next(self, store: RunStore, pool: str) -> dict | None:
        """Remove and return the first waiting entry that may use `pool`; entries that no longer
        wait are dropped on the way."""
        line = self.read_line()
        records = {record["id"]: record for record in store.all()}
        kept, taken = [], None
        for entry in line:
            if not is_waiting(records.get(entry.get("run"))):
                continue
            if taken is None and pool in entry.get("pools", ()):
                taken = entry
                continue
            kept.append(entry)
        if len(kept) != len(line):
            self.write_line(kept)
        return taken

    # -- slots ------------------------------------------------------------------------------------

    def try_slot(self, slot: Slot) -> HeldSlot | None:
        """The slot's lock if it is free now, else None. Never blocks."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / f"{slot.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return HeldSlot(slot, fd)

    def free_slots(self, slots: list[Slot]) -> list[Slot]:
        """Which of `slots` nobody holds (each is tried and let go at once)."""
        free = []
        for slot in slots:
            held = self.try_slot(slot)
            if held is not None:
                held.release()
                free.append(slot)
        return free


def demand(entries: list[dict], free: list[Slot]) -> list[Slot]:
    """The free slots that the waiting entries would fill, first in line first: one slot per entry,
    from the entry's own pools."""
    left = list(free)
    used = []
    for entry in entries:
        if not left:
            break
        for slot in left:
            if slot.pool in entry.get("pools", ()):
                left.remove(slot)
                used.append(slot)
                break
    return used


def all_slots(slots: dict[str, list[Slot]]) -> list[Slot]:
    return [slot for members in slots.values() for slot in members]


def queue_state(workspace: Workspace, store: RunStore) -> dict:
    """What `kdtui queue` shows: the slots and who runs in each, and the line, first in line first.
    Raises QueueError for a bad workspace setting."""
    per_gpu = read_slots_per_gpu(workspace)
    gpus = visible_gpus()
    entries, records = RunQueue(workspace).waiting(store)  # no lock: the line is replaced whole, never edited
    holders = {r["slot"]: r for r in records.values()
               if r.get("status") in ACTIVE_STATUSES and r.get("slot") and pid_alive(r.get("pid"))}
    names = [slot.name for pool, members in plan_slots(gpus, per_gpu).items()
             if pool != "cpu" or not gpus for slot in members]
    names += sorted(set(holders) - set(names))  # held under another --slots-per-gpu
    # Workers launched with --slots-per-gpu N hold slots beyond the settings' count: say what is in use.
    in_use = max([per_gpu] + [int(name.rsplit(".", 1)[1]) + 1 for name in holders
                              if name.rsplit(".", 1)[-1].isdigit()])
    return {
        "slots_per_gpu": per_gpu, "slots_per_gpu_in_use": in_use, "gpus": gpus,
        "slots": [{"slot": name, "run": (holders.get(name) or {}).get("id"),
                   "name": (holders.get(name) or {}).get("name") or "",
                   "started": (holders.get(name) or {}).get("started")} for name in names],
        "waiting": [{"run": e["run"], "name": records[e["run"]].get("name") or "", "pools": e.get("pools"),
                     "enqueued": e.get("enqueued")} for e in entries],
    }
