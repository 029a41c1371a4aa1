"""Train teachers and distil a student, on tensors that live on the run's device.

The loop follows the speed levers of ENGINEERING.md: uint8 data on the device, batches as slices of
a seeded permutation, batched augmentation, metrics summed on the device and read once per epoch.
Progress goes out as typed events (kernels.events); nothing here knows about files other than the
checkpoint paths it is given.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kernels import data as data_mod
from kernels import models
from kernels.augment import Augmented, Augmenter
from kernels.config import EngineConfig, RunConfig, TrainConfig, member_seed, resolve_eval_every, student_seed
from kernels.distributed import STOP_SYNC_STEPS, Shards
from kernels.ensemble import Ensemble
from kernels.events import Done, EpochMetrics, EventCallback, Log, PhaseEnd, PhaseStart, Progress, ignore
from kernels.init import has_batch_norm, interpolate_state, recompute_batch_norm
from kernels.losses import label_loss, total_loss
from kernels.metrics import FidelityAccumulator
from kernels.precision import Precision, backward_step, cast_for_inference, fp32_exact
from kernels.saving import save_atomic
from kernels.teacher_cache import CacheFile, MemberTable, TeacherCache, tensor_digest, weights_digest

EVAL_BATCH = 1024
PROGRESS_INTERVAL_S = 0.5


class RunFailed(Exception):
    """The run cannot go on (e.g. a non-finite loss); the message says where and what to try."""

    def __init__(self, message: str, phase: str = "", epoch: int = -1, step: int = -1):
        super().__init__(message)
        self.phase, self.epoch, self.step = phase, epoch, step


class StopRequested(Exception):
    """The caller asked the run to stop; the last epoch checkpoint is kept for a resume."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunFailed(f"device = {name!r} but CUDA is not available here; use device = 'cpu' or 'auto'")
    if device.type == "cuda":
        # Every batch but an epoch's last has one shape, so cuDNN's per-shape algorithm search pays off.
        torch.backends.cudnn.benchmark = True
    return device


@dataclass
class Prepared:
    """The run's data, loaded once and moved to its device."""
    dataset: data_mod.Dataset
    teacher_set: data_mod.ImageSet
    distill_set: data_mod.ImageSet
    test_set: data_mod.ImageSet
    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    shards: Shards = field(default_factory=Shards)  # this process's part of a data-parallel run
    precision: Precision | None = None  # None: the device's default (Precision.for_device)

    def __post_init__(self) -> None:
        self.precision = self.precision or Precision.for_device(self.device)

    @property
    def channels_last(self) -> bool:
        # Measured faster on every device tried (bench/engine.py --channels-last): on CUDA, and on CPU
        # too (1 thread, median of 3: LeNet-5 0.85x, ResNet-20 0.80x the time of contiguous tensors).
        return True

    def to_input(self, images_u8: torch.Tensor, augment: Augmenter | None = None,
                 generator: torch.Generator | None = None):
        """uint8 batch -> augmented, normalised float batch (and the mixing applied, if any)."""
        out = self.augment(images_u8, augment, generator)
        return out.images, out.mix

    def augment(self, images_u8: torch.Tensor, augment: Augmenter | None,
                generator: torch.Generator | None) -> Augmented:
        """`to_input` that also returns each row's view index (when the augmentation has finite views)."""
        x = images_u8.float().div_(255.0)
        out = augment.augment(x, generator) if augment is not None else Augmented(x, None, None)
        out.images = self._normalise(out.images)
        return out

    def render(self, images_u8: torch.Tensor, augment: Augmenter, views: torch.Tensor) -> torch.Tensor:
        """The normalised input of the given views: what `augment` yields when it draws those views."""
        return self._normalise(augment.render(images_u8.float().div_(255.0), views))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def prepare(cfg: RunConfig, device: torch.device, shards: Shards | None = None) -> Prepared:
    dataset, teacher_set, distill_set = data_mod.build_splits(cfg.data)
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    return Prepared(dataset, teacher_set.to(device), distill_set.to(device), dataset.test.to(device),
                    device, mean, std, shards or Shards())


