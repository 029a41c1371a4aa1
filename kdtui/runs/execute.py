"""Execute one run: teachers from the store (or trained), then the student, recorded as it goes.

The runner is the only place where the engine's events meet files: each event becomes a line of
`runs/<id>/events.jsonl`, and the registry document is updated at start and at the end (its
status through kdtui.core.lifecycle). It is used in the foreground by `kdtui run` and in the background by `kdtui.runs.executors.worker`.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from kdtui.core.eventlog import EventWriter, read_history
from kdtui.core.files import atomic_write
from kdtui.core import lifecycle
from kdtui.core.events import STOPPED, Done, Failed, Log, PhaseEnd, PhaseStart, Stopped, as_dict
from kdtui.core.provenance import environment
from kdtui.core.record import MetricOutOfBounds, check_metrics
from kdtui.core.registry import RegistryNeedsReindex, RunNotFound, RunStore
from kdtui.core.spec import Spec
from kdtui.core.teachers import INDEPENDENT_SEED_OFFSET, TeacherStore
from kdtui.core.workspace import STOP_FILE, Workspace

STOP_POLL_S = 0.5


class StopSignal:
    """Stop requests: a STOP file in the run folder (from `kdtui runs stop`), SIGTERM or SIGINT."""

    def __init__(self, run_dir: Path):
        self.stop_file = run_dir / STOP_FILE
        self.signalled: int | None = None
        self._next_poll = 0.0
        self._requested = False

    def __call__(self) -> bool:
        if self.signalled is not None:
            return True
        now = time.monotonic()
        if now >= self._next_poll:  # a stat per step would be wasted work; twice a second is enough
            self._next_poll = now + STOP_POLL_S
            self._requested = self.stop_file.exists()
        return self._requested

    def install(self) -> dict:
        """Catch SIGTERM and SIGINT from now on; returns the previous handlers (see `restore`)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set from the main thread; the STOP file still works

        def handler(signum, frame):
            self.signalled = signum
        return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def execute(workspace: Workspace, store: RunStore, run_id: str, *, retrain_teachers: bool = False,
            on_event: Callable[[dict], None] | None = None, device: str | None = None,
            install_signals: bool = True, shards=None) -> dict:
    """Run `run_id` to its end (or resume it from its checkpoints) and return its registry record.

    Never raises for a failed or stopped run: the record says what happened. A run that was
    stopped (or removed) while it waited in the queue is not started: the returned record then has
    `skipped: True` (or is `{"id": run_id, "status": "removed", "skipped": True}`).

    `shards` (kernels.distributed) makes this one process of a data-parallel run (`kdtui run
    --nproc`): every process computes, and only the main one writes events and the record.
    """
    if shards is not None and not shards.main:  # it computes; the main process records the run
        store, on_event = _Unrecorded(store), None
    run_dir = workspace.run_dir(run_id)
    stop = StopSignal(run_dir)
    # Catch Ctrl-C / SIGTERM before the heavy imports: an interrupt that lands inside an import can
    # leave half-initialised modules behind (numpy then recurses forever on its next import).
    previous_handlers = stop.install() if install_signals else {}
    try:
        import torch  # noqa: F401  (imported here so the CLI's other commands never pay for it)
        from kernels import engine  # noqa: F401  (the slow imports come before the claim below)

        from kdtui.core.spec import load_spec

        # Claim the run. `kdtui runs stop` on a queued run marks it stopped, and `runs rm` removes
        # it; either may have happened while this process was importing torch.
        current = store.get(run_id)
        if current is None:
            return {"id": run_id, "status": "removed", "skipped": True}
        if current.get("status") == STOPPED:
            return {**current, "skipped": True}
        if stop.signalled is not None:  # interrupted while starting up: nothing ran, resumable
            return lifecycle.stop(store, run_id)

        spec = load_spec(run_dir / "spec.toml")
        config = spec.to_run_config()
        if device:
            config = _with_device(config, device)
        stop.stop_file.unlink(missing_ok=True)
        return _execute(workspace, _KeptRecord(store, current), run_id, spec, config, stop, retrain_teachers,
                        on_event, shards)
    finally:
        StopSignal.restore(previous_handlers)


