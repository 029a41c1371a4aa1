"""The paper's experiments as presets: every file parses and expands, the tiny scale is small and runs.

The one-epoch check drives the real `kdtui run` console script on the first point of each tiny
preset, all in ONE workspace so that equal teachers come from the teacher store.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import tomli_w

from cli_helpers import KDTUI, cli_env
from kdtui.core.presets import (PRESETS_DIR, SCALES, Preset, PresetError, get_preset, list_presets, load_preset,
                           preset_for_run_name, preset_path, preset_text)
from kdtui.core.spec import SpecError, expand_sweep, parse_spec

IDS = ["e1", "e2", "e3", "e3-data", "e4a", "e4b", "e5", "e6a", "e6b", "e7", "e8", "e10", "e11a", "e11b", "e11c",
       "e12a", "e12b"]
PAIRS = [(preset_id, scale) for preset_id in IDS for scale in SCALES]
ONE_EPOCH_TIMEOUT_S = 240


def test_catalog_lists_the_experiments_in_order():
    presets = list_presets()
    assert [p.id for p in presets] == IDS
    assert all(isinstance(p, Preset) for p in presets)
    for p in presets:
        assert set(p.scales) == {"paper", "tiny"}
        assert all(path.is_file() and path.parent == PRESETS_DIR for path in p.scales.values())
        assert p.title and p.varies and p.paper_claim and p.figure, p.id
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
    # the header: same title, figure and claim at both scales, its own "varies"
    header = preset.header(scale)
    assert header["title"] == preset.title and header["paper"] == preset.paper_claim
    assert header["figure"] == preset.figure
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
        assert len(points) <= 14, preset.id
        assert len(spec.sweep["seed"]) <= 3, preset.id
        # about a couple of minutes on 2 CPU cores at ~0.5 s per LeNet-5 student epoch on digits
        student_epochs = sum(p.student.epochs * (2 if p.eval.independent else 1) for p in points)
        assert student_epochs <= 150, (preset.id, student_epochs)


def test_tiny_sweeps_keep_the_teacher_where_the_paper_does():
    # Teachers come from the store when their settings agree: a sweep over student-side settings must
    # not change the teacher (one teacher set per seed).
    from kdtui.core.spec import teacher_key
    for preset_id in ("e3", "e3-data", "e5", "e6a", "e6b", "e7", "e8", "e11a", "e11b", "e11c", "e1", "e4a", "e4b",
                      "e12b"):
        points = expand_sweep(load_preset(preset_id, "tiny"))
        keys = {(p.seed, teacher_key(p, 0)) for p in points}
        assert len(keys) == len({p.seed for p in points}), preset_id


# ---------------------------------------------------------------------------------------------
# The paper-scale presets against the paper's settings, written out here from the paper
# (Figs. 1-6, 11-13, Tables 1, App. A-C), not read from the preset files
# ---------------------------------------------------------------------------------------------

BASELINE = ("crop", "hflip")
FIG3_POLICIES = {BASELINE, BASELINE + ("rotate",), BASELINE + ("vflip",), BASELINE + ("colorjitter",),
                 BASELINE + ("rotate", "vflip", "colorjitter"), BASELINE + ("mixup",)}
FIG5_POLICIES = FIG3_POLICIES - {BASELINE + ("mixup",)}
EMNIST_BYCLASS = 697_932
# Fig. 1 / Fig. 3's GAN data, mixed per minibatch (App. A.1): S synthetic images per 4 real ones, from
# one pool file; Fig. 1's amounts 12.5k..50k an epoch on CIFAR-100's 50k images are S = 1..4.
GAN = "synthetic:~/.cache/kdtui/data/cifar100-gan-50000.pt:ratio={}:4"
HALVES = {"split": 0.5, "teacher_split": 0, "student_splits": {(0,), (1,), (0, 1)}}
D0 = {"split": 0.5, "teacher_split": 0, "student_splits": {(0,)}}
ADAM_LR = 0.01        # the tiny-scale search's pick, recorded in the e6b header


def _arms(teacher: str, members, students) -> set:
    return {(teacher, m, s) for m in members for s in students}


# Per preset: (teacher model, members, student model) arms, data, epochs, seeds and swept values.
# Keys left out take DEFAULTS (the CIFAR-100 recipe at temperature 4 with the baseline augmentation).
DEFAULTS = dict(dataset="cifar100", teacher_epochs={200}, student_epochs={300}, seeds=3, temperatures={4.0},
                augment={BASELINE}, extra={()}, extra_only=False, split=None, norm="batch",
                optimizer="sgd", init={"random"}, synthetic_temperature=None)
PAPER = {
    "e1": dict(dataset="mnist", arms=_arms("lenet5", [1], ["lenet5"]), teacher_epochs={100},
               augment={("crop",)}, extra_only=True, teacher_subset=(200, True),
               extra={("mnist:60000",)} | {(f"emnist:{round(EMNIST_BYCLASS * f)}",) for f in (0.25, 0.5, 1.0)}),
    "e2": dict(arms=_arms("resnet56", [1, 3], ["resnet56"]),
               extra={()} | {(GAN.format(n),) for n in (1, 2, 3, 4)}, synthetic_temperature=1.0),
    # Fig. 3's noise bar resamples images as noise in every minibatch (p = 0.2): an augmentation
    "e3": dict(arms=_arms("resnet56", [5], ["resnet56"]), temperatures={1.0, 4.0},
               augment=FIG3_POLICIES | {BASELINE + ("uniform-noise",)}),
    "e3-data": dict(arms=_arms("resnet56", [5], ["resnet56"]), temperatures={1.0, 4.0},
                    extra={(), (GAN.format(1),), ("svhn:10000",)}, synthetic_temperature=1.0),
    "e4a": dict(arms=_arms("resnet56", [1, 3, 5], ["resnet56"]), split=HALVES),
    "e4b": dict(arms=_arms("resnet56", [3], ["resnet56"]), split=HALVES, temperatures={1.0, 4.0, 8.0, 16.0}),
    "e5": dict(arms=_arms("resnet56", [1, 3, 5], ["resnet56"]), augment=FIG5_POLICIES),
    "e6a": dict(arms=_arms("resnet20", [1], ["resnet20"]), norm="layer", student_epochs={300, 1000, 5000},
                weight_decay=0.0),
    "e6b": dict(arms=_arms("resnet20", [1], ["resnet20"]), norm="layer", student_epochs={300, 1000, 5000},
                weight_decay=0.0, optimizer="adam", student_lr=ADAM_LR),
    "e7": dict(arms=_arms("resnet20", [1], ["resnet20"]), norm="layer", init={"interpolate"},
               init_lambda={0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0}, scale_lr_by_init=True),
    "e8": dict(arms=_arms("resnet20", [1], ["resnet20"]), seeds=10, init={"random", "teacher-init"}, cka=True),
    "e10": dict(arms=_arms("resnet20", [1, 3, 5], ["resnet20"]), split=D0, temperatures={1.0, 4.0, 8.0, 16.0}),
    "e11a": dict(arms=_arms("resnet20", [1, 3, 5], ["resnet20", "resnet56"])),
    "e11b": dict(arms=_arms("resnet56", [1, 3, 5], ["resnet56", "resnet110"])),
    "e11c": dict(arms=_arms("vgg16", [5], ["vgg16"]), augment=FIG3_POLICIES, teacher_lr=0.05),
    "e12a": dict(arms=_arms("resnet56", [1, 3, 5], ["resnet56"]), independent=True),
    "e12b": dict(arms=_arms("resnet56", [5], ["resnet56"]), augment=FIG3_POLICIES, independent=True),
}


def _profile(preset_id: str) -> dict:
    points = [p.resolved() for p in expand_sweep(load_preset(preset_id, "paper"))]
    one = lambda values: values.pop() if len(values) == 1 else values  # noqa: E731
    d = points[0].data
    return dict(
        dataset=one({p.data.dataset for p in points}),
        arms={(p.teacher.model, p.teacher.members, p.student.model) for p in points},
        teacher_epochs={p.teacher.epochs for p in points}, student_epochs={p.student.epochs for p in points},
        seeds=len({p.seed for p in points}), temperatures={p.distill.temperature for p in points},
        augment={tuple(p.distill.augment) for p in points}, extra={tuple(p.data.extra) for p in points},
        extra_only=one({p.data.extra_only for p in points}),
        split=None if d.split == 0 else {"split": d.split, "teacher_split": d.teacher_split,
                                         "student_splits": {tuple(p.data.student_splits) for p in points}},
        norm=one({p.student.norm for p in points} | {p.teacher.norm for p in points}),
        optimizer=one({p.student.optimizer for p in points}), init={p.student.init for p in points},
        init_lambda={p.student.init_lambda for p in points}, scale_lr_by_init=one({p.student.scale_lr_by_init for p in points}),
        weight_decay=one({p.student.weight_decay for p in points}), student_lr=one({p.student.lr for p in points}),
        teacher_lr=one({p.teacher.lr for p in points}), independent=one({p.eval.independent for p in points}),
        cka=one({p.eval.cka for p in points}),
        synthetic_temperature=one({p.distill.synthetic_temperature for p in points}),
        teacher_subset=(d.teacher_subset, d.teacher_subset_per_seed),
        teacher_nesterov=one({p.teacher.nesterov for p in points}),
        run_count=len(points),
    )


@pytest.mark.parametrize("preset_id", IDS)
def test_paper_preset_sets_up_the_papers_experiment(preset_id):
    expected = {**DEFAULTS, **PAPER[preset_id]}
    got = _profile(preset_id)
    for key, value in expected.items():
        assert got[key] == value, (preset_id, key)
    # every grid has exactly the arms x the swept values x the seeds, no stray point
    varied = [k for k in ("augment", "extra", "temperatures", "student_epochs", "init", "init_lambda")
              if len(expected.get(k, ())) > 1]
    size = len(expected["arms"]) * expected["seeds"] * math.prod(len(expected[k]) for k in varied)
    if expected["split"]:
        size *= len(expected["split"]["student_splits"])
    assert got["run_count"] == size, preset_id
    cifar = expected["dataset"] == "cifar100"
    # the appendix's recipes; the released CIFAR teachers use Nesterov momentum
    if cifar:
        resolved = load_preset(preset_id, "paper").resolved()
        assert got["teacher_nesterov"] is True and resolved.teacher.batch_size == 256
        assert got["teacher_lr"] == expected.get("teacher_lr", 0.1) and resolved.teacher.final_lr == 0
        assert resolved.student.batch_size == 128 and resolved.student.final_lr == 1e-6
        if expected["optimizer"] == "sgd":
            assert resolved.student.nesterov and got["student_lr"] == 0.05
    for key in ("init_lambda", "scale_lr_by_init", "weight_decay", "student_lr", "independent", "teacher_subset",
                "cka"):
        if key not in PAPER[preset_id]:
            assert got[key] == {"init_lambda": {0.0}, "scale_lr_by_init": False, "independent": False,
                                "teacher_subset": (0, False), "cka": False}.get(key, got[key]), (preset_id, key)


def test_every_paper_preset_is_in_the_table_and_says_its_figure_panel():
    assert set(PAPER) == set(IDS)
    for preset in list_presets():
        text = preset.text("paper")
        assert preset.figure and f'Scale "paper" ({preset.figure.split(" (")[0]}' in text, preset.id
    groups = [p.figure_group for p in list_presets()]
    # the parts of a split figure are listed together
    assert all(groups.index(g) == i or groups[i - 1] == g for i, g in enumerate(groups))


def test_gan_arms_mix_one_documented_pool_per_minibatch():
    items = {item for extra in load_preset("e2", "paper").sweep["data.extra"] for item in extra}
    assert {item.split(":ratio=")[0] for item in items} == {"synthetic:~/.cache/kdtui/data/cifar100-gan-50000.pt"}
    header = preset_text("e2", "paper")
    assert "torch.save" in header and "(N, 3, 32, 32)" in header and "uint8" in header
    assert "12.5k, 25k, 37.5k and 50k" in header and "tensors:PATH" in header  # the choice, and the other reading
    for preset_id in ("e2", "e3-data"):
        assert "synthetic_temperature = 1.0" in preset_text(preset_id, "paper")

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


# The first case also sets up the module's fixture: 17 CLI runs, two at a time, VGG-16 among them.
@pytest.mark.timeout(1200)
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
    from kdtui.core.registry import RunStore
    ws, results = one_epoch_runs
    # These runs came from one-epoch copies of the preset files, so their records name no preset; mark
    # the e7 and e12a ones as `kdtui run --preset ID` would have (the report selects by that field).
    store = RunStore(ws)
    for preset_id in ("e7", "e12a"):
        record = json.loads(results[preset_id].stdout)
        store.update(record["id"], preset=preset_id, preset_scale="tiny")
    index = report_for(ws, preset="e7", scale="tiny")
    assert index == ws / "reports" / "e7-interpolation-tiny" / "index.md"
    assert "E7" in index.read_text() and (index.parent / "results.md").exists()
    index = report_for(ws, preset="e12a")       # the only scale with runs
    assert index.parent.name == "e12a-independent-control-tiny"
    with pytest.raises(ValueError, match="no finished runs of preset e7"):
        report_for(ws, preset="e7", scale="paper")
