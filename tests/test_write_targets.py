"""`runs export -o PATH` and `report` write a regular file, and nothing else.

Onto a symbolic link, a FIFO, a device or a folder they refuse in one line (exit 2) and leave the
thing there as it was; they never overwrite a workspace's own files (its registry, index shards,
run folders). Device nodes are never touched: a device is a test double (a patched lstat).
"""
from __future__ import annotations

import os
import stat

import pytest

from cli_helpers import fake_run, kdtui
from kdtui.core.files import NotARegularFile, OutputRefused, atomic_write, check_output, workspace_owner

RUN = "260101-000000-aaaa"


@pytest.fixture
def ws(tmp_path):
    ws = tmp_path / "ws"
    fake_run(ws, RUN)
    return ws


def _refused(result, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_export_writes_a_regular_file(ws, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    result = kdtui("runs", "export", "-o", out, "-w", ws)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("id,") and f"\n{RUN.rsplit('-', 1)[1]}," in text  # its row, by short id
    assert stat.S_ISREG(os.lstat(out).st_mode)


def test_export_refuses_a_symbolic_link_and_leaves_it_and_its_target(ws, tmp_path):
    target = tmp_path / "target.csv"
    target.write_text("mine\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    _refused(kdtui("runs", "export", "-o", link, "-w", ws), str(link), "symbolic link")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "mine\n"


def test_export_refuses_a_fifo_without_opening_it(ws, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(kdtui("runs", "export", "-o", fifo, "-w", ws, timeout=60), "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_export_refuses_a_folder(ws, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    _refused(kdtui("runs", "export", "-o", folder, "-w", ws), "folder")
    assert folder.is_dir() and list(folder.iterdir()) == []


@pytest.mark.parametrize("own", ["kdtui.json", "run_record", "run_new_file", "index_shard"])
def test_export_never_overwrites_a_workspace_file(ws, tmp_path, own):
    target = {"kdtui.json": ws / "kdtui.json", "run_record": ws / RUN / "record.json",
              "run_new_file": ws / RUN / "export.csv",
              "index_shard": next((ws / "kdtui.index").iterdir(), ws / "kdtui.index" / "00.json")}[own]
    before = target.read_bytes() if target.exists() else None
    _refused(kdtui("runs", "export", "-o", target, "-w", ws), "workspace")
    assert (target.read_bytes() if target.exists() else None) == before


def test_export_into_another_workspace_through_a_linked_folder_is_refused(ws, tmp_path):
    other = tmp_path / "other"
    fake_run(other, "260101-000000-bbbb")
    shortcut = tmp_path / "shortcut"
    shortcut.symlink_to(other / "260101-000000-bbbb", target_is_directory=True)
    record = other / "260101-000000-bbbb" / "record.json"
    before = record.read_bytes() if record.exists() else None
    _refused(kdtui("runs", "export", "-o", shortcut / "record.json", "-w", ws), "workspace")
    assert (record.read_bytes() if record.exists() else None) == before


def test_a_users_own_file_in_the_workspace_folder_is_fine(ws):
    assert workspace_owner(ws / "results.csv") is None
    assert workspace_owner(ws / "reports" / "x" / "index.md") is None
    assert workspace_owner(ws / "kdtui.json") == ws.resolve()
    assert workspace_owner(ws / RUN / "anything") == ws.resolve()
    assert workspace_owner(ws / "teachers" / "k" / "teacher.pt") == ws.resolve()


def _fake_device(monkeypatch, path, kind=stat.S_IFCHR):
    """os.lstat reports `path` as a device node (no device is made or opened)."""
    real = os.lstat

    def lstat(p, *args, **kwargs):
        if os.fspath(p) == os.fspath(path):
            return os.stat_result((kind | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        return real(p, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)


@pytest.mark.parametrize("kind, words", [(stat.S_IFCHR, "character device"), (stat.S_IFBLK, "block device")])
def test_a_device_is_refused_and_never_replaced(monkeypatch, tmp_path, kind, words):
    device = tmp_path / "full"
    device.write_text("stands in for a device node\n")
    _fake_device(monkeypatch, device, kind)
    with pytest.raises(OutputRefused, match=words):
        check_output(device)
    with pytest.raises(NotARegularFile):  # and the one writer refuses it too, whoever calls it
        atomic_write(device, "x")
    monkeypatch.undo()
    assert device.read_text() == "stands in for a device node\n"
    assert [p.name for p in tmp_path.iterdir()] == ["full"]  # no temporary file left


def _done_group_ws(tmp_path):
    ws = tmp_path / "ws"
    for i, run_id in enumerate(("260101-000000-aaaa", "260101-000000-bbbb")):
        fake_run(ws, run_id, spec={"name": "kd", "seed": i})
    return ws


def test_report_refuses_a_fifo_in_place_of_its_table(tmp_path):
    ws = _done_group_ws(tmp_path)
    folder = ws / "reports" / "group-gggggggg"  # the report folder names the group by 8 characters
    folder.mkdir(parents=True)
    fifo = folder / "results.md"
    os.mkfifo(fifo)
    _refused(kdtui("report", "--group", "gggg", "-w", ws, timeout=120), "FIFO")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_report_refuses_a_report_folder_linked_into_a_run_folder(tmp_path):
    ws = _done_group_ws(tmp_path)
    (ws / "reports").mkdir()
    (ws / "reports" / "group-gggggggg").symlink_to(ws / RUN, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in (ws / RUN).iterdir()}
    _refused(kdtui("report", "--group", "gggg", "-w", ws, timeout=120), "workspace")
    assert {p.name: p.read_bytes() for p in (ws / RUN).iterdir()} == before


def test_the_help_says_what_happens_to_a_link():
    result = kdtui("runs", "export", "--help")
    assert result.returncode == 0
    assert "symbolic link is refused" in " ".join(result.stdout.split())
