"""The spec contract: validation messages, data-set defaults, round trip, sweeps, hashes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdtui.core import spec as spec_module
from kdtui.core.spec import (
    SpecError, expand_sweep, group_hash, load_spec, member_seed, parse_spec, spec_from_dict, spec_hash,
    teacher_key,
)
from kernels import catalog
from kernels.config import DataConfig, DistillConfig, RunConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "kdtui" / "specs" / "digits.toml"

# spec text -> substrings the one-line message must contain (the field path first).
BAD_SPECS = [
    ("[distill]\ntemprature = 4.0\n", ["unknown key 'distill.temprature'", "did you mean 'temperature'"]),
    ("[dsitill]\ntemperature = 4.0\n", ["'dsitill'", "did you mean 'distill'"]),
    ("temperature = 4.0\n", ["unknown key 'temperature'", "did you mean 'distill.temperature'"]),
    ("[teacher]\nepochs = -3\n", ["teacher.epochs = -3: must be >= 1"]),
    ("[distill]\ntemperature = 0\n", ["distill.temperature = 0: must be > 0"]),
    ("[student]\ninit = 'interpolate'\ninit_lambda = 1.5\n", ["student.init_lambda = 1.5: must be between 0 and 1"]),
    ("[teacher]\nmembers = 0\n", ["teacher.members = 0: must be >= 1"]),
    ("[teacher]\nmodel = 'resnet21'\n", ["teacher.model = 'resnet21': unknown model; allowed: lenet5, resnet20"]),
    ("[data]\ndataset = 'cifar1000'\n", ["data.dataset = 'cifar1000': unknown dataset; allowed: digits, mnist"]),
    ("[teacher]\nmodel = 'resnet20'\n[student]\nmodel = 'resnet56'\ninit = 'interpolate'\n",
     ["student.init = 'interpolate' needs student.model == teacher.model (got resnet56 vs resnet20)"]),
    ("[student]\nmodel = 'resnet20'\ninit = 'teacher-init'\n",
     ["student.init = 'teacher-init' needs student.model == teacher.model (got resnet20 vs lenet5)"]),
    ("[teacher]\nnorm = 'layer'\n[student]\nnorm = 'batch'\ninit = 'interpolate'\n",
     ["student.init = 'interpolate' needs student.norm == teacher.norm (got batch vs layer)"]),
    ("name = 'x'\n\n[teacher\nepochs = 3\n", ["line 3: invalid TOML"]),
    ("[teacher]\nepochs = 'ten'\n", ["teacher.epochs = 'ten': must be an integer"]),
    ("[teacher]\nepochs = 10.5\n", ["teacher.epochs = 10.5: must be an integer"]),
    ("[teacher]\nlr = 'fast'\n", ["teacher.lr = 'fast': must be a number"]),
    ("[teacher]\nlr = nan\n", ["teacher.lr = nan: must be a finite number"]),
    ("[data]\ndownload = 1\n", ["data.download = 1: must be true or false"]),
    ("[teacher]\naugment = ['crop', 'flip']\n", ["teacher.augment[1] = 'flip': unknown augmentation; allowed: crop"]),
    ("[distill]\naugment = 'crop'\n", ["distill.augment = 'crop': must be a list"]),
    ("[distill]\nloss = 'kld'\n", ["distill.loss = 'kld': unknown loss; allowed: kl, reverse-kl"]),
    ("[student]\noptimizer = 'adamw'\n", ["student.optimizer = 'adamw': unknown optimizer; allowed: sgd, adam"]),
    ("[teacher]\nschedule = 'step'\n", ["teacher.schedule = 'step': unknown schedule; allowed: cosine, constant"]),
    ("[student]\ninit = 'copy'\n", ["student.init = 'copy': unknown init; allowed: random, teacher-init, interpolate"]),
    ("[data]\nextra = ['svhn']\n", ["data.extra[0] = 'svhn': must look like"]),
    ("[data]\nextra = ['svhn:ten']\n", ["data.extra[0] = 'svhn:ten'", "N >= 1"]),
    ("[data]\nextra = ['noise:1.5']\n", ["data.extra[0] = 'noise:1.5'", "between 0 and 1"]),
    ("[data]\nextra = ['tensors:x.pt', 'imagenet:100']\n", ["data.extra[1] = 'imagenet:100'", "unknown extra data kind"]),
    ("[data]\nextra = ['svhn: ten']\n", ["data.extra[0] = 'svhn: ten': 'svhn:N' needs a whole number of images N >= 1"]),
    ("[data]\nextra = ['tensors: ']\n", ["data.extra[0] = 'tensors: ': must look like"]),
    ("[data]\nsplit = 1.0\n", ["data.split = 1.0: must be >= 0 and < 1"]),
    ("[data]\nsplit = 0.5\nteacher_split = 2\n", ["data.teacher_split = 2: must be 0 or 1"]),
    ("[data]\nsplit = 0.5\nstudent_splits = [0, 3]\n", ["data.student_splits[1] = 3: must be 0 or 1"]),
    ("[data]\nstudent_splits = [1]\n", ["data.student_splits = [1]: needs data.split > 0"]),
    ("[data]\nstudent_splits = []\n", ["data.student_splits = []: must not be empty"]),
    ("device = 'gpu'\n", ["device = 'gpu': must be auto, cpu, cuda or cuda:N"]),
    ("device = 'cuda:x'\n", ["device = 'cuda:x'"]),
    ("seed = -1\n", ["seed = -1: must be between 0"]),
    ("[eval]\nevery = 0\n", ["eval.every = 0: must be >= 1"]),
    ("[teacher]\nfinal_lr = 0.5\nlr = 0.1\n", ["teacher.final_lr = 0.5: must be <= teacher.lr (0.1)"]),
    ("teacher = 3\n", ["teacher = 3: must be a table"]),
    ("[sweep]\n'distill.temprature' = [1.0, 4.0]\n",
     ["sweep.'distill.temprature': unknown field path", "did you mean 'distill.temperature'"]),
    ("[sweep]\nseed = 3\n", ["sweep.'seed' = 3: must be a non-empty list"]),
    ("[sweep]\nseed = []\n", ["sweep.'seed' = []: must be a non-empty list"]),
    ("[sweep]\n'distill.temperature' = [1.0, 0.0]\n", ["sweep.'distill.temperature'[1] = 0.0: must be > 0"]),
    ("[sweep]\n'student.model' = ['lenet5', 'resnet21']\n", ["sweep.'student.model'[1] = 'resnet21': unknown model"]),
    ("[sweep]\nname = ['a', 'b']\n", ["sweep.'name'", "cannot sweep"]),
    ("[teacher]\nepochs = 0\nlr = -1\n", ["teacher.epochs = 0: must be >= 1", "(and 1 more)"]),
]


@pytest.mark.parametrize("text,expected", BAD_SPECS, ids=[f"bad{i}" for i in range(len(BAD_SPECS))])
def test_bad_spec_is_one_clear_line(text, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.toml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("spec.toml: ")
    for part in expected:
        assert part in message, message


def test_bad_corpus_is_large_enough():
    assert len(BAD_SPECS) >= 18


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError, match="nope.toml: no such spec file"):
        load_spec(missing)


def test_load_spec_uses_the_path_as_source(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[teacher]\nepochs = -3\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: teacher.epochs = -3: must be >= 1"
    assert info.value.path == "teacher.epochs"


def test_spec_from_dict_rejects_non_table():
    with pytest.raises(SpecError, match="must be a table"):
        spec_from_dict([1, 2], "x")


# -- defaults ----------------------------------------------------------------------------------

DIGITS_TEACHER = dict(model="lenet5", norm="batch", members=1, epochs=20, batch_size=32, lr=0.05,
                      optimizer="sgd", momentum=0.9, nesterov=False, weight_decay=1e-4, schedule="cosine",
                      final_lr=0.0, augment=["crop"])
DIGITS_STUDENT = dict(model="lenet5", norm="batch", epochs=20, batch_size=32, lr=0.01, optimizer="sgd",
                      momentum=0.9, nesterov=True, weight_decay=1e-4, schedule="cosine", init="random",
                      init_lambda=0.0, scale_lr_by_init=False)


@pytest.mark.parametrize("text", ["", "[data]\ndataset = \"digits\"\n",
                                  "name = \"x\"\n[data]\ndataset = \"digits\"\n"])
def test_short_specs_resolve_to_digits_defaults(text):
    s = parse_spec(text).resolved()
    assert s.seed == 0 and s.device == "auto"
    assert s.data.dataset == "digits" and s.data.root == "~/.cache/kdtui/data" and s.data.download is True
    assert s.data.image_size == 0 and s.data.student_splits == [0] and s.data.extra == []
    assert s.teacher.model_dump(exclude={"final_lr"}) == {k: v for k, v in DIGITS_TEACHER.items() if k != "final_lr"}
    assert s.student.model_dump(exclude={"final_lr"}) == DIGITS_STUDENT
    assert s.distill.model_dump() == dict(loss="kl", temperature=4.0, alpha=0.0, augment=["crop"], mixup_alpha=1.0,
                                          teacher_cache="auto", teacher_cache_mb=0, synthetic_temperature=None)
    assert "hflip" not in s.teacher.augment
    assert s.eval.every is None  # worked out per phase from its epochs (kernels.config.resolve_eval_every)


def test_raw_spec_keeps_defaults_open():
    s = parse_spec("[data]\ndataset = 'digits'\n")
    assert s.teacher.batch_size is None and s.student.lr is None and s.distill.augment is None


def test_user_values_win():
    s = parse_spec("""
