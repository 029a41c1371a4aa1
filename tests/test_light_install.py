"""The light install: `digits` comes from the package's own file (no scikit-learn), heavy libraries
are extras, and `report` says in one line how to get its plotting library."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Images per digit 0..9 in the UCI set's 1,797-image part (its documentation lists these counts).
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# SHA-256 of train images, train labels, test images, test labels at the native 8x8, as the loader
# served them when it still read them through scikit-learn (see docs/data.md).
DIGITS_SHA256 = "fa6cacdc015a118b594590f003e2d40fb16dc78288e07216c03cb5b34ca7a70a"


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which importing any of `modules` fails, as in an
    install that lacks them."""
    blocker = ("import sys\n"
               f"for name in {modules!r}:\n"
               "    sys.modules[name] = None  # `import name` now raises ImportError\n")
    return subprocess.run([sys.executable, "-c", blocker + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_digits_from_the_package_file():
    import torch

    from kernels.data import load_dataset

    ds = load_dataset("digits", "/nonexistent", download=False, image_size=8)
    assert ds.train.images.shape == (1437, 1, 8, 8) and ds.test.images.shape == (360, 1, 8, 8)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    labels = torch.cat([ds.train.labels, ds.test.labels])
    assert torch.bincount(labels, minlength=10).tolist() == DIGIT_COUNTS
    # The split is stratified: every digit has 20 % (rounded) of its images in the test part.
    test_counts = torch.bincount(ds.test.labels, minlength=10).tolist()
    assert all(abs(t - 0.2 * n) <= 1 for t, n in zip(test_counts, DIGIT_COUNTS))
    assert 0 < int(ds.train.images.max()) <= 255 and int(ds.train.images.min()) == 0
    digest = hashlib.sha256()
    for tensor in (ds.train.images, ds.train.labels, ds.test.images, ds.test.labels):
        digest.update(tensor.numpy().tobytes())
    assert digest.hexdigest() == DIGITS_SHA256
    served = load_dataset("digits", "/nonexistent", download=False)  # the default: 28x28
    assert served.train.images.shape == (1437, 1, 28, 28)


def test_digits_load_without_scikit_learn():
    result = _without(["sklearn", "scipy"], "from kernels.data import load_dataset\n"
                                            "ds = load_dataset('digits', '/nonexistent', False)\n"
                                            "print(len(ds.train.labels), len(ds.test.labels))\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1437", "360"]


def test_heavy_libraries_are_extras():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for requirement in requirements}

    hard = names(project["dependencies"])
    assert hard.isdisjoint({"scikit-learn", "scipy", "ray", "matplotlib", "submitit"}), hard
    extras = project["optional-dependencies"]
    assert "ray" not in names(extras["test"])
    assert names(extras["report"]) == {"matplotlib"} and names(extras["slurm"]) == {"submitit"}


def test_report_without_matplotlib_says_how_to_get_it(tmp_path):
    result = _without(["matplotlib"], "from pathlib import Path\n"
                                      "from kdtui.analysis.report import build_report\n"
                                      "try:\n"
                                      f"    build_report([{{'id': 'a', 'metrics': {{}}}}], Path({str(tmp_path)!r}), 't')\n"
                                      "except ValueError as exc:\n"
                                      "    print(exc)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the report draws its figures with matplotlib: pip install 'kdtui[report]'"


@pytest.mark.parametrize("module", ["kdtui.cli", "kernels.data"])
def test_no_heavy_import_at_import_time(module):
    result = _without(["sklearn", "scipy", "matplotlib", "ray", "submitit"], f"import {module}\n")
    assert result.returncode == 0, result.stderr
