"""A hostile disk (issue 17): deletes that strand nothing, symlinked run folders, a missing or
misshapen index, read-only and full disks, huge event logs, and what validation knows before a run.

Read-only and full disks are simulated by patching the write sites to raise OSError(EROFS/ENOSPC)
(the tests run as root, where chmod does not refuse anything). The CLI runs in this process
(`kdtui.cli.main`) so the patches apply; each case checks the exit code and that stderr is one line.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from kdtui.cli import main
from kdtui.core import registry as registry_module
from kdtui.core.registry import INDEX_DIR, RunStore, shard_of
from tests.cli_helpers import fake_run

RUN_A = "261201-120000-aaaa"
RUN_B = "261201-120001-bbbb"


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`kdtui ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["kdtui", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    assert "Traceback" not in text
    return lines[0]


def refuse_writes(monkeypatch, code: int = errno.EROFS) -> None:
    """Every atomic write of the registry and of the run folders raises `code`."""
    def refuse(target, *args, **kwargs):
        if isinstance(target, (str, Path)):
            raise OSError(code, os.strerror(code), str(target))
        items = list(target)
        if items:  # atomic_write_many: the first file; writing nothing fails nowhere
            raise OSError(code, os.strerror(code), str(items[0][0]))

    import importlib

    # Imported first: a module imported under the patch would keep the refusing function for good.
    for module in ("kdtui.core.registry", "kdtui.runs.service", "kdtui.runs.executors.slots", "kdtui.core.files"):
        importlib.import_module(module)
        for name in ("atomic_write", "atomic_write_many"):
            if hasattr(sys.modules[module], name):
                monkeypatch.setattr(f"{module}.{name}", refuse)


@pytest.fixture
def ws(tmp_path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    fake_run(workspace, RUN_A)
    fake_run(workspace, RUN_B)
    return workspace


# -- build 2: deletes are ordered; symlinked run folders ---------------------------------------------

def test_rm_with_a_failing_index_write_leaves_the_run_listed_and_whole(ws, monkeypatch, capsys):
    before = sorted(p.name for p in (ws / RUN_A).iterdir())
    refuse_writes(monkeypatch)
    code, _, err = cli(monkeypatch, capsys, "runs", "rm", RUN_A, "-y", "-w", ws)
    assert code == 2
    assert "Read-only file system" in one_line(err)
    monkeypatch.undo()
    assert RunStore(ws).get(RUN_A) is not None
    assert sorted(p.name for p in (ws / RUN_A).iterdir()) == before  # record.json included


def test_rm_removes_index_entry_and_folder(ws, monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, "runs", "rm", RUN_A, "-y", "-w", ws)
    assert code == 0 and f"deleted {RUN_A}" in out
    assert RunStore(ws).get(RUN_A) is None and not (ws / RUN_A).exists()
    assert RunStore(ws).get(RUN_B) is not None


def test_rm_refuses_a_symlinked_run_folder_and_deletes_nothing_outside(ws, tmp_path, monkeypatch, capsys):
    outside = tmp_path / "outside"
    (ws / RUN_A).rename(outside)
    (ws / RUN_A).symlink_to(outside, target_is_directory=True)
    code, _, err = cli(monkeypatch, capsys, "runs", "rm", RUN_A, "-y", "-w", ws)
    assert code == 2
    assert "symbolic link" in one_line(err) and RUN_A in err
    assert (outside / "record.json").is_file() and (outside / "events.jsonl").is_file()
    assert (ws / RUN_A).is_symlink() and RunStore(ws).get(RUN_A) is not None


def test_reindex_refuses_a_symlinked_run_folder(ws, tmp_path, monkeypatch, capsys):
    outside = tmp_path / "outside"
    (ws / RUN_A).rename(outside)
    (ws / RUN_A).symlink_to(outside, target_is_directory=True)
    code, out, _ = cli(monkeypatch, capsys, "runs", "reindex", "-w", ws)
    assert code == 0
    assert f"{RUN_A}: a symbolic link" in out
    ids = {r["id"] for r in RunStore(ws).all()}
    assert ids == {RUN_B}


# -- build 4: the index is rebuilt or named, never silently empty -------------------------------------

def _damage_index(ws: Path, how: str) -> None:
    shard = ws / INDEX_DIR / f"{shard_of(RUN_A)}.json"
    if how == "no index folder":
        import shutil

        shutil.rmtree(ws / INDEX_DIR)
    elif how == "no shard":
        shard.unlink()
    elif how == "shard of the wrong shape":
        shard.write_text(json.dumps({"x": 5}))
    elif how == "old root, no index folder":  # a root written before it listed its shards
        import shutil

        root = json.loads((ws / "kdtui.json").read_text())
        for doc in root["meta"].values():
            doc.pop("written", None)
        (ws / "kdtui.json").write_text(json.dumps(root))
        shutil.rmtree(ws / INDEX_DIR)


@pytest.mark.parametrize("how", ["no index folder", "no shard", "shard of the wrong shape", "old root, no index folder"])
@pytest.mark.parametrize("command", [("runs", "list"), ("runs", "export"), ("runs", "show", RUN_A),
                                     ("runs", "stop", "--all", "-y"), ("queue",)])
def test_a_lost_or_misshapen_index_names_reindex(ws, monkeypatch, capsys, how, command):
    _damage_index(ws, how)
    code, out, err = cli(monkeypatch, capsys, *command, "-w", ws)
    assert code == 2, (out, err)
    assert "kdtui runs reindex" in one_line(err)
    assert out == ""


def test_reindex_after_a_lost_index_lists_every_run_again(ws, monkeypatch, capsys):
    _damage_index(ws, "no index folder")
    assert cli(monkeypatch, capsys, "runs", "reindex", "-w", ws)[0] == 0
    code, out, _ = cli(monkeypatch, capsys, "runs", "list", "--full-ids", "-w", ws)
    assert code == 0 and RUN_A in out and RUN_B in out


def test_a_write_never_recreates_a_lost_shard_with_its_new_rows_only(ws):
    _damage_index(ws, "no shard")
    with pytest.raises(registry_module.RegistryNeedsReindex):
        RunStore(ws).update(RUN_B if shard_of(RUN_B) == shard_of(RUN_A) else RUN_A, name="x")
    assert not (ws / INDEX_DIR / f"{shard_of(RUN_A)}.json").exists()


# -- build 9: stopping many runs is one write; a worker never starts a stopped run ---------------------

def _generation(ws: Path) -> int:
    (meta,) = json.loads((ws / "kdtui.json").read_text())["meta"].values()
    return meta["generation"]


def _queued(ws: Path, n: int) -> list[str]:
    ids = [f"261202-1200{k // 60:02d}-{k:04x}" for k in range(n)]
    RunStore(ws).add_many([{"id": run_id, "name": f"q{k}", "status": "queued", "pid": os.getpid(),
                            "host": os.uname().nodename, "group_hash": "ab" * 32} for k, run_id in enumerate(ids)])
    for run_id in ids:
        (ws / run_id).mkdir(exist_ok=True)
    return ids


@pytest.mark.parametrize("selector", [("--all",), ("--group", "abab")])
def test_stop_of_many_queued_runs_is_one_registry_write(tmp_path, monkeypatch, capsys, selector):
    ws = tmp_path / "ws"
    ids = _queued(ws, 40)
    before = _generation(ws)
    code, out, _ = cli(monkeypatch, capsys, "runs", "stop", *selector, "-y", "-w", ws)
    assert code == 0 and "40 of 40 run(s) stopped" in out
    assert _generation(ws) == before + 1
    records = {r["id"]: r for r in RunStore(ws).all()}
    assert all(records[run_id]["status"] == "stopped" for run_id in ids)
    assert all((ws / run_id / "STOP").exists() for run_id in ids)
    assert all(json.loads((ws / run_id / "record.json").read_text())["status"] == "stopped" for run_id in ids)


def test_a_worker_does_not_claim_a_run_stopped_after_the_line_was_read(tmp_path):
    from kdtui.core import lifecycle
    from kdtui.runs.executors import worker
    from kdtui.runs.executors.slots import Slot

    ws = tmp_path / "ws"
    stopped, waiting = _queued(ws, 2)
    store = RunStore(ws)
    lifecycle.stop_queued(store, [stopped])
    before = store.get(stopped)
    assert worker._claim(store, stopped, Slot("cpu.0", None)) is False
    assert store.get(stopped) == before  # nothing written: no worker pid, no slot
    assert worker._claim(store, waiting, Slot("cpu.0", None)) is True
    assert store.get(waiting)["slot"] == "cpu.0" and store.get(waiting)["worker"] == os.getpid()


# -- build 7: one line, no traceback ------------------------------------------------------------------

@pytest.mark.parametrize("command", [("runs", "rm", RUN_A, "-y"), ("runs", "reindex"), ("runs", "stop", RUN_A),
                                     ("runs", "resume", RUN_A, "--detach")])
def test_a_read_only_workspace_is_one_line_on_every_write(ws, monkeypatch, capsys, command):
    from kdtui.core import lifecycle

    lifecycle.stop(RunStore(ws), RUN_A) if command[1] == "resume" else None  # a resumable run
    if command[1] == "stop":
        RunStore(ws).update(RUN_A, status="queued", pid=None)  # a queued run: stopping it writes the registry
    refuse_writes(monkeypatch)
    code, _, err = cli(monkeypatch, capsys, *command, "-w", ws)
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: ") and "Read-only file system" in line and str(ws) in line


def test_a_read_only_workspace_is_one_line_for_report(ws, monkeypatch, capsys):
    pytest.importorskip("matplotlib")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(ws / "reports"))

    monkeypatch.setattr("pathlib.Path.mkdir", refuse)
    code, _, err = cli(monkeypatch, capsys, "report", RUN_A, RUN_B, "-w", ws)
    assert code == 2 and "Read-only file system" in one_line(err)


def test_a_python_warning_is_one_line_not_its_source(ws, monkeypatch, capsys):
    import warnings

    from kdtui.core import lifecycle

    def warn(*args, **kwargs):
        warnings.warn("the disk said no\nsecond line", UserWarning)
        return []

    monkeypatch.setattr(lifecycle, "reconcile", warn)
    code, _, err = cli(monkeypatch, capsys, "runs", "list", "-w", ws)
    assert code == 0
    assert one_line(err) == "warning: the disk said no"


@pytest.mark.parametrize("command", [("runs", "show", RUN_A), ("runs", "export"), ("runs", "compare", RUN_A, RUN_B)])
def test_an_event_log_over_the_limit_is_not_read(ws, monkeypatch, capsys, command):
    from kdtui.core import eventlog

    monkeypatch.setattr(eventlog, "MAX_LOG_BYTES", 200)  # fake_run's log is ~600 bytes
    code, out, err = cli(monkeypatch, capsys, *command, "-w", ws)
    assert code == 2 and out == ""
    line = one_line(err)
    assert str(ws / RUN_A / "events.jsonl") in line and "over the 0 MiB" in line and "not read" in line


def test_an_event_log_that_is_a_device_is_not_read(ws, monkeypatch, capsys):
    (ws / RUN_A / "events.jsonl").unlink()
    (ws / RUN_A / "events.jsonl").symlink_to("/dev/null")  # a character device that reads as empty
    code, out, err = cli(monkeypatch, capsys, "runs", "show", RUN_A, "-w", ws)
    assert code == 2 and "not a regular file" in one_line(err)


def test_a_large_sparse_event_log_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from kdtui.core import eventlog

    log = tmp_path / "events.jsonl"
    with open(log, "wb") as f:
        f.truncate(eventlog.MAX_LOG_BYTES + 1)  # sparse: no disk, no memory
    with pytest.raises(eventlog.EventLogUnreadable, match="MiB an event log is read up to"):
        eventlog.read_all(log)


@pytest.mark.parametrize("nesting", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000])
def test_toml_nested_5000_deep_is_one_line_exit_2(tmp_path, monkeypatch, capsys, nesting):
    spec = tmp_path / "deep.toml"
    spec.write_text(nesting + "\n")
    code, _, err = cli(monkeypatch, capsys, "run", spec, "-w", tmp_path / "ws")
    assert code == 2 and "nested too deeply" in one_line(err)


def test_a_byte_order_mark_at_the_start_of_a_spec_is_accepted(tmp_path):
    from kdtui.core.spec import load_spec
    from tests.cli_helpers import tiny_spec

    spec = tmp_path / "bom.toml"
    spec.write_bytes(b"\xef\xbb\xbf" + tiny_spec("with-bom").encode())
    assert load_spec(spec).name == "with-bom"


def test_reindex_where_no_lock_can_be_made_says_why_at_once(monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, "runs", "reindex", "-w", "/proc/self")
    assert code == 2
    line = one_line(err)
    assert "kdtui.json.lock" in line and "lock cannot be made there" in line and "another process" not in line


def test_a_full_disk_fails_the_run_with_its_cause_in_one_line(tmp_path, monkeypatch, capsys):
    """A checkpoint write that meets a full disk (ENOSPC): the run ends failed, its error and its
    error.txt say `no space left on device` naming the file, and no traceback is printed."""
    from tests.cli_helpers import tiny_spec

    def full(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("kernels.checkpoints.save_atomic", full)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_spec("full-disk"))
    code, _, err = cli(monkeypatch, capsys, "run", spec, "-w", tmp_path / "ws")
    assert code == 1 and "Traceback" not in err, err
    (record,) = RunStore(tmp_path / "ws").all(details=True)
    assert record["status"] == "failed"
    assert record["error"].startswith("no space left on device: cannot write ") and ".pt" in record["error"]
    assert (tmp_path / "ws" / record["id"] / "error.txt").read_text() == record["error"] + "\n"


def test_a_full_disk_inside_torch_save_is_named_too(tmp_path, monkeypatch, capsys):
    """torch.save turns a failed write into its own RuntimeError: told by where it was raised and
    the free space left (patched to none here; a real 3 MiB tmpfs gives the same)."""
    import shutil as shutil_module
    from collections import namedtuple

    import torch

    from tests.cli_helpers import tiny_spec

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 262720 vs 262608")

    failing_save.__code__ = failing_save.__code__.replace(co_filename=torch.serialization.__file__, co_name="save")
    monkeypatch.setattr(torch, "save", failing_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(3 << 20, 3 << 20, 0))
    spec = tmp_path / "tiny.toml"
    spec.write_text(tiny_spec("full-disk-torch"))
    code, _, err = cli(monkeypatch, capsys, "run", spec, "-w", tmp_path / "ws")
    assert code == 1 and "Traceback" not in err, err
    (record,) = RunStore(tmp_path / "ws").all(details=True)
    assert record["status"] == "failed"
    assert record["error"].startswith("no space left on device: a checkpoint could not be saved (0 KiB free")
    assert (tmp_path / "ws" / record["id"] / "error.txt").read_text() == record["error"] + "\n"


# -- build 10: small ones -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", [("runs", "show", RUN_A), ("runs", "compare", RUN_A, RUN_B),
                                     ("runs", "export"), ("runs", "tail", RUN_A)])
def test_a_run_whose_folder_is_gone_is_named(ws, monkeypatch, capsys, command):
    import shutil

    shutil.rmtree(ws / RUN_A)
    code, out, err = cli(monkeypatch, capsys, *command, "-w", ws)
    line = one_line(err)
    assert f"run {RUN_A}: its folder {ws / RUN_A} is gone" in line
    assert code == (2 if command[1] == "tail" else 0)


def test_report_names_a_run_whose_folder_is_gone(ws, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import shutil

    shutil.rmtree(ws / RUN_A)
    code, out, err = cli(monkeypatch, capsys, "report", RUN_A, RUN_B, "-w", ws)
    assert f"run {RUN_A}: its folder {ws / RUN_A} is gone" in err


def test_tail_of_a_run_stopped_while_queued_says_so(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    (run_id,) = _queued(ws, 1)
    from kdtui.core import lifecycle

    lifecycle.stop_queued(RunStore(ws), [run_id])
    code, out, err = cli(monkeypatch, capsys, "runs", "tail", run_id, "-w", ws)
    assert code == 1 and out == ""
    assert one_line(err) == (f"run {run_id} is stopped: it never started, so it has no events "
                             f"(kdtui runs resume {run_id} runs it)")


def test_queue_shows_the_slots_in_use_per_device(tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    ids = _queued(ws, 3)
    for k, run_id in enumerate(ids):  # three busy CPU slots of workers started with --slots-per-gpu 3
        RunStore(ws).update(run_id, status="running", pid=os.getpid(), slot=f"cpu.{k}", started=1.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, out, _ = cli(monkeypatch, capsys, "queue", "-w", ws)
    assert code == 0
    assert out.splitlines()[0].startswith("3 slot(s) per device in use (settings: 1;")
    assert all(run_id in out for run_id in ids)


# -- build 8: what is knowable before a run starts ----------------------------------------------------

@pytest.mark.parametrize("line, field, message", [
    ("[data]\nimage_size = 100000", "data.image_size = 100000", "must be <= 512"),
    ("[teacher]\nepochs = 1000000", "teacher.epochs = 1000000", "must be <= 10000"),
    ("[student]\nepochs = 10001", "student.epochs = 10001", "must be <= 10000"),
    ("[student]\nbatch_size = 100000", "student.batch_size = 100000", "must be <= 65536"),
    ("[teacher]\nbatch_size = 65537", "teacher.batch_size = 65537", "must be <= 65536"),
    ('name = "' + "n" * 501 + '"', "name = ", "must be at most 500 characters long"),
    ('[data]\nextra = ["tensors:/nonexistent/extra.pt"]', "data.extra = 'tensors:/nonexistent/extra.pt'",
     "no file at /nonexistent/extra.pt"),
])
def test_validation_refuses_what_would_fail_at_run_time(tmp_path, monkeypatch, capsys, line, field, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(line + "\n")
    code, _, err = cli(monkeypatch, capsys, "run", spec, "-w", tmp_path / "ws")
    assert code == 2
    text = one_line(err)
    assert field in text and message in text
    assert not (tmp_path / "ws").exists() or not RunStore(tmp_path / "ws").all()  # nothing registered


def test_the_bounds_themselves_and_an_existing_tensors_file_pass(tmp_path):
    from kdtui.core.spec import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMAGE_SIZE, check_files, spec_from_dict

    tensors = tmp_path / "extra.pt"
    tensors.write_bytes(b"x")
    spec = spec_from_dict({"name": "n" * 500, "data": {"image_size": MAX_IMAGE_SIZE, "extra": [f"tensors:{tensors}"]},
                           "teacher": {"epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE}})
    check_files([spec])  # raises nothing


def test_a_sweep_point_naming_a_missing_tensors_file_is_refused(tmp_path):
    from kdtui.core.spec import SpecError, check_files, expand_sweep, spec_from_dict

    present = tmp_path / "a.pt"
    present.write_bytes(b"x")
    spec = spec_from_dict({"sweep": {"data.extra": [[f"tensors:{present}"], [f"tensors:{tmp_path / 'b.pt'}"]]}})
    points = expand_sweep(spec)  # a spec that names a file to come is still a spec
    check_files(points[:1])
    with pytest.raises(SpecError, match="no file at .*b.pt"):
        check_files(points)
