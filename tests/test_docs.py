"""docs/spec.md is generated from the spec model; it must match the model it documents."""
import os
import subprocess
import sys
from pathlib import Path

from kdtui.core.spec_docs import field_paths, render_spec_reference, undescribed_fields

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "regenerate it with: python -m kdtui.core.spec_docs > docs/spec.md"


def test_spec_reference_matches_the_model():
    written = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert written == render_spec_reference(), f"docs/spec.md is out of date with kdtui/core/spec.py; {REGENERATE}"


def test_every_field_is_documented_with_a_meaning():
    missing = undescribed_fields()
    assert not missing, (f"spec fields without a meaning: {', '.join(missing)}; add a line to MEANINGS in "
                         f"kdtui/core/spec_docs.py (or a Field description), then {REGENERATE}")


def test_reference_names_every_field_and_its_choices():
    text = render_spec_reference()
    for path in field_paths():
        assert f"| `{path}` |" in text
    assert "one of `kl`, `reverse-kl`, `symmetric-kl`, `brier`, `hard`" in text
    assert "| `student.model` | string | the teacher's |" in text
    assert "| `teacher.batch_size` | 32 | 128 |" in text     # digits, then mnist: resolved per data set


def test_generator_runs_as_a_module_without_torch():
    code = ("import runpy, sys; runpy.run_module('kdtui.core.spec_docs', run_name='__main__'); "
            "sys.stderr.write('torch' if 'torch' in sys.modules else 'no torch')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=env, check=True)
    assert out.stderr.decode() == "no torch"
    assert out.stdout.decode("utf-8") == render_spec_reference()