[teacher]
batch_size = 64
lr = 0.02
augment = ["crop", "rotate"]
[student]
nesterov = false
epochs = 3
[distill]
augment = ["mixup"]
""").resolved()
    assert (s.teacher.batch_size, s.teacher.lr, s.teacher.augment) == (64, 0.02, ["crop", "rotate"])
    assert s.teacher.epochs == 20  # still the digits default
    assert (s.student.nesterov, s.student.epochs, s.student.lr) == (False, 3, 0.01)
    assert s.distill.augment == ["mixup"]


def test_cifar100_resolves_to_paper_values():
    s = parse_spec("[data]\ndataset = 'cifar100'\n").resolved()
    t, st = s.teacher, s.student
    assert (t.model, t.epochs, t.batch_size, t.lr, t.momentum, t.nesterov, t.weight_decay, t.schedule, t.final_lr) \
        == ("resnet20", 200, 256, 0.1, 0.9, False, 1e-4, "cosine", 0.0)
    assert (st.model, st.epochs, st.batch_size, st.lr, st.nesterov, st.final_lr) == ("resnet20", 300, 128, 0.05, True, 1e-6)
    assert t.augment == ["crop", "hflip"] and s.distill.augment == ["crop", "hflip"]


def test_svhn_has_no_hflip_and_mnist_uses_lenet():
    svhn = parse_spec("[data]\ndataset = 'svhn'\n").resolved()
    assert svhn.teacher.augment == ["crop"] and svhn.teacher.model == "resnet20"
    for name in ("mnist", "fashion-mnist", "emnist"):
        s = parse_spec(f"[data]\ndataset = '{name}'\n").resolved()
        assert s.teacher.model == "lenet5" and s.distill.augment == ["crop"]


def test_student_model_and_norm_follow_teacher():
    s = parse_spec("[teacher]\nmodel = 'resnet56'\nnorm = 'layer'\n[student]\ninit = 'interpolate'\n").resolved()
    assert (s.student.model, s.student.norm) == ("resnet56", "layer")


def test_every_dataset_has_a_default_table():
    for name in catalog.DATASETS:
        s = parse_spec(f"[data]\ndataset = '{name}'\n").resolved()
        assert s.teacher.model in catalog.MODELS and s.student.lr > 0


def test_resolved_is_idempotent():
    s = parse_spec("[data]\ndataset = 'cifar10'\n").resolved()
    assert s.resolved() == s


# -- round trip, demo, run config ----------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "[data]\ndataset = 'cifar100'\n[teacher]\nmembers = 3\n",
                                  "[data]\nsplit = 0.5\nstudent_splits = [0, 1]\nextra = ['noise:0.2']\n"
                                  "[sweep]\nseed = [0, 1]\n"])
def test_round_trip_through_toml(text):
    original = parse_spec(text).resolved()
    again = parse_spec(original.to_toml()).resolved()
    assert again == original


def test_to_toml_of_expanded_point_has_no_sweep():
    point = expand_sweep(parse_spec("[sweep]\nseed = [0, 1]\n"))[0]
    assert "sweep" not in point.to_toml()


def test_demo_spec():
    s = load_spec(DEMO).resolved()
    assert s.name == "digits-selfdistill" and s.data.dataset == "digits"
    assert s.teacher.model == s.student.model == "lenet5"
    assert s.teacher.epochs == s.student.epochs == 20
    assert s.distill.temperature == 4.0 and s.distill.augment == ["crop"] and s.teacher.augment == ["crop"]
    assert s.teacher.batch_size == 32 and s.student.lr == 0.01


def test_to_run_config():
    s = parse_spec("""
