"""The paper's experiments as presets: every file parses and expands, the tiny scale is small and runs.

The one-epoch check drives the real `kdtui run` console script on the first point of each tiny
preset, all in ONE workspace so that equal teachers come from the teacher store.
"""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import tomli_w

from cli_helpers import KDTUI, cli_env
from kdtui.core.presets import (PRESETS_DIR, SCALES, Preset, PresetError, get_preset, list_presets, load_preset,
                           preset_for_run_name, preset_path, preset_text)
from kdtui.core.spec import SpecError, expand_sweep, parse_spec

IDS = ["e1", "e2", "e3", "e3-data", "e4", "e5", "e6", "e7", "e8", "e10", "e11", "e12"]
PAIRS = [(preset_id, scale) for preset_id in IDS for scale in SCALES]
ONE_EPOCH_TIMEOUT_S = 240


def test_catalog_lists_the_experiments_in_order():
    presets = list_presets()
    assert [p.id for p in presets] == IDS
    assert all(isinstance(p, Preset) for p in presets)
    for p in presets:
        assert set(p.scales) == {"paper", "tiny"}
        assert all(path.is_file() and path.parent == PRESETS_DIR for path in p.scales.values())
        assert p.title and p.varies and p.paper_claim, p.id
        assert p.title.upper().startswith(p.id.split("-")[0].upper() + " "), p.title
    # every TOML file in the folder belongs to the catalog
    files = {path.name for path in PRESETS_DIR.glob("*.toml")}
    assert files == {path.name for p in presets for path in p.scales.values()}


@pytest.mark.parametrize("preset_id,scale", PAIRS)
def test_preset_parses_expands_and_counts(preset_id, scale):
    preset = get_preset(preset_id)
    spec = load_preset(preset_id, scale)
    assert spec.sweep, "a preset encodes its figure's grid"
    points = expand_sweep(spec)
    assert preset.run_count(scale) == len(points) > 0
    assert spec.name == f"{preset.stem}-{scale}" == preset.spec_name(scale)
    for point in points:
        resolved = point.resolved()
        assert point.name.startswith(spec.name + "[")
        found = preset_for_run_name(point.name)
        assert found is not None and (found[0].id, found[1]) == (preset_id, scale)
        # every point fully resolves (models, epochs, learning rates known)
        assert resolved.teacher.model and resolved.student.epochs and resolved.student.lr
    # the text is the file, and it parses to the same spec (what a user copies works)
    text = preset_text(preset_id, scale)
    assert text == preset_path(preset_id, scale).read_text()
    assert parse_spec(text) == spec
    # the header: same title and claim at both scales, its own "varies"
    header = preset.header(scale)
    assert header["title"] == preset.title and header["paper"] == preset.paper_claim
    assert header.get("varies")


def test_sweep_seeds_are_part_of_the_grid():
    for preset in list_presets():
        for scale in SCALES:
            assert "seed" in load_preset(preset.id, scale).sweep, (preset.id, scale)


def test_tiny_presets_are_small_and_offline():
    for preset in list_presets():
        spec = load_preset(preset.id, "tiny")
        points = [p.resolved() for p in expand_sweep(spec)]
        assert all(p.data.dataset == "digits" for p in points), preset.id      # embedded, no download
        assert all(not any(item.split(":")[0] not in ("noise",) for item in p.data.extra) for p in points), \
            f"{preset.id}: tiny extra data must not need files or downloads"
        assert all(p.teacher.epochs <= 100 and p.student.epochs <= 45 for p in points), preset.id
        assert all(p.teacher.members <= 5 for p in points), preset.id
        assert len(points) <= 12, preset.id
        assert len(spec.sweep["seed"]) <= 3, preset.id
        # about a couple of minutes on 2 CPU cores at ~0.5 s per LeNet-5 student epoch on digits
        student_epochs = sum(p.student.epochs * (2 if p.eval.independent else 1) for p in points)
        assert student_epochs <= 150, (preset.id, student_epochs)


