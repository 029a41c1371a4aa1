"""Plain settings the engine runs from.

These are the *resolved* values (every default already applied). The user-facing spec, with its
defaults and validation, is `kdtui.core.spec`; it converts to these classes field by field.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# How many runs the queue places on one device; their teacher caches split its memory budget.
SLOTS_PER_DEVICE_ENV = "KDTUI_SLOTS_PER_DEVICE"


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    root: str
    download: bool = False
    image_size: int = 0            # 0: the data set's own size (digits are served at 28)
    teacher_subset: int = 0        # 0: all training data; N: N stratified examples
    split: float = 0.0             # 0: none; 0.5: split train into D0/D1
    teacher_split: int = 0
    student_splits: tuple[int, ...] = (0,)
    extra: tuple[str, ...] = ()
    extra_only: bool = False       # the student distils on the extra data alone
    subset_seed: int = 0           # added to the data seed for the teacher subset (per-seed subsets)


@dataclass(frozen=True)
class TrainConfig:
    """How one network (a teacher member or the student) is built and optimised."""
    model: str
    epochs: int
    batch_size: int
    lr: float
    norm: str = "batch"
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    final_lr: float = 0.0          # the cosine schedule's end value
    augment: tuple[str, ...] = ()


@dataclass(frozen=True)
class DistillConfig:
    loss: str = "kl"
    temperature: float = 4.0
    alpha: float = 0.0
    augment: tuple[str, ...] = ()
    mixup_alpha: float = 1.0
    init: str = "random"           # random | teacher-init | interpolate
    init_lambda: float = 0.0
    teacher_cache: str = "auto"    # auto | off (kernels.teacher_cache)
    teacher_cache_mb: int = 0      # memory budget of the cache; 0: a share of the device's memory
    synthetic_temperature: float = 0.0  # τ of synthetic-pool rows (kernels.synthetic); 0: `temperature`


@dataclass(frozen=True)
class EngineConfig:
    compile: str = "off"           # off | default | max-autotune | reduce-overhead (torch.compile modes)
    sync_batch_norm: bool = False  # data-parallel runs: batch statistics over every process's rows


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    teacher: TrainConfig
    student: TrainConfig
    distill: DistillConfig = field(default_factory=DistillConfig)
    members: int = 1
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 0            # 0: from each phase's epochs (resolve_eval_every)
    engine: EngineConfig = field(default_factory=EngineConfig)


TARGET_EVALUATIONS = 30


def resolve_eval_every(every: int, epochs: int) -> int:
    """Evaluate every `every` epochs; 0 means: every epoch up to 30 epochs, beyond that about 30
    evaluations (every 10 at 300 epochs). The last epoch is always evaluated too."""
    if every > 0:
        return every
    return max(1, round(epochs / TARGET_EVALUATIONS))


def member_seed(run_seed: int, member: int) -> int:
    """The seed of teacher member k: independent members, stable across runs that share a seed."""
    return run_seed * 1000 + member


def student_seed(run_seed: int) -> int:
    """The student's seed, kept apart from every teacher member's."""
    return run_seed * 1000 + 999
