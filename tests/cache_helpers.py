"""Shared by the teacher-cache and engine-precision tests: a small digits run and untrained teachers."""
import torch

from kernels import engine
from kernels.config import DataConfig, DistillConfig, RunConfig, TrainConfig
from kernels.teacher_cache import CacheFile, MemberTable

AUGMENT = ("crop", "hflip")


def config(members=2, epochs=2, temperature=4.0, augment=AUGMENT, cache="auto") -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits", root="unused"),
        teacher=TrainConfig(model="lenet5", epochs=1, batch_size=64, lr=0.05),
        student=TrainConfig(model="lenet5", epochs=epochs, batch_size=64, lr=0.02, nesterov=True, augment=augment),
        distill=DistillConfig(augment=augment, temperature=temperature, teacher_cache=cache),
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
