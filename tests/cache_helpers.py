"""Shared by the teacher-cache and engine-precision tests: a small digits run and untrained teachers."""
from contextlib import contextmanager

import pytest
import torch

from kernels import engine
from kernels.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from kernels.teacher_cache import CacheFile, MemberTable

AUGMENT = ("crop", "hflip")


def config(members=2, epochs=2, temperature=4.0, augment=AUGMENT, cache="auto", budget_mb=0) -> RunConfig:
    """`budget_mb` is distill.teacher_cache_mb (0: the machine's default). On these digits (1,437 examples
    x 162 views x 10 classes, fp32 on CPU) a table takes 9.1 MiB, so 20 MiB admits the ensemble tier of
    any member count but the members tier only for one member, and 5 MiB admits neither."""
    return RunConfig(
        data=DataConfig(dataset="digits", root="unused"),
        teacher=TrainConfig(model="lenet5", epochs=1, batch_size=64, lr=0.05),
        student=TrainConfig(model="lenet5", epochs=epochs, batch_size=64, lr=0.02, nesterov=True, augment=augment),
        distill=DistillConfig(augment=augment, temperature=temperature, teacher_cache=cache,
                              teacher_cache_mb=budget_mb),
        members=members, seed=0, device="cpu")


def untrained_teachers(prepared, members, cache_dirs=None):
    """Distinct members (the cache is exact for any weights; training them only costs time)."""
    out = []
    for k in range(members):
        torch.manual_seed(100 + k)
        state = engine.build_model(config().teacher, prepared).state_dict()
        out.append(engine.TeacherResult(state, state, {}, key=f"member-{k}",
                                        cache_dir=str(cache_dirs[k]) if cache_dirs else None))
    return out


@contextmanager
def counting_training_forwards():
    """Counts, per member index, the rows each teacher member computes in training steps (clean-set
    predictions for evaluation run under inference_mode and are not counted)."""
    computed: dict[int, int] = {}
    load = engine.load_teacher_ensemble

    def counting(cfg, prepared, states):
        ensemble = load(cfg, prepared, states)
        for k, member in enumerate(ensemble.members):
            computed.setdefault(k, 0)

            def hook(module, inputs, output, k=k):
                if not torch.is_inference_mode_enabled():
                    computed[k] += len(inputs[0])
            member.register_forward_hook(hook)
        return ensemble

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "load_teacher_ensemble", counting)
        yield computed


def fill_half_and_save(folder, key, rows, classes, half, rounds):
    """One of two concurrent fillers: half the rows, saved `rounds` times (run in its own process)."""
    table = MemberTable.empty(key, rows, classes, torch.float32, torch.device("cpu"))
    part = slice(0, rows // 2) if half == 0 else slice(rows // 2, rows)
    table.logits[part] = float(half + 1)
    table.filled[part] = True
    file = CacheFile(folder, key)
    for _ in range(rounds):
        with file.locked():
            file.merge_and_save(MemberTable(key, table.logits.clone(), table.filled.clone()))
