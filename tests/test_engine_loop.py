"""The one training loop both phases share (kernels.engine.train_epoch), checked against independent
computations: batches, the last batch under CUDA graphs, the lr, and metrics that never lie."""
import math
from dataclasses import replace

import pytest
import torch
from cache_helpers import config, untrained_teachers

from kernels import engine
from kernels.config import EngineConfig, TrainConfig


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(config(), torch.device("cpu"))


def phase(prepared, n, batch, compile="off", **kw):
    train = TrainConfig(model="lenet5", epochs=2, batch_size=batch, lr=0.1)
    return engine.Phase(name="teacher", train=train, prepared=prepared, images=prepared.teacher_set.images[:n],
                        model=engine.build_model(train, prepared), engine=EngineConfig(compile=compile),
                        seed=11, **kw)


def row_loss(model):
    """A step whose loss is the mean row index of its batch (plus a zero that keeps the graph) and whose
    count is its even indices: the epoch's train_loss is then the mean index of the rows trained, and
    the count per row their share of even indices, both computable without the engine."""
    def step(idx, batch):
        zero = sum(p.sum() for p in model.parameters()) * 0.0
        return zero + idx.double().mean().float(), (idx % 2 == 0).sum()
    return step


def test_auto_on_a_cuda_machine_turns_cudnn_benchmark_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert engine.resolve_device("auto").type == "cuda"
    assert torch.backends.cudnn.benchmark is True


@pytest.mark.parametrize("compile, n, batch", [("off", 300, 64), ("reduce-overhead", 300, 64),
                                               ("reduce-overhead", 256, 64), ("reduce-overhead", 50, 64)])
def test_every_example_is_counted_once_and_reduce_overhead_keeps_one_batch_shape(prepared, compile, n, batch,
                                                                                monkeypatch):
    marks = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: net)  # the loop's logic, not inductor's
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    p = phase(prepared, n, batch, compile)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(11))  # the phase's first permutation
    seen = []
    real = row_loss(p.model)

    def step(idx, batch_):
        seen.append(idx)
        return real(idx, batch_)
    record, per_row = engine.train_epoch(p, 1, step)
    sizes = [len(idx) for idx in seen]
    dropping = compile == "reduce-overhead" and n >= batch
    kept = order[: n // batch * batch] if dropping else order
    assert torch.equal(torch.cat(seen), kept)  # each kept example once, in the permutation's order
    if dropping:
        assert set(sizes) == {batch}
    assert len(sizes) == p.steps_per_epoch
    assert record["train_loss"] == pytest.approx(kept.double().mean().item(), rel=1e-6)
    assert per_row == pytest.approx((kept % 2 == 0).double().mean().item(), rel=1e-6)
    assert len(marks) == (len(sizes) if compile == "reduce-overhead" else 0)


def test_an_epoch_without_a_batch_still_reports_its_lr(prepared):
    p = phase(prepared, 0, 64)
    record, _ = engine.train_epoch(p, 1, row_loss(p.model))
    assert record["lr"] == pytest.approx(engine.learning_rate(p.train, 0, p.train.epochs * p.steps_per_epoch))


def test_nan_student_outputs_fail_the_run_naming_phase_and_epoch(prepared):
    teachers = untrained_teachers(prepared, 1)
    broken = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
              for k, v in teachers[0].initial_state.items()}
    teachers = [replace(teachers[0], initial_state=broken)]
    cfg = replace(config(members=1, epochs=1), distill=replace(config().distill, init="teacher-init"))
    with pytest.raises(engine.RunFailed) as failed:
        engine.distill(cfg, prepared, teachers)
    assert failed.value.phase == "student" and failed.value.epoch == 0
    assert "student epoch 0" in str(failed.value) and "test_kl" in str(failed.value)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default", "max-autotune", "reduce-overhead"])
def test_a_compiled_epoch_matches_eager_on_a_tiny_model(prepared, mode):
    """torch.compile on the CPU (inductor's C++ backend; reduce-overhead's CUDA graphs are skipped on a
    CPU and its fixed batch shape is what is left): the same first epoch as eager, on 256 examples."""
    teachers = untrained_teachers(prepared, 1)
    small = replace(prepared, distill_set=prepared.distill_set.subset(torch.arange(256)))
    cfg = replace(config(members=1, epochs=1), engine=EngineConfig(compile=mode))
    compiled = engine.distill(cfg, small, teachers)
    eager = engine.distill(replace(cfg, engine=EngineConfig()), small, teachers)
    assert math.isclose(compiled["history"][1]["train_loss"], eager["history"][1]["train_loss"], abs_tol=1e-4)
    assert compiled["metrics"]["test_agreement"] == pytest.approx(eager["metrics"]["test_agreement"], abs=0.01)
