"""fp32 evaluation, the eval schedule, exact BN statistics, and the GPU-ready engine options on CPU."""
import math
from dataclasses import replace

import pytest
import torch
from cache_helpers import config, untrained_teachers
from torch import nn

from kernels import engine, models
from kernels.config import EngineConfig, TrainConfig, resolve_eval_every
from kernels.distributed import Shards
from kernels.init import recompute_batch_norm
from kernels.precision import Precision, backward_step, cast_for_inference, fp32_exact


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(config(), torch.device("cpu"))


@pytest.mark.parametrize("epochs,every", [(1, 1), (10, 1), (30, 1), (44, 1), (45, 2), (100, 3), (300, 10),
                                          (5000, 167)])
def test_eval_every_resolves_from_the_epochs(epochs, every):
    assert resolve_eval_every(0, epochs) == every
    evaluations = len({e for e in range(1, epochs + 1) if e % every == 0 or e == epochs})
    if epochs <= 30:
        assert evaluations == epochs
    else:  # about 30, the last epoch included
        assert 20 <= evaluations <= 45


def test_an_explicit_eval_every_is_kept():
    assert resolve_eval_every(7, 300) == 7


def test_batch_norm_statistics_are_the_exact_whole_set_values():
    torch.manual_seed(0)
    x = torch.randn(1000, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4.0
    x[700:] += 2.0  # chunks with different statistics: an unweighted mean of chunk values would be off
    model = nn.Sequential(nn.BatchNorm2d(3))
    recompute_batch_norm(model, x.split(300))  # chunks of 300, 300, 300, 100
    norm = model[0]
    torch.testing.assert_close(norm.running_mean, x.mean(dim=(0, 2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(norm.running_var, x.var(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert int(norm.num_batches_tracked) == 4 and norm.momentum == 0.1 and model.training


def test_predict_is_fp32_even_inside_an_autocast_region(prepared):
    model = engine.build_model(TrainConfig(model="lenet5", epochs=1, batch_size=8, lr=0.1), prepared)
    images = prepared.test_set.images[:64]
    reference = engine.predict(model, prepared, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = engine.predict(model, prepared, images)
        bf16 = model(prepared.to_input(images)[0])
    assert bf16.dtype == torch.bfloat16 and inside.dtype == torch.float32
    assert torch.equal(inside, reference)
    assert not torch.equal(bf16.float(), reference)  # the region really was low precision


def test_fp32_exact_turns_tf32_off_and_restores_it():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with fp32_exact():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_casting_teacher_weights_once_changes_no_output():
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 3, 16).eval()
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        per_forward = model(x)
        cast_for_inference(model, torch.bfloat16)
        cast_once = model(x)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert all(m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(per_forward, cast_once)


def test_cpu_trains_in_fp32_and_the_fp16_scaler_path_steps_like_plain_sgd():
    assert Precision.for_device(torch.device("cpu")) == Precision("cpu")
    torch.manual_seed(0)
    a = nn.Linear(4, 3)
    b = nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (a, b))
    scaler = Precision("cpu", torch.float16).new_scaler()  # loss scaling by a power of two is exact
    for _ in range(3):
        x = torch.randn(16, 4)
        backward_step(a(x).square().mean(), opt_a, None)
        backward_step(b(x).square().mean(), opt_b, scaler)
    assert scaler.get_scale() > 1.0
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_tensor_lr_with_fused_sgd_matches_the_plain_optimizer():
    train = TrainConfig(model="lenet5", epochs=2, batch_size=8, lr=0.1, nesterov=True)
    torch.manual_seed(0)
    a, b = nn.Linear(6, 4), nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    plain, static = engine.make_optimizer(train, a), engine.make_optimizer(train, b, static=True)
    assert isinstance(static.param_groups[0]["lr"], torch.Tensor) and static.defaults["fused"]
    loops = [engine._Loop("student", 0, 1, train, m, opt, torch.Generator(), 3, lambda e: None,
                          lambda: False, None) for m, opt in ((a, plain), (b, static))]
    lr_tensor = static.param_groups[0]["lr"]
    for step in range(6):
        x = torch.randn(8, 6)
        for loop, model in zip(loops, (a, b)):
            loop.set_lr(1 + step // 3, step % 3)
            backward_step(model(x).square().mean(), loop.optimizer, None)
    assert static.param_groups[0]["lr"] is lr_tensor  # written in place, never replaced
    assert float(lr_tensor) == pytest.approx(plain.param_groups[0]["lr"])
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_a_checkpoint_from_another_device_fails_in_one_line(prepared, tmp_path):
    cfg = config(members=1, epochs=2)
    teachers = untrained_teachers(prepared, 1)
    path = tmp_path / "student.pt"
    with pytest.raises(engine.StopRequested):
        engine.distill(cfg, prepared, teachers, checkpoint=path,
                       should_stop=lambda: path.exists())
    state = torch.load(path, weights_only=True)
    assert state["device"] == "cpu"
    torch.save({**state, "device": "cuda"}, path)
    with pytest.raises(engine.RunFailed) as info:
        engine.distill(cfg, prepared, teachers, checkpoint=path)
    message = str(info.value)
    assert "\n" not in message and "written on cuda" in message and "device = 'cuda'" in message


def test_sync_batch_norm_on_cpu_is_refused_with_a_reason(prepared):
    model = engine.build_model(TrainConfig(model="resnet20", epochs=1, batch_size=8, lr=0.1), prepared)
    two_processes = replace(prepared, shards=Shards(0, 2))
    with pytest.raises(engine.RunFailed, match="sync_batch_norm needs CUDA"):
        engine.training_net(model, EngineConfig(sync_batch_norm=True), two_processes)
    assert engine.training_net(model, EngineConfig(sync_batch_norm=True), prepared) is model  # one process


@pytest.mark.slow
def test_a_compiled_student_step_matches_eager(prepared):
    """torch.compile (inductor, C++ on CPU) on a tiny model: same first-epoch loss as eager."""
    teachers = untrained_teachers(prepared, 1)
    small = replace(prepared, distill_set=prepared.distill_set.subset(torch.arange(256)))
    cfg = replace(config(members=1, epochs=1), engine=EngineConfig(compile="default"))
    compiled = engine.distill(cfg, small, teachers)
    eager = engine.distill(replace(cfg, engine=EngineConfig()), small, teachers)
    assert math.isclose(compiled["history"][1]["train_loss"], eager["history"][1]["train_loss"], abs_tol=1e-4)
    assert compiled["metrics"]["test_agreement"] == pytest.approx(eager["metrics"]["test_agreement"], abs=0.01)
