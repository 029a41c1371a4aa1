"""Every ```python block of docs/python.md runs, in order as in a notebook, against a real tiny
workspace at ./runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from notebook_workspace import build

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_every_python_block_of_the_walk_through_runs(tmp_path):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    build(tmp_path / "runs")
    marker = "--- block {} ran ---"
    script = "\n".join(f"{block}\nprint({marker.format(n)!r})\n" for n, block in enumerate(blocks))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert all(marker.format(n) in out.stdout for n in range(len(blocks)))
    # What the blocks print, checked against the workspace the test built: 6 done runs,
    # τ=1 and τ=4 with 3 seeds each, the failed run found through stock TinyDB.
    assert "8 runs: ['done', 'failed', 'running']" in out.stdout
    assert "kd-sweep[distill.temperature=4,seed=3]" in out.stdout
    by_tau = re.findall(r"^(1\.0|4\.0)\s+([0-9.]+)\s+([0-9.]+)\s+3$", out.stdout, flags=re.MULTILINE)
    assert [(t, round(float(m), 4), round(float(s), 4)) for t, m, s in by_tau] == [("1.0", 0.81, 0.01), ("4.0", 0.86, 0.01)]
    for picture in ("agreement_vs_tau.png", "curves.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
