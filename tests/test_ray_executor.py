"""`kdtui run --executor ray` on a real Ray cluster of two nodes on this machine (ray.cluster_utils).

The CLI is the installed `kdtui`, connecting to the cluster's address like a user on another box
would. Worker boxes keep their own workspace (KDTUI_RAY_WORKSPACE); only events and records come back.
"""
from __future__ import annotations

import os
import subprocess

import pytest

# Ray is an extra (pip install -e ".[test,ray]"; .ci/run installs it): a plain test install skips these.
pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
import ray.cluster_utils  # noqa: E402

from tests.cli_helpers import KDTUI, cli_env, events, json_out, kdtui, record, run_folders, tiny_spec, wait_for, write

pytestmark = pytest.mark.ray
FINAL = ("done", "failed", "stopped", "interrupted")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two single-CPU nodes; their workers see one thread each and a workspace of their own."""
    worker_ws = tmp_path_factory.mktemp("ray-worker-ws")
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "KDTUI_RAY_WORKSPACE")}
    os.environ.update(OMP_NUM_THREADS="1", KDTUI_RAY_WORKSPACE=str(worker_ws))
    try:
        nodes = ray.cluster_utils.Cluster(initialize_head=True,
                                          head_node_args={"num_cpus": 1, "include_dashboard": False})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield nodes.address, worker_ws
    nodes.shutdown()


def _ray_env(worker_ws) -> dict:
    return cli_env(KDTUI_RAY_WORKSPACE=str(worker_ws))


def test_sweep_on_ray_streams_events_and_matches_the_local_sweep(cluster, tmp_path):
    address, worker_ws = cluster
    spec = write(tmp_path / "sweep.toml", tiny_spec("ray-sweep", student_epochs=3, data="teacher_subset = 300",
                                                    sweep="seed = [0, 1, 2, 3]"))
    ws = tmp_path / "ws"
    out, err = open(tmp_path / "ray.out", "w"), open(tmp_path / "ray.err", "w")
    driver = subprocess.Popen([*KDTUI, "run", str(spec), "--executor", "ray", "--address", address, "--json",
                               "--workspace", str(ws)], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                              env=_ray_env(worker_ws))

    def streamed_while_running():
        """An epoch event of a run is here, in the local workspace, while that run is still running."""
        if not (ws / "kdtui.json").exists():
            return None
        for run in json_out_safe(kdtui("runs", "list", "--json", "--workspace", ws)) or []:
            if run["status"] == "running" and any(e.get("phase") == "student" for e in events(ws, run["id"], ("epoch",))):
                return run["id"]
        return None

    try:
        assert wait_for(streamed_while_running, timeout=400, interval=0.5, what="events streamed from a running task")
        driver.wait(timeout=600)
    finally:
        out.close()
        err.close()
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, (tmp_path / "ray.err").read_text()[-3000:]
    remote = json_out_from(tmp_path / "ray.out")
    assert [r["status"] for r in remote] == ["done"] * 4

    local = json_out(kdtui("run", spec, "--json", "--workspace", tmp_path / "local", timeout=600))
    for on_ray, here in zip(remote, local):
        assert on_ray["spec"]["seed"] == here["spec"]["seed"]
        assert on_ray["metrics"] == here["metrics"]
        assert [t["key"] for t in on_ray["teachers"]] == [t["key"] for t in here["teachers"]]
        # Checkpoints stayed on the worker, and the record says where.
        host, folder = on_ray["checkpoints"].split(":", 1)
        assert folder.startswith(str(worker_ws)) and (os.path.exists(os.path.join(folder, "student.pt")))
        assert on_ray["executor"] == "ray"
        # The local event log is the run's whole story: the same per-epoch history as the local run.
        shown = json_out(kdtui("runs", "show", on_ray["id"], "--json", "--workspace", ws))
        assert [h["test_agreement"] for h in shown["history"]] == \
               [h["test_agreement"] for h in json_out(kdtui("runs", "show", here["id"], "--json",
                                                            "--workspace", tmp_path / "local"))["history"]]


def test_stopping_a_run_cancels_its_ray_task(cluster, tmp_path):
    address, worker_ws = cluster
    spec = write(tmp_path / "long.toml", tiny_spec("ray-long", student_epochs=300, student_batch=32))
    ws = tmp_path / "ws"
    result = subprocess.run([*KDTUI, "run", str(spec), "--executor", "ray", "--address", address, "--detach",
                             "--workspace", str(ws)], capture_output=True, text=True, env=_ray_env(worker_ws),
                            stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.split()[0]
    wait_for(lambda: any(e.get("phase") == "student" for e in events(ws, run_id, ("epoch",))),
             timeout=400, interval=0.5, what="the ray run to reach the student")
    assert kdtui("runs", "stop", run_id, "--workspace", ws).returncode == 0
    final = wait_for(lambda: (lambda r: r if r and r["status"] in FINAL else None)(record(ws, run_id)),
                     timeout=120, what="the cancelled run to end")
    assert final["status"] == "stopped"


def test_without_ray_the_executor_says_what_to_install(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    env = cli_env(PYTHONPATH=str(tmp_path / "site") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    spec = write(tmp_path / "t.toml", tiny_spec("no-ray"))
    result = subprocess.run([*KDTUI, "run", str(spec), "--executor", "ray", "--workspace", str(tmp_path / "ws")],
                            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --executor ray needs Ray: pip install 'kdtui[ray]'"]
    assert run_folders(tmp_path / "ws") == []  # checked before any run was registered


def json_out_safe(result):
    try:
        return json_out(result)
    except (AssertionError, ValueError):
        return None


def json_out_from(path):
    import json
    return json.loads(path.read_text())