def _last_epoch(run_dir: Path) -> dict | None:
    """The student's metrics at its last finished epoch (`{"epoch": N, ...}`, from the run's
    events.jsonl: the one fold, kdtui.core.runstate), which a stopped run shows in place of the final
    metrics it does not have; None before its first epoch."""
    with contextlib.suppress(OSError, ValueError):
        history = read_history(run_dir / "events.jsonl")
        return history[-1] if history and history[-1].get("epoch", 0) > 0 else None
    return None


def _execute(workspace: Workspace, record: "_KeptRecord", run_id: str, spec: Spec, config, stop: StopSignal,
             retrain_teachers: bool, on_event: Callable[[dict], None] | None, shards) -> dict:
    from kernels import engine
    from kernels.data import DataError
    from kernels.distributed import Shards
    from kernels.environment import torch_environment

    shards = shards or Shards()
    run_dir = workspace.run_dir(run_id)
    teachers_used: list[dict] = []
    dev = None

    with EventWriter(run_dir / "events.jsonl") if shards.main else _NoEvents() as events:
        def emit(event) -> None:
            payload = as_dict(event)
            events.write(payload)
            if on_event is not None:
                on_event(payload)

        lifecycle.start(record, run_id, nproc=shards.world)
        crash: tuple[str, str] | None = None  # (the one-line error, what error.txt gets)
        try:
            dev = engine.resolve_device(config.device)
            _reset_peak_memory(dev)
            # After resolve_device, which sets the numeric settings the block records.
            record.update(run_id, device=str(dev), environment=environment(torch_environment(dev)))
            emit(Log(f"run {run_id} on {dev}"))
            prepared = engine.prepare(config, dev, shards)
            teacher_store = TeacherStore(workspace.teachers_dir)

            def obtain_teachers(spec, config, role: str) -> list:
                teachers = []
                for k in range(config.members):
                    teacher, key, reused = teacher_store.obtain(
                        spec, k,
                        train=lambda ckpt, k=k: engine.train_teacher(
                            config, k, prepared, checkpoint=_loadable(ckpt, TEACHER_ADVICE),
                            on_event=emit, should_stop=stop),
                        load=lambda path: _load_teacher(path, dev),
                        save=_save_teacher,
                        retrain=retrain_teachers,
                        shards=shards if shards.world > 1 else None)
                    teacher.key, teacher.cache_dir = key, str(teacher_store.cache_dir(key))
                    if reused:
                        emit(PhaseStart("teacher", index=k, total=config.members, reused=True))
                        emit(PhaseEnd("teacher", index=k, total=config.members, metrics=teacher.metrics))
                    teachers.append(teacher)
                    teachers_used.append({"key": key, "member": k, "reused": reused, "role": role,
                                          **_rounded(teacher.metrics)})
                    record.update(run_id, teachers=teachers_used)
                return teachers

            teachers = obtain_teachers(spec, config, "distilled")
            result = engine.distill(config, prepared, teachers,
                                    checkpoint=_loadable(run_dir / "student.pt", _student_advice(run_id)),
                                    on_event=emit, should_stop=stop)
            record.update(run_id, teacher_cache=result["teacher_cache"])
            if spec.eval.independent:
                result["metrics"].update(_independent_control(
                    spec, config, prepared, teachers, run_dir, obtain_teachers, emit, stop))
            if spec.eval.cka:   # Table 1 (E8): stage-by-stage CKA of teacher and student
                from kernels.cka import teacher_student_cka
                result["metrics"].update(teacher_student_cka(config, prepared, result["student"],
                                                             teachers[0].final_state))
            check_metrics(result["metrics"])  # a metric out of its bounds fails the run, never stored
            emit(Done(result["metrics"]))
            lifecycle.done(record, run_id, result["metrics"])
        except engine.StopRequested as exc:
            emit(Stopped(str(exc)))
            lifecycle.stop(record, run_id, last_epoch_metrics=_last_epoch(run_dir))
        except (engine.RunFailed, DataError, DamagedCheckpoint, MetricOutOfBounds) as exc:
            emit(Failed(str(exc), phase=getattr(exc, "phase", ""), epoch=getattr(exc, "epoch", -1),
                        step=getattr(exc, "step", -1)))
            lifecycle.fail(record, run_id, str(exc))
        except Exception as exc:  # a crash still ends as a failed record, with the trace in the log
            disk = _disk_problem(exc, run_dir)
            # A full or read-only disk is the cause, in one line; anything else keeps its trace.
            crash = (disk, disk + "\n") if disk else (f"{type(exc).__name__}: {exc}".splitlines()[0],
                                                     traceback.format_exc())
        if crash is not None:
            # Recorded outside the handler: the traceback is gone, and with it what the failed write
            # held open (torch.save's unlinked temporary file keeps its blocks until it is closed),
            # so a full disk has room again for the record.
            message, detail = crash
            gc.collect()
            _write_quietly(run_dir / ("error.txt" if shards.main else f"error.rank{shards.rank}.txt"), detail)
            with contextlib.suppress(OSError):  # the log may be what the disk refused
                emit(Failed(message))
            lifecycle.fail(record, run_id, message)
    peak, kind = _peak_memory(dev)
    record.update(run_id, peak_memory_bytes=peak, peak_memory_kind=kind)
    return record.current


_DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left on device (disk quota)",
                errno.EROFS: "read-only file system"}


def _disk_problem(exc: BaseException, run_dir: Path) -> str | None:
    """`no space left on device: cannot write FILE` when a full (or read-only) disk caused `exc`,
    anywhere in its chain. torch.save reports a full disk as a RuntimeError of its own, told here by
    where it was raised and the free space left. None for any other error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_ERRNOS:
            where = seen.filename or run_dir
            return f"{_DISK_ERRNOS[seen.errno]}: cannot write {where}"
        if isinstance(seen, RuntimeError) and _raised_by_torch_save(seen):
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(run_dir).free
                if free < LOW_DISK_BYTES:
                    return (f"no space left on device: a checkpoint could not be saved "
                            f"({free / 2**10:.0f} KiB free on the disk of {run_dir})")
        seen = seen.__cause__ or seen.__context__
    return None


def _raised_by_torch_save(exc: BaseException) -> bool:
    """Whether torch.save raised `exc` (it turns a failed write into a RuntimeError of its own)."""
    return any(frame.filename.endswith(os.path.join("torch", "serialization.py")) and frame.name in ("save", "_save")
               for frame in traceback.extract_tb(exc.__traceback__))


LOW_DISK_BYTES = 64 * 2**20  # less free than this after a failed write: the disk is what failed


def _write_quietly(path: Path, text: str) -> None:
    """Write a whole file or nothing (never an empty error.txt): the disk may be full."""
    with contextlib.suppress(OSError):
        atomic_write(path, text)


def _reset_peak_memory(dev) -> None:
    import torch

    if getattr(dev, "type", None) == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)  # a worker process runs several runs: count this one's


def _peak_memory(dev) -> tuple[int, str]:
    """The run's peak memory: what torch allocated on its CUDA device ("cuda"), else this process's
    peak resident memory ("rss"; the process's whole life: a worker that ran a bigger run before
    reports that one's peak, as the kernel keeps no per-run peak)."""
    import torch

    if getattr(dev, "type", None) == "cuda":
        return int(torch.cuda.max_memory_allocated(dev)), "cuda"
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024), "rss"  # KiB on Linux, bytes on macOS


