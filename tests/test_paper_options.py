"""Spec settings the paper's experiments need: jitter strength, E7's lr scaling, E1's data options."""
from __future__ import annotations

import pytest

from kdtui.core.spec import SpecError, spec_from_dict, spec_hash, teacher_key


def _spec(**sections):
    return spec_from_dict({"data": {"dataset": "digits"}, **sections})


def test_colorjitter_strength_is_stored_canonically_and_checked():
    plain = _spec(distill={"augment": ["crop", "colorjitter"]})
    paper = _spec(distill={"augment": ["crop", "colorjitter:0.2"]})
    spaced = _spec(distill={"augment": ["crop", "colorjitter: 0.20"]})
    assert paper.distill.augment == spaced.distill.augment == ["crop", "colorjitter"]
    assert spec_hash(plain) == spec_hash(paper)
    strong = _spec(distill={"augment": ["colorjitter:0.4"]})
    assert strong.distill.augment == ["colorjitter:0.4"] and spec_hash(strong) != spec_hash(plain)
    for bad, words in ((["colorjitter:0.6"], "between 0 and 0.5"), (["crop:1"], "no parameter"),
                       (["colorjitter", "colorjitter:0.3"], "twice"), (["solarize"], "unknown augmentation")):
        with pytest.raises(SpecError, match=words) as info:
            _spec(distill={"augment": bad})
        assert "distill.augment" in str(info.value)


@pytest.mark.parametrize("lam", [0.0, 0.375, 1.0])
def test_scale_lr_by_init_multiplies_the_students_lr_by_one_minus_lambda(lam):
    base = {"student": {"init": "interpolate", "init_lambda": lam, "lr": 0.05, "final_lr": 1e-6}}
    plain = _spec(**base).to_run_config()
    scaled = _spec(student={**base["student"], "scale_lr_by_init": True}).to_run_config()
    assert (plain.student.lr, plain.student.final_lr) == (0.05, 1e-6)
    assert scaled.student.lr == pytest.approx(0.05 * (1 - lam), abs=1e-15)
    assert scaled.student.final_lr == pytest.approx(1e-6 * (1 - lam), abs=1e-18)
    assert scaled.teacher == plain.teacher          # the teacher's schedule is untouched
    with pytest.raises(SpecError, match="interpolate"):
        _spec(student={"scale_lr_by_init": True})


def test_extra_only_is_a_student_setting_and_per_seed_subset_a_teacher_one():
    extra = {"dataset": "digits", "teacher_subset": 100, "extra": ["noise:0.1"]}
    a = spec_from_dict({"data": extra})
    b = spec_from_dict({"data": {**extra, "extra_only": True}})
    assert teacher_key(a, 0) == teacher_key(b, 0) and spec_hash(a) != spec_hash(b)
    c = spec_from_dict({"data": {**extra, "teacher_subset_per_seed": True}})
    assert teacher_key(a, 0) != teacher_key(c, 0)
    assert c.to_run_config().data.subset_seed == 0
    assert spec_from_dict({"seed": 3, "data": {**extra, "teacher_subset_per_seed": True}}).to_run_config().data.subset_seed == 3


def test_cka_needs_one_resnet_teacher_and_a_resnet_student():
    ok = spec_from_dict({"data": {"dataset": "cifar100"}, "teacher": {"model": "resnet20"}, "eval": {"cka": True}})
    assert ok.eval.cka
    for teacher in ({"model": "resnet20", "members": 3}, {"model": "lenet5"}):
        with pytest.raises(SpecError, match="eval.cka"):
            spec_from_dict({"data": {"dataset": "digits"}, "teacher": teacher, "eval": {"cka": True}})
    with pytest.raises(SpecError, match="eval.cka"):
        spec_from_dict({"data": {"dataset": "cifar100"}, "teacher": {"model": "resnet20"},
                        "student": {"model": "vgg16"}, "eval": {"cka": True}})
