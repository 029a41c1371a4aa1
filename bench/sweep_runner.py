"""Run a spec through the real `kdtui run --json` in a subprocess, as a user would: the benches that
time whole sweeps (sweep.py, paper_tiny.py) share this."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("kdtui")
KDTUI = [str(_SCRIPT)] if _SCRIPT.exists() else ([shutil.which("kdtui")] if shutil.which("kdtui")
                                                  else [sys.executable, "-m", "kdtui.cli"])


def run_spec(spec: Path, workspace: Path, what: str = "kdtui run") -> tuple[list[dict], float]:
    """Every record the run printed (a sweep's points in order) and the wall seconds it took."""
    began = time.perf_counter()
    out = subprocess.run([*KDTUI, "run", str(spec), "--workspace", str(workspace), "--json"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    if not out.stdout.strip():
        raise SystemExit(f"{what} printed nothing (exit {out.returncode}):\n{out.stderr[-3000:]}")
    records = json.loads(out.stdout)
    return (records if isinstance(records, list) else [records]), wall