def test_tiny_sweeps_keep_the_teacher_where_the_paper_does():
    # Teachers come from the store when their settings agree: a sweep over student-side settings must
    # not change the teacher (one teacher set per seed).
    from kdtui.core.spec import teacher_key
    for preset_id in ("e3", "e3-data", "e5", "e6", "e7", "e8", "e11", "e1", "e4"):
        points = expand_sweep(load_preset(preset_id, "tiny"))
        keys = {(p.seed, teacher_key(p, 0)) for p in points}
        assert len(keys) == len({p.seed for p in points}), preset_id


def test_paper_scale_settings():
    e1 = load_preset("e1", "paper").resolved()
    assert (e1.data.dataset, e1.teacher.model, e1.data.teacher_subset, e1.teacher.epochs) == ("mnist", "lenet5", 200, 100)
    assert all(item.startswith("emnist:") for extra in e1.sweep["data.extra"] for item in extra)

    e2 = load_preset("e2", "paper")
    assert e2.sweep["teacher.members"] == [1, 3] and e2.teacher.model == e2.student.model == "resnet56"
    tensors = [item for extra in e2.sweep["data.extra"] for item in extra]
    assert tensors and all(item.startswith("tensors:~/.cache/kdtui/data/") for item in tensors)
    assert len(set(tensors)) == len(tensors), "one file per size: a tensors item cannot subsample"
    header = preset_text("e2", "paper")
    assert "torch.save" in header and "(N, 3, 32, 32)" in header and "uint8" in header

    e3 = load_preset("e3", "paper")
    assert e3.teacher.members == 5 and e3.sweep["distill.temperature"] == [1.0, 4.0]
    policies = e3.sweep["distill.augment"]
    assert ["crop", "hflip"] in policies and ["crop", "hflip", "mixup"] in policies and len(policies) == 6
    arms = load_preset("e3-data", "paper").sweep["data.extra"]
    assert [] in arms and any(a and a[0].startswith("svhn:") for a in arms)
    assert any(a and a[0].startswith("noise:") for a in arms) and any(a and a[0].startswith("tensors:") for a in arms)

    e4 = load_preset("e4", "paper")
    assert e4.data.split == 0.5 and e4.data.teacher_split == 0
    assert e4.sweep["data.student_splits"] == [[0], [1], [0, 1]]

    e6 = load_preset("e6", "paper").resolved()
    assert e6.teacher.norm == e6.student.norm == "layer" and e6.student.model == "resnet20"
    assert e6.student.weight_decay == 0 and e6.sweep["student.optimizer"] == ["sgd", "adam"]
    assert e6.sweep["student.epochs"] == [300, 1000, 5000]

    e7 = load_preset("e7", "paper").resolved()
    assert e7.student.init == "interpolate" and e7.student.norm == "layer" and e7.student.model == "resnet20"
    assert e7.sweep["student.init_lambda"] == [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0]

    e8 = load_preset("e8", "paper")
    assert e8.sweep["student.init"] == ["random", "teacher-init"] and len(e8.sweep["seed"]) == 10

    e10 = load_preset("e10", "paper")
    assert e10.sweep["teacher.members"] == [1, 3, 5] and e10.sweep["distill.temperature"] == [1.0, 4.0, 8.0, 16.0]
    assert e10.data.teacher_subset > 0 and e10.teacher.model == "resnet20"

    e11 = load_preset("e11", "paper")
    assert {"resnet56", "resnet110", "vgg16"} <= set(e11.sweep["student.model"]) and e11.student.init == "random"

    assert load_preset("e12", "paper").eval.independent and load_preset("e12", "tiny").eval.independent


def test_paper_datasets_are_the_papers():
    for preset in list_presets():
        datasets = {p.resolved().data.dataset for p in expand_sweep(load_preset(preset.id, "paper"))}
        assert datasets <= {"mnist", "cifar100"}, preset.id