def build_model(train: TrainConfig, prepared: Prepared) -> nn.Module:
    ds = prepared.dataset
    model = models.create(train.model, ds.num_classes, ds.in_channels, ds.image_size, norm=train.norm)
    model = model.to(prepared.device)
    if prepared.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(train: TrainConfig, model: nn.Module, static: bool = False) -> torch.optim.Optimizer:
    """`static`: for compiled steps, a tensor lr (a new value is written into it, so a compiled or
    graph-captured step never sees a changed Python constant) and SGD's fused kernel."""
    if train.optimizer == "sgd":
        lr = torch.tensor(train.lr, device=model_device(model)) if static else train.lr
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=train.momentum,
                               nesterov=train.nesterov and train.momentum > 0, weight_decay=train.weight_decay,
                               fused=static or None)
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    raise ValueError(f"unknown optimizer {train.optimizer!r}; allowed: sgd, adam")


def learning_rate(train: TrainConfig, step: int, total_steps: int) -> float:
    """Per-step cosine from lr to final_lr, or constant."""
    if train.schedule == "constant":
        return train.lr
    progress = min(step / max(total_steps, 1), 1.0)
    return train.final_lr + (train.lr - train.final_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    return torch.randperm(n, generator=generator, device=device).split(batch_size)


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


@torch.inference_mode()
def predict(model: nn.Module, prepared: Prepared, images: torch.Tensor) -> torch.Tensor:
    """Logits of a clean (unaugmented) set in eval mode, computed in fp32 (no autocast, no TF32) on
    every device: the fidelity metrics are argmaxes and KLs of these, and a bf16 near-tie would flip."""
    was_training = model.training
    model.eval()
    with fp32_exact():
        out = [model(prepared.to_input(chunk)[0]).float() for chunk in images.split(EVAL_BATCH)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, prepared.dataset.num_classes, device=prepared.device)


def _forward(model: nn.Module, prepared: Prepared, x: torch.Tensor) -> torch.Tensor:
    """A training-step forward, in the run's training precision."""
    with prepared.precision.autocast():
        return model(x)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


@dataclass
class _Loop:
    """What one training phase shares between its epochs (model, optimiser, RNG, events)."""
    phase: str
    index: int
    total: int
    train: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    steps_per_epoch: int
    on_event: EventCallback
    should_stop: Callable[[], bool]
    checkpoint: Path | None
    shards: Shards = field(default_factory=Shards)
    seed: int = 0
    _last_progress: float = field(default=0.0)

    def augment_generator(self, epoch: int) -> torch.Generator:
        """One process: the loop's own generator (permutation and augmentation share it). Under
        data parallelism the permutation must match on every process and the draws must not."""
        if self.shards.world == 1:
            return self.generator
        return self.shards.augment_generator(self.seed, epoch, self.generator.device)

    def batches(self, n: int, device: torch.device):
        """This process's rows of each global batch (a batch smaller than the process count is skipped)."""
        for idx in _batches(n, self.train.batch_size, self.generator, device):
            if len(idx) >= self.shards.world:
                yield self.shards.rows(idx)

    def set_lr(self, epoch: int, step: int) -> float:
        lr = learning_rate(self.train, (epoch - 1) * self.steps_per_epoch + step,
                           self.train.epochs * self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # in place: the tensor a compiled step reads
            else:
                group["lr"] = lr
        return lr

    def tick(self, epoch: int, step: int) -> None:
        """Between steps: honour a stop request and emit throttled progress (no device sync)."""
        if self.shards.world == 1:
            stop = self.should_stop()
        elif step % STOP_SYNC_STEPS == 0 or step == self.steps_per_epoch:
            stop = self.shards.any(self.should_stop(), self.generator.device)
        else:
            stop = False
        if stop:
            raise StopRequested(f"stopped during {self.phase} epoch {epoch}")
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or step == self.steps_per_epoch:
            self._last_progress = now
            self.on_event(Progress(self.phase, self.index, epoch, step, self.steps_per_epoch))

    def check_finite(self, first_bad_step: torch.Tensor, epoch: int) -> None:
        bad = int(self.shards.first_bad_step(first_bad_step))
        if bad >= 0:
            raise RunFailed(f"non-finite loss in {self.phase} epoch {epoch}, step {bad}; "
                            f"try a lower lr or another loss", self.phase, epoch, bad)

    def save(self, epoch: int, history: list[dict], extra: dict | None = None) -> None:
        if self.checkpoint is None or not self.shards.main:
            return
        save_atomic({"epoch": epoch, "model": self.model.state_dict(),
                      "optimizer": self.optimizer.state_dict(), "device": self.generator.device.type,
                      "generator": self.generator.get_state(), "history": history, **(extra or {})},
                     self.checkpoint)

    def restore(self, device: torch.device) -> tuple[int, list[dict], dict]:
        """Load the phase checkpoint if there is one; returns (last finished epoch, history, state)."""
        state = load_checkpoint(self.checkpoint, device) if self.checkpoint else None
        if state is None:
            return 0, [], {}
        saved_on = state.get("device", device.type)
        if saved_on != device.type:
            # CPU and CUDA generators are different algorithms (Mersenne Twister vs Philox): one's
            # state cannot continue the other's stream, and a resume must draw what the run would have.
            raise RunFailed(f"{self.checkpoint} was written on {saved_on} and cannot resume on {device.type}: "
                            f"their random streams differ; resume with device = '{saved_on}', or delete it "
                            f"to start this phase over", self.phase)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())  # RNG states are CPU byte tensors on every device
        return int(state["epoch"]), list(state["history"]), state


def _new_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@dataclass
class TeacherResult:
    initial_state: dict
    final_state: dict
    metrics: dict[str, float]
    key: str = ""                 # the teacher store's key, when it came from a store
    cache_dir: str | None = None  # where its output cache is kept (beside it in the store); None: memory only


def training_net(model: nn.Module, engine_cfg: EngineConfig, prepared: Prepared) -> nn.Module:
    """What the training step calls: the model under DDP (optionally with SyncBatchNorm) and torch.compile."""
    if engine_cfg.sync_batch_norm and prepared.shards.world > 1 and prepared.device.type != "cuda":
        raise RunFailed("engine.sync_batch_norm needs CUDA (torch's SyncBatchNorm has no CPU kernel); "
                        "set it to false for CPU runs")
    net = prepared.shards.wrap(model, engine_cfg.sync_batch_norm)
    if engine_cfg.compile != "off":
        net = torch.compile(net, mode=None if engine_cfg.compile == "default" else engine_cfg.compile)
    return net


def train_teacher(cfg: RunConfig, member: int, prepared: Prepared, *, checkpoint: Path | None = None,
                  on_event: EventCallback = ignore, should_stop: Callable[[], bool] = lambda: False) -> TeacherResult:
    """Train teacher member k with cross-entropy; seeds differ only by member."""
    seed = member_seed(cfg.seed, member)
    torch.manual_seed(seed)
    model = build_model(cfg.teacher, prepared)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train = cfg.teacher
    loop = _Loop("teacher", member, cfg.members, train, model,
                 make_optimizer(train, model, static=cfg.engine.compile != "off"),
                 _new_generator(seed, prepared.device), _steps_per_epoch(len(prepared.teacher_set), train.batch_size),
                 on_event, should_stop, checkpoint, prepared.shards, seed)
    net = training_net(model, cfg.engine, prepared)
    scaler = prepared.precision.new_scaler()
    eval_every = resolve_eval_every(cfg.eval_every, train.epochs)
    start, history, saved = loop.restore(prepared.device)
    if saved:
        initial_state = saved["initial_state"]
    augment = Augmenter(train.augment, mixup_alpha=cfg.distill.mixup_alpha)
    on_event(PhaseStart("teacher", member, cfg.members, train.epochs, loop.steps_per_epoch))
    images, labels = prepared.teacher_set.images, prepared.teacher_set.labels
    for epoch in range(start + 1, train.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=prepared.device)
        first_bad = torch.full((), -1, device=prepared.device, dtype=torch.long)
        draws = loop.augment_generator(epoch)
        for step, idx in enumerate(loop.batches(len(images), prepared.device), 1):
            lr = loop.set_lr(epoch, step - 1)
            x, mix = prepared.to_input(images[idx], augment, draws)
            logits = _forward(net, prepared, x)
            loss = label_loss(logits, labels[idx], mix)
            backward_step(loss, loop.optimizer, scaler)
            loss = loss.detach()
            loss_sum += loss * len(idx)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loop.tick(epoch, step)
        loop.check_finite(first_bad, epoch)
        metrics = {"train_loss": float(prepared.shards.sum_(loss_sum)) / len(images), "lr": lr}
        if epoch % eval_every == 0 or epoch == train.epochs:
            acc = FidelityAccumulator(prepared.device)
            acc.add(predict(model, prepared, _rows(prepared, prepared.test_set.images)),
                    labels=_rows(prepared, prepared.test_set.labels))
            result = _result(acc, prepared)
            metrics.update(test_acc=result["acc"], test_nll=result["nll"])
        history.append({"epoch": epoch, **metrics})
        on_event(EpochMetrics("teacher", member, epoch, metrics))
        loop.save(epoch, history, {"initial_state": initial_state})
    final_metrics = history[-1] if history else {}
    on_event(PhaseEnd("teacher", member, cfg.members, final_metrics))
    return TeacherResult(initial_state, {k: v.detach().clone() for k, v in model.state_dict().items()}, final_metrics)


def load_teacher_ensemble(cfg: RunConfig, prepared: Prepared, states: list[dict]) -> Ensemble:
    members = []
    for state in states:
        model = build_model(cfg.teacher, prepared)
        model.load_state_dict(state)
        model.eval()
        members.append(model)
    ensemble = Ensemble(members).eval()
    ensemble.requires_grad_(False)
    return ensemble


def default_cache_budget(device: torch.device) -> int:
    """Bytes the teacher cache may take when the spec sets no budget: half of the free GPU memory, or a
    quarter of the machine's memory on CPU (the data, models and the OS need the rest)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


@dataclass(frozen=True)
class CachePlan:
    """How the run's teacher is served: `tier` "members" or "ensemble" (kernels.teacher_cache), or None
    for the online teacher; `fill` the fill strategy; `reason` one line for the run's events and record."""
    tier: str | None
    fill: str | None
    reason: str


def plan_teacher_cache(cfg: RunConfig, augment: Augmenter, n_examples: int, classes: int,
                       storage: torch.dtype, persistent: bool, budget: int) -> CachePlan:
    """Per-member tables when they fit the budget (one cache for every τ and every ensemble that shares
    a member), else the ensemble's table when that fits (m times smaller), else the online teacher."""
    spec = cfg.distill
    if spec.teacher_cache == "off":
        return _online("teacher cache off (distill.teacher_cache = 'off'): the teacher runs online")
    if not augment.finite_views:
        online = ", ".join(n for n in augment.names if n not in ("crop", "hflip", "vflip"))
        return _online(f"teacher online: {online} draws continuous or cross-example randomness (no finite views)")
    if any(str(item).split(":")[0].strip() == "noise" for item in cfg.data.extra):
        return _online("teacher online: the distillation set has noise:p extra data")
    views = augment.num_views
    rows = n_examples * views
    ensemble_need = (classes * 4 + 1) * rows  # fp32 outputs and a filled flag per (example, view)
    # Each member's table, plus the ensemble's (fp32) that the cache derives for its steps.
    members_need = cfg.members * (classes * storage.itemsize + 1) * rows + ensemble_need
    mb = 2 ** 20
    if ensemble_need > budget:
        return _online(f"teacher online: its cache would take {members_need / mb:.1f} MB per member, or "
                       f"{ensemble_need / mb:.1f} MB for the ensemble alone, over the budget of "
                       f"{budget / mb:.0f} MB (distill.teacher_cache_mb)")
    if cfg.student.epochs <= 1 and not persistent:
        return _online("teacher online: one epoch draws each example once and nothing is kept for later "
                       "runs, so a cache would never be hit")
    fill = choose_fill(cfg.student.epochs, views)
    shape = f"{n_examples} examples x {views} views ({augment.geometry})"
    kept = ", kept beside the teacher for later runs" if persistent else ", memory only"
    if members_need <= budget:
        return CachePlan("members", fill, f"teacher cache on, members tier ({fill} fill): {cfg.members} member(s) "
                                          f"x {shape}, {storage}, {members_need / mb:.1f} MB of {budget / mb:.0f} MB{kept}")
    return CachePlan("ensemble", fill, (
        f"teacher cache on, ensemble tier ({fill} fill): the {cfg.members}-member ensemble's output x {shape}, "
        f"float32, {ensemble_need / mb:.1f} MB of {budget / mb:.0f} MB; the members tier would take "
        f"{members_need / mb:.1f} MB, over the budget (distill.teacher_cache_mb); it serves every τ of "
        f"these members{kept}"))


def _online(reason: str) -> CachePlan:
    return CachePlan(None, None, reason)


def choose_fill(epochs: int, views: int) -> str:
    """A full pass when the run alone is expected to draw each (example, view) at least once: it then
    computes little that goes unused, in large batches, and the steps never wait for a fill. Otherwise
    only the missing rows of each batch (bench/engine.py `--fill` prints the two side by side)."""
    return "full" if epochs >= views else "lazy"


def open_teacher_cache(cfg: RunConfig, prepared: Prepared, teacher: Ensemble, teachers: list[TeacherResult],
                       augment: Augmenter, on_event: EventCallback,
                       fill: str | None = None) -> tuple[TeacherCache | None, CachePlan]:
    """The run's teacher cache, or None (online teacher), and the plan that chose it; says which in a Log
    event. `fill` forces a fill strategy (benchmarks); None lets `plan_teacher_cache` decide."""
    n, classes = len(prepared.distill_set), prepared.dataset.num_classes
    storage = prepared.precision.dtype
    persistent = all(t.cache_dir for t in teachers)
    budget = cfg.distill.teacher_cache_mb * 2 ** 20 or default_cache_budget(prepared.device)
    plan = plan_teacher_cache(cfg, augment, n, classes, storage, persistent, budget)
    if plan.tier is not None and fill is not None:
        plan = replace(plan, fill=fill)
    on_event(Log(plan.reason))
    if plan.tier is None:
        return None, plan
    views = augment.num_views
    data = tensor_digest((prepared.distill_set.images, prepared.mean, prepared.std), augment.geometry)
    keys = [f"{t.key or 'unstored'}|weights={weights_digest(t.final_state)}|data={data}|"
            f"views={augment.geometry}|{n}x{views}x{classes}|{prepared.device.type}|{storage}" for t in teachers]
    if plan.tier == "members":
        tables = [MemberTable.empty(key, n * views, classes, storage, prepared.device) for key in keys]
        files = [CacheFile(Path(t.cache_dir), key) if t.cache_dir else None for t, key in zip(teachers, keys)]
    else:
        # The ordered member set: another ensemble, or these members in another order (the log-mean-exp
        # sums in member order), never reads this table. τ is not in the key: the table holds the
        # ensemble's output before τ (see kernels.teacher_cache), so every τ may read it.
        key = "ensemble[" + " ; ".join(keys) + "]|float32"
        tables = [MemberTable.empty(key, n * views, classes, torch.float32, prepared.device)]
        files = [CacheFile(Path(teachers[0].cache_dir), key, "ensemble") if persistent else None]
    images = prepared.distill_set.images
    cache = TeacherCache(list(teacher.members), tables, files, views, plan.fill,
                         render=lambda examples, v: prepared.render(images[examples], augment, v),
                         forward=lambda model, x: _forward(model, prepared, x), tier=plan.tier)
    cache.load()
    notes = sorted(set(cache.load_notes) - {"loaded", "no cache file yet"})
    if notes:
        on_event(Log(f"teacher cache: {'; '.join(notes)}"))
    return cache, plan


def init_student(cfg: RunConfig, prepared: Prepared, teachers: list[TeacherResult]) -> nn.Module:
    torch.manual_seed(student_seed(cfg.seed))
    student = build_model(cfg.student, prepared)
    how = cfg.distill.init
    if how == "teacher-init":
        student.load_state_dict(teachers[0].initial_state)
    elif how == "interpolate":
        student.load_state_dict(interpolate_state(teachers[0].final_state, student.state_dict(), cfg.distill.init_lambda))
        if has_batch_norm(student):
            clean = prepared.distill_set.images.split(EVAL_BATCH)
            recompute_batch_norm(student, (prepared.to_input(chunk)[0] for chunk in clean))
    elif how != "random":
        raise ValueError(f"unknown init {how!r}; allowed: random, teacher-init, interpolate")
    return student


def distill(cfg: RunConfig, prepared: Prepared, teachers: list[TeacherResult], *, checkpoint: Path | None = None,
            on_event: EventCallback = ignore, should_stop: Callable[[], bool] = lambda: False,
            phase: str = "student", cache_fill: str | None = None) -> dict:
    """Distil one student from the teachers' ensemble.

    Returns {"metrics": final values, "history": per-epoch records, "student": the trained model,
    "teacher_cache": the cache's summary for the record (tier, mode, hit rate, entries, bytes, and the
    plan's reason)}. `phase` names the events (the E12 control distils a second, independent student);
    `cache_fill` forces the cache's fill strategy (benchmarks).
    """
    teacher = load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    student = init_student(cfg, prepared, teachers)
    train, spec = cfg.student, cfg.distill
    distill_set = prepared.distill_set
    loop = _Loop(phase, 0, 1, train, student, make_optimizer(train, student, static=cfg.engine.compile != "off"),
                 _new_generator(student_seed(cfg.seed), prepared.device),
                 _steps_per_epoch(len(distill_set), train.batch_size), on_event, should_stop, checkpoint,
                 prepared.shards, student_seed(cfg.seed))
    net = training_net(student, cfg.engine, prepared)
    scaler = prepared.precision.new_scaler()
    eval_every = resolve_eval_every(cfg.eval_every, train.epochs)
    start, history, _ = loop.restore(prepared.device)
    augment = Augmenter(spec.augment, mixup_alpha=spec.mixup_alpha)

    # The teacher is fixed: its outputs on the clean sets are computed once, not every evaluation.
    # Under data parallelism each process evaluates its rows of the clean sets (see _rows).
    test_images, test_labels = _rows(prepared, prepared.test_set.images), _rows(prepared, prepared.test_set.labels)
    clean_images = _rows(prepared, distill_set.images)
    teacher_test = predict(teacher, prepared, test_images)
    teacher_distill = predict(teacher, prepared, clean_images)
    constants = _teacher_constants(teacher, prepared, teacher_test, test_labels)
    # From here on the teacher only feeds training steps: its weights go to the compute dtype once.
    for member in teacher.members:
        cast_for_inference(member, prepared.precision.dtype)

    def evaluate(epoch: int, online: dict) -> dict:
        test = FidelityAccumulator(prepared.device)
        test.add(predict(student, prepared, test_images), teacher_test, test_labels)
        clean = FidelityAccumulator(prepared.device)
        clean.add(predict(student, prepared, clean_images), teacher_distill)
        t, c = _result(test, prepared), _result(clean, prepared)
        return {"epoch": epoch, **online, "train_agreement_eval": c["agreement"],
                "test_agreement": t["agreement"], "test_kl": t["kl"], "test_acc": t["acc"],
                "test_nll": t["nll"], "test_ece": t["ece"], "test_examples": int(t["n"]), **constants}

    on_event(PhaseStart(phase, 0, 1, train.epochs, loop.steps_per_epoch))
    cache, plan = open_teacher_cache(cfg, prepared, teacher, teachers, augment, on_event, cache_fill)
    if start == 0:
        history = [evaluate(0, {"lr": learning_rate(train, 0, 1)})]
        on_event(EpochMetrics(phase, 0, 0, _without_epoch(history[-1])))
    try:
        history = _distill_epochs(cfg, prepared, loop, net, student, teacher, cache, augment, scaler, start, history,
                                  eval_every, evaluate)
    except StopRequested:
        if cache is not None:
            cache.save()  # teacher outputs stay valid whatever happens to the student: keep them
        raise
    summary = {"mode": "off", "tier": "online", "hit_rate": 0.0, "entries": 0, "bytes": 0, "computed": 0}
    if cache is not None:
        cache.save()
        summary = cache.summary()
        unit = "member" if cache.tier == "members" else "ensemble"
        on_event(Log(f"teacher cache: hit rate {summary['hit_rate']:.1%}, {summary['computed']} {unit} outputs "
                     f"computed, {summary['entries']} held, {summary['bytes'] / 2 ** 20:.1f} MB"))
    summary["reason"] = plan.reason
    final = final_metrics(history)
    on_event(PhaseEnd(phase, 0, 1, final))
    return {"metrics": final, "history": history, "student": student, "teacher_cache": summary}


def _distill_epochs(cfg: RunConfig, prepared: Prepared, loop: _Loop, net: nn.Module, student: nn.Module,
                    teacher: Ensemble, cache: TeacherCache | None, augment: Augmenter,
                    scaler: torch.amp.GradScaler | None, start: int,
                    history: list[dict], eval_every: int, evaluate: Callable[[int, dict], dict]) -> list[dict]:
    """The student's training epochs after `start`; returns the history with their records appended."""
    train, spec, phase = cfg.student, cfg.distill, loop.phase
    images, labels = prepared.distill_set.images, prepared.distill_set.labels
    for epoch in range(start + 1, train.epochs + 1):
        student.train()
        sums = torch.zeros(2, device=prepared.device)  # [Σ loss·batch, Σ agreeing rows]
        first_bad = torch.full((), -1, device=prepared.device, dtype=torch.long)
        draws = loop.augment_generator(epoch)
        for step, idx in enumerate(loop.batches(len(images), prepared.device), 1):
            lr = loop.set_lr(epoch, step - 1)
            batch = prepared.augment(images[idx], augment, draws)
            x, mix = batch.images, batch.mix
            with torch.no_grad():  # not inference_mode: its tensors may not enter the autograd graph
                if cache is not None:
                    teacher_logits = cache.lookup(idx, batch.views, x)
                else:
                    teacher_logits = _forward(teacher, prepared, x).float()
            student_logits = _forward(net, prepared, x)
            loss = total_loss(student_logits, teacher_logits, labels[idx], spec.loss, spec.temperature, spec.alpha, mix)
            backward_step(loss, loop.optimizer, scaler)
            loss = loss.detach()
            sums[0] += loss * len(idx)
            sums[1] += (student_logits.detach().argmax(-1) == teacher_logits.argmax(-1)).sum()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loop.tick(epoch, step)
        loop.check_finite(first_bad, epoch)
        loss_total, agreeing = prepared.shards.sum_(sums).tolist()
        online = {"train_loss": loss_total / len(images), "train_agreement": agreeing / len(images), "lr": lr}
        if epoch % eval_every == 0 or epoch == train.epochs:
            record = evaluate(epoch, online)
        else:
            record = {"epoch": epoch, **online}
        history.append(record)
        loop.on_event(EpochMetrics(phase, 0, epoch, _without_epoch(record)))
        loop.save(epoch, history)
    return history


def fidelity_on_test_set(cfg: RunConfig, prepared: Prepared, model: nn.Module, teachers: list[TeacherResult]) -> dict:
    """Agreement and KL of any model with the teachers' ensemble on the test set."""
    teacher = load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    images = _rows(prepared, prepared.test_set.images)
    result = FidelityAccumulator(prepared.device)
    result.add(predict(model, prepared, images), predict(teacher, prepared, images))
    return _result(result, prepared)


def _rows(prepared: Prepared, tensor: torch.Tensor) -> torch.Tensor:
    """This process's rows of a whole clean set (all of them, in a single-process run)."""
    return prepared.shards.rows(tensor)


def _result(acc: FidelityAccumulator, prepared: Prepared) -> dict:
    """The accumulator's metrics over every process's rows: each example counted once."""
    prepared.shards.sum_(acc.sums)
    prepared.shards.sum_(acc.bins)
    return acc.result()


def _teacher_constants(teacher: Ensemble, prepared: Prepared, teacher_test: torch.Tensor,
                       test_labels: torch.Tensor) -> dict:
    test = FidelityAccumulator(prepared.device)
    test.add(teacher_test, labels=test_labels)
    train = FidelityAccumulator(prepared.device)
    train.add(predict(teacher, prepared, _rows(prepared, prepared.teacher_set.images)),
              labels=_rows(prepared, prepared.teacher_set.labels))
    return {"teacher_test_acc": _result(test, prepared)["acc"], "teacher_train_acc": _result(train, prepared)["acc"]}


def _without_epoch(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "epoch"}


def final_metrics(history: list[dict]) -> dict:
    """The last value of every metric over the history (the last evaluated epoch for test metrics)."""
    final: dict = {}
    for record in history:
        final.update(record)
    return final


def run(cfg: RunConfig, workdir: Path | None = None, on_event: EventCallback = ignore,
        should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Teachers then student, checkpointing under `workdir` (resumes from what is there)."""
    device = resolve_device(cfg.device)
    prepared = prepare(cfg, device)
    ckpt = (lambda name: Path(workdir) / name) if workdir else (lambda name: None)
    teachers = [train_teacher(cfg, k, prepared, checkpoint=ckpt(f"teacher-{k}.pt"), on_event=on_event,
                              should_stop=should_stop) for k in range(cfg.members)]
    result = distill(cfg, prepared, teachers, checkpoint=ckpt("student.pt"), on_event=on_event, should_stop=should_stop)
    on_event(Done(result["metrics"]))
    return result