class _KeptRecord:
    """The run's registry record, also kept in memory as the run changes it. The registry is an
    index that a user may delete or empty while a run goes; the run then puts its whole record back
    on its next write (and so at its end) instead of dying with RunNotFound and losing it."""

    def __init__(self, store: RunStore, current: dict):
        self.store = store
        self.current = dict(current)

    def update(self, run_id: str, **fields) -> dict:
        assert run_id == self.current["id"], "a kept record writes its own run only"
        self.current.update(fields)
        try:
            stored = self.store.update(self.current["id"], **fields)
        except (RunNotFound, RegistryNeedsReindex):
            try:
                stored = self.store.put(self.current)
            except RegistryNeedsReindex:
                # The index is gone while other runs' folders exist: only `kdtui runs reindex` can
                # rebuild it, and it will find this run too, since put wrote record.json first.
                stored = self.current
        self.current = {**self.current, **stored}
        return self.current


def _independent_control(spec: Spec, config, prepared, teachers: list, run_dir: Path, obtain_teachers,
                         emit, stop) -> dict:
    """The paper's E12 baseline: a student distilled from an independent teacher set, measured
    against *this* run's teachers. Its agreement is what fidelity would be without the transfer."""
    from dataclasses import replace

    from kernels import engine

    seed = spec.seed + INDEPENDENT_SEED_OFFSET
    other_spec = spec.model_copy(update={"seed": seed})
    other_config = replace(config, seed=seed)
    other_teachers = obtain_teachers(other_spec, other_config, "independent")
    other = engine.distill(other_config, prepared, other_teachers,
                           checkpoint=_loadable(run_dir / "independent.pt", _student_advice(run_dir.name)),
                           on_event=emit, should_stop=stop, phase="independent")
    fidelity = engine.fidelity_on_test_set(config, prepared, other["student"], teachers)
    return {"independent_test_agreement": fidelity["agreement"], "independent_test_kl": fidelity["kl"],
            "independent_test_acc": other["metrics"]["test_acc"]}


class _Unrecorded:
    """The registry as a non-main process of a data-parallel run sees it: it reads, and its writes
    go nowhere (the main process records the run)."""

    def __init__(self, store: RunStore):
        self._store = store

    def get(self, run_id: str) -> dict | None:
        return self._store.get(run_id)

    def update(self, run_id: str, **fields) -> dict:
        return {**(self._store.get(run_id) or {"id": run_id}), **fields}


class _NoEvents:
    """The event log of a non-main process of a data-parallel run: nothing is written."""

    def __enter__(self) -> "_NoEvents":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def write(self, event: dict) -> dict:
        return event


def _with_device(config, device: str):
    from dataclasses import replace
    return replace(config, device=device)


def _save_teacher(teacher, path: Path) -> None:
    from kernels.saving import save_atomic
    save_atomic({"initial_state": teacher.initial_state, "final_state": teacher.final_state,
                 "metrics": teacher.metrics}, path)


def _load_teacher(path: Path, device):
    import torch
    from kernels.engine import TeacherResult
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        return TeacherResult(state["initial_state"], state["final_state"], state["metrics"])
    except torch.OutOfMemoryError:  # the device is full, the file may be fine
        raise
    except Exception:  # torch's own message would advise weights_only=False: never pass that on
        raise DamagedCheckpoint(path, TEACHER_ADVICE) from None


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be read back; the message names the file and what to do."""

    def __init__(self, path: Path, advice: str):
        self.path = path
        super().__init__(f"checkpoint {path} cannot be read (damaged, or not a PyTorch checkpoint): {advice}")


TEACHER_ADVICE = "run again with --retrain-teachers to train that teacher anew, or delete the file and run again"


def _student_advice(run_id: str) -> str:
    return f"delete it and run again (kdtui runs resume {run_id} then starts this phase over)"


def _loadable(path: Path, advice: str) -> Path:
    """`path`, after checking that the checkpoint there (if any) loads: the engine would otherwise
    fail inside torch.load with torch's message, which advises loading with weights_only=False, an
    unsafe thing to do with a file nobody can vouch for. One extra read, and only on a resume."""
    import torch
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise DamagedCheckpoint(path, advice) from None
        if not isinstance(state, dict):
            raise DamagedCheckpoint(path, advice)
    return path


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}
