"""fp32 evaluation, the eval schedule, exact BN statistics, and the GPU-ready engine options on CPU."""
from dataclasses import replace

import pytest
import torch
from cache_helpers import config, untrained_teachers
from torch import nn

from kernels import engine, models
from kernels.config import EngineConfig, TrainConfig, resolve_eval_every
from kernels.distributed import Shards
from kernels.init import recompute_batch_norm
from kernels.optim import set_lr
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


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"),
                    reason="torch < 2.9 has no fp32_precision settings (the legacy flags' test follows)")
def test_fp32_exact_turns_tf32_off_through_fp32_precision_and_restores_it():
    """torch >= 2.9: only the fp32_precision settings are touched (reading or setting the legacy
    allow_tf32 flags after them raises, so one use of the old API would break the run)."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
    try:
        with fp32_exact():
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def test_fp32_exact_uses_only_fp32_precision_where_it_exists_on_any_torch(monkeypatch):
    """The same rule as above on every torch (the test above needs torch >= 2.9): settings that have
    only the new API, and no legacy flag to touch, are turned to "ieee" and restored."""
    from types import SimpleNamespace

    matmul = SimpleNamespace(fp32_precision="tf32")
    cudnn = SimpleNamespace(conv=SimpleNamespace(fp32_precision="tf32"))
    monkeypatch.setattr(torch.backends, "cuda", SimpleNamespace(matmul=matmul))
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    with fp32_exact():
        assert (matmul.fp32_precision, cudnn.conv.fp32_precision) == ("ieee", "ieee")
        assert not hasattr(matmul, "allow_tf32") and not hasattr(cudnn, "allow_tf32")  # never mixed
    assert (matmul.fp32_precision, cudnn.conv.fp32_precision) == ("tf32", "tf32")


def test_fp32_exact_uses_the_legacy_flags_where_fp32_precision_does_not_exist(monkeypatch):
    from types import SimpleNamespace

    matmul = SimpleNamespace(allow_tf32=True)
    cudnn = SimpleNamespace(allow_tf32=True, conv=SimpleNamespace())
    monkeypatch.setattr(torch.backends, "cuda", SimpleNamespace(matmul=matmul))
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    with fp32_exact():
        assert matmul.allow_tf32 is False and cudnn.allow_tf32 is False
        assert not hasattr(cudnn.conv, "fp32_precision")  # the two APIs are never mixed
    assert matmul.allow_tf32 is True and cudnn.allow_tf32 is True


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
    lr_tensor = static.param_groups[0]["lr"]
    for step in range(6):
        x = torch.randn(8, 6)
        for opt, model in ((plain, a), (static, b)):
            set_lr(opt, engine.learning_rate(train, step, 6))
            backward_step(model(x).square().mean(), opt, None)
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