def test_spec_names_never_prefix_each_other():
    names = [p.spec_name(scale) for p in list_presets() for scale in SCALES]
    assert len(set(names)) == len(names)
    for a in names:
        for b in names:
            assert a == b or not b.startswith(a + "["), (a, b)


def test_unknown_preset_or_scale_is_a_one_line_error_listing_the_known_ones():
    with pytest.raises(PresetError) as info:
        get_preset("e99")
    message = str(info.value)
    assert "\n" not in message and "e99" in message and all(i in message for i in IDS)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SpecError)
    with pytest.raises(ValueError, match="E9.*not included"):
        load_preset("e9", "paper")
    with pytest.raises(PresetError, match="known: paper, tiny") as info:
        preset_text("e7", "huge")
    assert "\n" not in str(info.value)
    assert get_preset("E7").id == "e7"          # case-insensitive


def test_catalog_and_report_do_not_import_torch():
    code = ("import sys, kdtui.core.presets, kdtui.analysis.report; kdtui.core.presets.list_presets()[0].run_count('tiny'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# One epoch of the first point of every tiny preset, through the CLI
# ---------------------------------------------------------------------------------------------

def _one_epoch_spec(preset_id: str) -> dict:
    point = expand_sweep(load_preset(preset_id, "tiny"))[0]
    data = point.model_dump(mode="json", exclude_none=True)
    data.pop("sweep", None)
    data["teacher"]["epochs"] = 1
    data["student"]["epochs"] = 1
    data["teacher"]["members"] = min(data["teacher"].get("members", 1), 2)
    return data


@pytest.fixture(scope="module")
def one_epoch_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets-one-epoch")
    ws = root / "ws"
    paths = {}
    for preset_id in IDS:
        path = root / f"{preset_id}.toml"
        path.write_text(tomli_w.dumps(_one_epoch_spec(preset_id)))
        paths[preset_id] = path

    def run(preset_id: str):
        return subprocess.run([*KDTUI, "run", str(paths[preset_id]), "--workspace", str(ws), "--json",
                               "--device", "cpu"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env=cli_env(), timeout=ONE_EPOCH_TIMEOUT_S)

    # Two at a time: most of each call is starting Python + torch; the teacher store's lock makes
    # a run that needs a teacher another run is training wait for it, then reuse it.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(IDS, pool.map(run, IDS)))
    return ws, results


@pytest.mark.parametrize("preset_id", IDS)
def test_tiny_preset_first_point_runs_one_epoch(one_epoch_runs, preset_id):
    _, results = one_epoch_runs
    result = results[preset_id]
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout)
    assert record["status"] == "done", record.get("error")
    assert record["name"].startswith(get_preset(preset_id).spec_name("tiny") + "[")
    assert 0.0 <= record["metrics"]["test_agreement"] <= 1.0


def test_one_epoch_runs_shared_teachers(one_epoch_runs):
    ws, results = one_epoch_runs
    reused = [json.loads(r.stdout) for r in results.values() if r.returncode == 0]
    teachers = [t for record in reused for t in record.get("teachers") or []]
    assert teachers, "records name their teachers"
    keys = {t["key"] for t in teachers}
    assert len(keys) < len(teachers) and any(t.get("reused") for t in teachers)
    assert keys <= {p.name for p in (ws / "teachers").iterdir()}


def test_report_for_a_preset_from_the_one_epoch_runs(one_epoch_runs):
    from kdtui.analysis.report import report_for
    ws, _ = one_epoch_runs
    index = report_for(ws, preset="e7", scale="tiny")
    assert index == ws / "reports" / "e7-interpolation-tiny" / "index.md"
    assert "E7" in index.read_text() and (index.parent / "results.md").exists()
    index = report_for(ws, preset="e12")        # the only scale with runs
    assert index.parent.name == "e12-independent-control-tiny"
    with pytest.raises(ValueError, match="no finished runs of preset e7"):
        report_for(ws, preset="e7", scale="paper")
