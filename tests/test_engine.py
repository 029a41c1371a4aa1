"""The engine end to end on the embedded digits data (CPU, seconds)."""
import math
from dataclasses import replace

import pytest
import torch

from kernels import engine
from kernels.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from kernels.events import EpochMetrics, PhaseEnd, PhaseStart, Progress


def digits_config(teacher_epochs=3, student_epochs=3, **distill) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits", root="unused"),
        teacher=TrainConfig(model="lenet5", epochs=teacher_epochs, batch_size=32, lr=0.05, augment=("crop",)),
        student=TrainConfig(model="lenet5", epochs=student_epochs, batch_size=32, lr=0.01, nesterov=True),
        distill=DistillConfig(augment=("crop",), **distill), seed=0, device="cpu")


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(digits_config(), torch.device("cpu"))


@pytest.fixture(scope="module")
def teacher(prepared):
    return engine.train_teacher(digits_config(teacher_epochs=8), 0, prepared)


def test_digits_teacher_reaches_90_percent(teacher):
    assert teacher.metrics["test_acc"] >= 0.90


def test_distillation_metrics_and_events(prepared, teacher):
    events = []
    result = engine.distill(digits_config(student_epochs=3), prepared, [teacher], on_event=events.append)
    history = result["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert "train_agreement" not in history[0]  # nothing was trained before epoch 1
    final = result["metrics"]
    for name in ("train_agreement", "train_agreement_eval", "test_agreement", "test_acc", "test_ece",
                 "teacher_test_acc", "teacher_train_acc"):
        assert 0.0 <= final[name] <= 1.0, name
    assert final["test_kl"] >= 0 and final["test_nll"] >= 0
    assert final["test_agreement"] > history[0]["test_agreement"] + 0.3  # it learned from the teacher
    # Consistency between agreement and the two accuracies on the same test set.
    a_s, a_t, agree = final["test_acc"], final["teacher_test_acc"], final["test_agreement"]
    assert a_s + a_t - 1 - 1e-9 <= agree <= 1 - abs(a_s - a_t) + 1e-9
    kinds = [type(e) for e in events]
    assert kinds[0] is PhaseStart and kinds[-1] is PhaseEnd and Progress in kinds
    assert [e.epoch for e in events if isinstance(e, EpochMetrics)] == [0, 1, 2, 3]


def test_interpolation_at_lambda_one_reproduces_the_teacher(prepared, teacher):
    cfg = digits_config(student_epochs=1, init="interpolate", init_lambda=1.0)
    student = engine.init_student(cfg, prepared, [teacher])
    ensemble = engine.load_teacher_ensemble(cfg, prepared, [teacher.final_state])
    x = prepared.test_set.images
    assert torch.equal(engine.predict(student, prepared, x).argmax(1), engine.predict(ensemble, prepared, x).argmax(1))
    history = engine.distill(cfg, prepared, [teacher])["history"]
    assert history[0]["test_agreement"] == 1.0 and history[0]["train_agreement_eval"] == 1.0


def test_interpolation_recomputes_batch_norm_statistics(prepared, teacher):
    cfg = replace(digits_config(), teacher=replace(digits_config().teacher, model="resnet20"),
                  student=replace(digits_config().student, model="resnet20"),
                  distill=DistillConfig(init="interpolate", init_lambda=0.5))
    resnet_teacher = engine.TeacherResult({}, engine.build_model(cfg.teacher, prepared).state_dict(), {})
    student = engine.init_student(cfg, prepared, [resnet_teacher])
    norm = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))
    assert int(norm.num_batches_tracked) == math.ceil(len(prepared.distill_set) / engine.EVAL_BATCH)


def test_teacher_init_starts_from_the_teachers_initial_weights(prepared, teacher):
    cfg = digits_config(init="teacher-init")
    student = engine.init_student(cfg, prepared, [teacher])
    for key, value in student.state_dict().items():
        assert torch.equal(value, teacher.initial_state[key]), key
    first = next(iter(teacher.final_state))
    assert not torch.equal(student.state_dict()[first], teacher.final_state[first])  # not the trained weights


def test_resume_reaches_the_same_final_metrics(tmp_path):
    cfg = digits_config(teacher_epochs=2, student_epochs=3)
    uninterrupted = engine.run(cfg, tmp_path / "a")

    finished = []

    def stop_in_student_epoch_2() -> bool:
        # Asked before every step: true from the first step after student epoch 1 ended (progress
        # events are throttled by time, so they cannot say reliably when epoch 2 has begun).
        return ("student", 1) in finished

    def track(event):
        if isinstance(event, EpochMetrics):
            finished.append((event.phase, event.epoch))

    with pytest.raises(engine.StopRequested):
        engine.run(cfg, tmp_path / "b", on_event=track, should_stop=stop_in_student_epoch_2)
    assert torch.load(tmp_path / "b" / "student.pt", weights_only=True)["epoch"] == 1
    resumed = engine.run(cfg, tmp_path / "b")
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]


def test_non_finite_loss_fails_naming_epoch_and_step(prepared, teacher):
    cfg = digits_config(student_epochs=2)
    cfg = replace(cfg, student=replace(cfg.student, lr=1e30, momentum=0.0, nesterov=False))
    with pytest.raises(engine.RunFailed) as info:
        engine.distill(cfg, prepared, [teacher])
    assert info.value.epoch == 1 and info.value.step >= 1
    assert "epoch 1, step" in str(info.value)


# Brier's gradient is tiny next to the KL family's (probabilities, no τ²), so it gets a larger step.
@pytest.mark.parametrize("augment,loss,alpha,lr", [(("mixup",), "kl", 0.5, 0.01),
                                                   (("cutmix", "hflip"), "symmetric-kl", 0.0, 0.01),
                                                   (("rotate", "colorjitter", "noise", "vflip"), "brier", 0.0, 0.5),
                                                   ((), "hard", 0.0, 0.01), ((), "reverse-kl", 0.2, 0.01)])
def test_every_augmentation_and_loss_trains(prepared, teacher, augment, loss, alpha, lr):
    cfg = replace(digits_config(student_epochs=2), distill=DistillConfig(loss=loss, augment=augment, alpha=alpha))
    cfg = replace(cfg, student=replace(cfg.student, lr=lr))
    result = engine.distill(cfg, prepared, [teacher])
    assert math.isfinite(result["metrics"]["train_loss"])
    assert result["metrics"]["test_agreement"] > result["history"][0]["test_agreement"] + 0.03


def test_ensemble_of_two_teachers_and_adam(prepared):
    cfg = replace(digits_config(teacher_epochs=1, student_epochs=1), members=2)
    cfg = replace(cfg, student=replace(cfg.student, optimizer="adam", lr=1e-3, schedule="constant"))
    teachers = [engine.train_teacher(cfg, k, prepared) for k in range(2)]
    first = next(iter(teachers[0].final_state))
    assert not torch.equal(teachers[0].final_state[first], teachers[1].final_state[first])  # independent seeds
    result = engine.distill(cfg, prepared, teachers)
    assert result["history"][-1]["lr"] == pytest.approx(1e-3)
