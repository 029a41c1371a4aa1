"""The record's `environment` block: what it says about this process, the checkout it reads, and
how compare and export show it."""
from __future__ import annotations

import importlib.metadata
import json
import platform
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from kdtui.analysis.compare import compare, export_runs, to_csv, to_markdown
from kdtui.core import provenance
from kernels.environment import torch_environment
from tests.cli_helpers import json_out, kdtui, tiny_spec, write

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


@pytest.fixture
def fresh_checkout_cache():
    provenance._checkout.cache_clear()
    yield
    provenance._checkout.cache_clear()


def test_block_describes_this_process(fresh_checkout_cache):
    block = provenance.environment(torch_environment(torch.device("cpu")))
    assert block["kdtui"] == importlib.metadata.version("kdtui")
    assert block["python"] == platform.python_version()
    assert block["host"] == socket.gethostname()
    assert block["torch"] == torch.__version__
    assert block["cuda"] == torch.version.cuda
    assert block["device_count"] == 1 and block["threads"] == torch.get_num_threads()
    assert block["autocast_dtype"] == "float32"  # CPU training runs in fp32
    json.dumps(block)  # it goes into record.json as it is
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert block["git_commit"] == head.strip()
        assert isinstance(block["git_dirty"], bool)
    else:
        assert "git_commit" not in block and "git_dirty" not in block


def test_settings_in_force_are_read_not_assumed():
    saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    try:
        for value in (True, False):
            torch.backends.cudnn.benchmark = value
            torch.backends.cuda.matmul.allow_tf32 = not value
            block = torch_environment(torch.device("cpu"))
            assert block["cudnn_benchmark"] is value and block["tf32_matmul"] is (not value)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = saved


def test_checkout_commit_and_dirty(tmp_path, monkeypatch, fresh_checkout_cache):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    (repo / "tracked.py").write_text("x = 1\n")
    subprocess.run([*GIT, "-C", str(repo), "add", "tracked.py"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    monkeypatch.setattr(provenance, "PACKAGE_ROOT", repo.resolve())
    assert provenance._checkout() == {"git_commit": head, "git_dirty": False}
    provenance._checkout.cache_clear()
    (repo / "untracked.txt").write_text("not part of the code\n")  # untracked files do not count
    assert provenance._checkout() == {"git_commit": head, "git_dirty": False}
    provenance._checkout.cache_clear()
    (repo / "tracked.py").write_text("x = 2\n")
    assert provenance._checkout() == {"git_commit": head, "git_dirty": True}

    # kdtui installed inside another project's repository (its venv) is not a checkout of kdtui.
    provenance._checkout.cache_clear()
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", (repo / "sub").resolve())
    assert provenance._checkout() == {}
    provenance._checkout.cache_clear()
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", tmp_path.resolve())  # no repository at all
    assert provenance._checkout() == {}


def _record(run_id: str, seed: int, **environment) -> dict:
    base = {"kdtui": "0.1.0", "python": "3.12.3", "torch": "2.4.1", "device": "NVIDIA A100", "cudnn_benchmark": True}
    return {"id": run_id, "name": "x", "status": "done", "group_hash": "g", "spec": {"seed": seed, "data": {"dataset": "digits"}},
            "metrics": {"test_agreement": 0.9}, "environment": {**base, **environment}}


def test_compare_shows_the_environment_rows_that_differ():
    a = _record("260101-000000-aaaa", 0)
    b = _record("260101-000000-bbbb", 1, torch="2.11.0", device="NVIDIA H200")
    rows = dict(compare([a, b]).config_rows)
    assert rows["env.torch"] == ["2.4.1", "2.11.0"] and rows["env.device"] == ["NVIDIA A100", "NVIDIA H200"]
    assert not {"env.kdtui", "env.python", "env.cudnn_benchmark"} & set(rows)
    assert "seed" in rows  # the spec's rows are still there
    assert "env.torch" in to_markdown(compare([a, b])) and "config,env.device,NVIDIA A100,NVIDIA H200" in to_csv(compare([a, b]))
    # diff_only keeps them (they differ); a record from before the block existed reads as unknown.
    assert dict(compare([a, b], diff_only=True).config_rows)["env.torch"] == ["2.4.1", "2.11.0"]
    old = {key: value for key, value in _record("260101-000000-cccc", 2).items() if key != "environment"}
    assert dict(compare([a, old]).config_rows)["env.python"] == ["3.12.3", None]


def test_environment_rows_hidden_when_all_agree():
    a, b = _record("260101-000000-aaaa", 0), _record("260101-000000-bbbb", 1)
    assert not [key for key, _ in compare([a, b]).config_rows if key.startswith("env.")]
    assert not [key for key, _ in compare([a, b], by_group=True).config_rows if key.startswith("env.")]


def test_by_group_environment_rows():
    a = _record("260101-000000-aaaa", 0)
    b = _record("260101-000000-bbbb", 1, torch="2.11.0")
    c = {**_record("260101-000000-cccc", 0), "group_hash": "h", "spec": {"seed": 0, "data": {"dataset": "mnist"}}}
    rows = dict(compare([a, b, c], by_group=True).config_rows)
    assert rows["env.torch"] == ["2.4.1 | 2.11.0", "2.4.1"]


def test_export_carries_the_environment():
    a = _record("260101-000000-aaaa", 0)
    b = _record("260101-000000-bbbb", 1, torch="2.11.0")
    header, *rows = export_runs([a, b], "csv").splitlines()
    columns = header.split(",")
    assert "env.torch" in columns and "env.python" in columns  # every key, equal or not
    assert [row.split(",")[columns.index("env.torch")] for row in rows] == ["2.4.1", "2.11.0"]
    assert [r["environment"] for r in json.loads(export_runs([a, b], "json"))] == [a["environment"], b["environment"]]


def test_a_run_records_its_environment_and_show_prints_it(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "tiny.toml", tiny_spec(student_epochs=1))
    result = kdtui("run", spec, "--workspace", ws, "--json")
    assert result.returncode == 0, result.stderr
    record = json_out(result)
    block = record["environment"]
    assert block["torch"] == torch.__version__ and block["host"] == socket.gethostname()
    stored = json.loads((ws / record["id"] / "record.json").read_text())
    assert stored["environment"] == block
    shown = kdtui("runs", "show", record["id"], "--workspace", ws)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "environment:" in lines
    assert f"torch={torch.__version__}" in shown.stdout and f"python={platform.python_version()}" in shown.stdout