seed = 3
[teacher]
members = 2
[student]
init = "interpolate"
init_lambda = 0.25
[distill]
temperature = 2.0
[eval]
every = 5
""")
    c = s.to_run_config()
    assert isinstance(c, RunConfig) and isinstance(c.data, DataConfig)
    assert isinstance(c.teacher, TrainConfig) and isinstance(c.student, TrainConfig)
    assert isinstance(c.distill, DistillConfig)
    assert c.device == "auto" and c.seed == 3 and c.members == 2 and c.eval_every == 5
    assert c.data.dataset == "digits" and c.data.student_splits == (0,) and "~" not in c.data.root
    assert (c.teacher.epochs, c.teacher.batch_size, c.teacher.lr, c.teacher.nesterov) == (20, 32, 0.05, False)
    assert (c.student.lr, c.student.nesterov, c.student.augment) == (0.01, True, ("crop",))
    assert c.teacher.augment == ("crop",)
    assert (c.distill.temperature, c.distill.init, c.distill.init_lambda) == (2.0, "interpolate", 0.25)


# -- sweeps -----------------------------------------------------------------------------------

SWEEP = """
name = "digits-selfdistill"
[sweep]
seed = [0, 1, 2]
"distill.temperature" = [1.0, 4.0]
"""


def test_sweep_grid_order_and_names():
    points = expand_sweep(parse_spec(SWEEP))
    assert len(points) == 3 * 2
    assert [(p.seed, p.distill.temperature) for p in points] == \
        [(0, 1.0), (0, 4.0), (1, 1.0), (1, 4.0), (2, 1.0), (2, 4.0)]
    assert points[3].name == "digits-selfdistill[seed=1,distill.temperature=4.0]"
    assert all(p.sweep is None for p in points)


def test_no_sweep_is_one_point():
    s = parse_spec("seed = 4\n")
    assert expand_sweep(s) == [s]


def test_unquoted_dotted_sweep_keys_are_paths():
    points = expand_sweep(parse_spec("[sweep]\nstudent.init_lambda = [0.0, 0.5]\nstudent.init = ['interpolate']\n"))
    assert [p.student.init_lambda for p in points] == [0.0, 0.5]


def test_sweep_over_dataset_resolves_defaults_per_point():
    a, b = expand_sweep(parse_spec("[sweep]\n'data.dataset' = ['digits', 'cifar10']\n"))
    assert a.resolved().teacher.batch_size == 32 and b.resolved().teacher.batch_size == 256


def test_bad_grid_value_rejected_before_anything_is_returned():
    s = parse_spec("[sweep]\nseed = [0, 1]\n")
    s.sweep["distill.temperature"] = [4.0, -1.0]   # as if edited after parsing
    with pytest.raises(SpecError, match=r"sweep.'distill.temperature'\[1\] = -1.0: must be > 0"):
        expand_sweep(s, "spec.toml")


def test_bad_combination_rejected():
    s = parse_spec("[sweep]\n'student.model' = ['lenet5', 'resnet20']\n'student.init' = ['random', 'interpolate']\n")
    with pytest.raises(SpecError, match=r"sweep point \[student.model=resnet20,student.init=interpolate\]"):
        expand_sweep(s)


# -- identity ---------------------------------------------------------------------------------

def _spec(text: str = ""):
    return parse_spec(text)


def test_hashes():
    base = _spec()
    seed = _spec("seed = 1\n")
    named = _spec("name = 'other'\n")
    hot = _spec("[distill]\ntemperature = 8.0\n")
    assert len(spec_hash(base)) == 64 and int(spec_hash(base), 16) >= 0
    assert spec_hash(seed) != spec_hash(base) and group_hash(seed) == group_hash(base)
    assert spec_hash(named) == spec_hash(base) and group_hash(named) == group_hash(base)
    assert spec_hash(hot) != spec_hash(base) and group_hash(hot) != group_hash(base)


def test_hash_is_of_the_resolved_spec():
    assert spec_hash(_spec()) == spec_hash(_spec("[teacher]\nbatch_size = 32\n")) == spec_hash(_spec().resolved())


def test_compiling_changes_no_identity_but_dropping_the_last_batch_does():
    eager, compiled = _spec(), _spec("[engine]\ncompile = 'max-autotune'\n")
    graphs = _spec("[engine]\ncompile = 'reduce-overhead'\n")
    assert spec_hash(compiled) == spec_hash(eager) and teacher_key(compiled, 0) == teacher_key(eager, 0)
    # reduce-overhead trains without each epoch's last batch: other runs, other teachers
    assert spec_hash(graphs) != spec_hash(eager) and group_hash(graphs) != group_hash(eager)
    assert teacher_key(graphs, 0) != teacher_key(eager, 0)


def test_extra_items_stored_canonical_so_spelling_cannot_split_hashes():
    spaced = _spec("[data]\nextra = ['svhn: 100', ' noise : 0.25 ', 'tensors: gan samples.pt ']\n")
    tight = _spec("[data]\nextra = ['svhn:100', 'noise:0.25', 'tensors:gan samples.pt']\n")
    canonical = ["svhn:100", "noise:0.25", "tensors:gan samples.pt"]    # inner spaces of a path stay
    assert spaced.data.extra == canonical
    assert spaced.to_run_config().data.extra == tuple(canonical)
    assert "'svhn: 100'" not in spaced.to_toml() and '"svhn:100"' in spaced.to_toml()
    assert spec_hash(spaced) == spec_hash(tight) and group_hash(spaced) == group_hash(tight)
    assert spec_hash(spaced) != spec_hash(_spec("[data]\nextra = ['svhn:101']\n"))


def test_swept_extra_items_are_canonical_per_point():
    points = expand_sweep(_spec("[sweep]\n'data.extra' = [[], ['emnist: 20000'], ['noise:0.5 ']]\n"))
    assert [p.data.extra for p in points] == [[], ["emnist:20000"], ["noise:0.5"]]
    assert spec_hash(points[1]) == spec_hash(_spec("[data]\nextra = ['emnist:20000']\n"))


def test_teacher_key():
    base = teacher_key(_spec(), 0)
    # student, distill, eval and device settings never change the teacher
    for text in ("[student]\nlr = 0.5\nepochs = 3\n", "[distill]\ntemperature = 1.0\nloss = 'brier'\n",
                 "device = 'cpu'\n", "[eval]\nevery = 3\n", "name = 'x'\n", "[data]\nextra = ['noise:0.1']\n",
                 "[teacher]\nmembers = 3\n"):
        assert teacher_key(_spec(text), 0) == base, text
    for text in ("[teacher]\nlr = 0.02\n", "[teacher]\nepochs = 5\n", "[data]\nteacher_subset = 200\n",
                 "[data]\nimage_size = 32\n", "seed = 1\n"):
        assert teacher_key(_spec(text), 0) != base, text
    three = _spec("[teacher]\nmembers = 3\n")
    assert len({teacher_key(three, k) for k in range(3)}) == 3
    with pytest.raises(ValueError):
        teacher_key(three, 3)


def test_member_seed():
    assert member_seed(0, 0) == 0 and member_seed(2, 1) == 2001
    assert spec_module.member_seed is member_seed


# -- import cost ------------------------------------------------------------------------------

def test_import_does_not_load_torch():
    code = "import kdtui.core.spec, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
