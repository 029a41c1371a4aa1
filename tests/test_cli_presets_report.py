"""`kdtui presets`, `kdtui run --preset`, `kdtui report`, `kdtui doctor` and `kdtui serve` through the
installed console script (real processes, real workspace)."""
from __future__ import annotations

import math
import os
import subprocess

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from kdtui.core.presets import PRESETS_DIR
from tests.cli_helpers import KDTUI, cli_env, json_out, kdtui, tiny_spec, write

PRESET_FILES = sorted(PRESETS_DIR.glob("*.toml"))


def _grid_size(path) -> int:
    """The run count of a preset file, computed from its TOML alone: the product of the sweep's lists."""
    sweep = tomllib.loads(path.read_text()).get("sweep") or {}
    return math.prod(len(values) for values in sweep.values())


def test_presets_list_gives_id_title_varies_and_run_counts():
    result = kdtui("presets", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for path in PRESET_FILES:
        if not path.name.endswith(".paper.toml"):
            continue
        stem = path.name.removesuffix(".paper.toml")
        preset_id = stem.split("-")[0] if stem != "e3-data" else "e3-data"
        row = next(line for line in lines if line.split()[:1] == [preset_id])
        paper, tiny = _grid_size(path), _grid_size(path.with_name(f"{stem}.tiny.toml"))
        assert f"{paper} / {tiny}" in " ".join(row.split()), row
        assert lines[lines.index(row) + 1].strip().startswith("varies:")
    assert not any(line.split()[:1] == ["e9"] for line in lines)


def test_presets_show_prints_the_file_and_it_is_a_spec(tmp_path):
    result = kdtui("presets", "show", "E7", "--scale", "paper")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (PRESETS_DIR / "e7-interpolation.paper.toml").read_text()
    spec = tomllib.loads(result.stdout)
    assert spec["sweep"]["student.init_lambda"] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0]
    assert spec["student"]["norm"] == "layer"


@pytest.mark.parametrize("args, words", [
    (("presets", "show", "e99"), ["unknown preset", "e12"]),
    (("presets", "show", "e7", "--scale", "huge"), ["unknown scale", "tiny"]),
    (("run", "--preset", "e9"), ["E9", "known"]),
    (("run",), ["spec file", "--preset", "--from"]),
    (("report", "--preset", "e7"), ["no finished runs of preset e7"]),
    (("report",), ["exactly one of"]),
    (("report", "nope"), ["no run matches 'nope'"]),
    (("serve", "--port", "99999"), ["--port"]),
    (("runs", "list", "--colour"), ["No such option", "--colour", "kdtui runs list --help"]),
    (("presets", "show"), ["Missing argument", "kdtui presets show --help"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    (tmp_path / "ws").mkdir()  # an empty workspace: the message is about the input, not a missing folder
    result = kdtui("--workspace", tmp_path / "ws", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in result.stderr


def test_run_preset_detached_registers_its_whole_grid(tmp_path):
    ws = tmp_path / "ws"
    result = kdtui("run", "--preset", "e11a", "--scale", "tiny", "--detach", "--json", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    records = json_out(result)
    try:
        assert len(records) == _grid_size(PRESETS_DIR / "e11a-capacity-resnet20.tiny.toml")
        assert all(r["name"].startswith("e11a-capacity-resnet20-tiny[") for r in records)
        assert {r["spec"]["student"]["model"] for r in records} == {"lenet5", "resnet20"}
    finally:
        for r in records:
            kdtui("runs", "stop", r["id"], "--workspace", ws)


def test_report_of_runs_writes_pngs_and_prints_the_index(tmp_path):
    ws = tmp_path / "ws"
    spec = write(tmp_path / "t.toml", tiny_spec("rep", student_epochs=1, sweep="seed = [0, 1]",
                                                data="teacher_subset = 200"))
    records = json_out(kdtui("run", spec, "--json", "--workspace", ws))
    result = kdtui("report", *(r["id"] for r in records), "--workspace", ws)
    assert result.returncode == 0, result.stderr
    index = ws / "reports" / f"runs-{records[0]['id']}+1" / "index.md"
    assert result.stdout.strip() == f"report: {index}"
    pngs = list(index.parent.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_doctor_names_the_workspace_and_counts_its_runs(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    result = kdtui("doctor", "--workspace", ws)
    assert result.returncode == 0, result.stderr
    assert str(ws) in result.stdout
    assert any(line.split()[:2] == ["runs", "0"] for line in result.stdout.splitlines())
    assert "torch" in result.stdout and "TERM" in result.stdout


def test_serve_without_textual_serve_says_what_to_install(tmp_path):
    # A stand-in package that fails to import, exactly as a missing textual-serve does.
    fake = tmp_path / "site" / "textual_serve"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('textual_serve is not installed')\n")
    env = cli_env(PYTHONPATH=str(tmp_path / "site") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([*KDTUI, "serve", "--workspace", str(tmp_path / "ws")], capture_output=True, text=True,
                            env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: install kdtui[serve] (pip install 'kdtui[serve]') "
                                                  "to use kdtui serve"]
