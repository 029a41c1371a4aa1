"""Train teachers and distil a student, on tensors that live on the run's device.

Read `train_epoch` first: one loop serves both phases, and each phase only says what its step
computes (`train_teacher`: cross-entropy on the labels; `distill`: the distillation loss against the
teacher's outputs). docs/engine.md walks through one step. Progress goes out as typed events
(kernels.events); nothing here knows about files other than the checkpoint paths it is given.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kernels.augment import Augmented, Augmenter
from kernels.checkpoints import WrongDevice, restore_phase, save_phase
from kernels.config import EngineConfig, RunConfig, TrainConfig, member_seed, resolve_eval_every, student_seed
from kernels.distributed import STOP_SYNC_STEPS, Shards
from kernels.evaluation import fidelity_on_test_set  # noqa: F401  (kdtui's E12 control calls it from here)
from kernels.evaluation import result_over_processes as _result, teacher_constants
from kernels.events import Done, EpochMetrics, EventCallback, PhaseEnd, PhaseStart, Progress, ignore
from kernels.init import has_batch_norm, interpolate_state, recompute_batch_norm
from kernels.losses import label_loss, total_loss
from kernels.metrics import FidelityAccumulator
from kernels.optim import learning_rate, make_optimizer, set_lr
from kernels.precision import backward_step, cast_for_inference
from kernels.prepared import EVAL_BATCH, Prepared, build_model, load_teacher_ensemble, predict, prepare, train_forward
from kernels.synthetic import with_synthetic
from kernels.teacher_outputs import finish, open_teacher_outputs

PROGRESS_INTERVAL_S = 0.5
Step = Callable[[torch.Tensor, Augmented], "tuple[torch.Tensor, torch.Tensor | None]"]


class RunFailed(Exception):
    """The run cannot go on (e.g. a non-finite loss); the message says where and what to try."""

    def __init__(self, message: str, phase: str = "", epoch: int = -1, step: int = -1):
        super().__init__(message)
        self.phase, self.epoch, self.step = phase, epoch, step


class StopRequested(Exception):
    """The caller asked the run to stop; the last epoch checkpoint is kept for a resume."""


def resolve_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunFailed(f"device = {name!r} but CUDA is not available here; use device = 'cpu' or 'auto'")
    if device.type == "cuda":
        # Every training batch has one shape, so cuDNN's per-shape algorithm search pays off.
        torch.backends.cudnn.benchmark = True
    return device


def training_net(model: nn.Module, engine_cfg: EngineConfig, prepared: Prepared) -> nn.Module:
    """What the training step calls: the model under DDP (optionally with SyncBatchNorm) and torch.compile."""
    if engine_cfg.sync_batch_norm and prepared.shards.world > 1 and prepared.device.type != "cuda":
        raise RunFailed("engine.sync_batch_norm needs CUDA (torch's SyncBatchNorm has no CPU kernel); "
                        "set it to false for CPU runs")
    net = prepared.shards.wrap(model, engine_cfg.sync_batch_norm)
    if engine_cfg.compile != "off":
        net = torch.compile(net, mode=None if engine_cfg.compile == "default" else engine_cfg.compile)
    return net


@dataclass(kw_only=True)
class Phase:
    """What one training phase's epochs share: its data, model, optimiser, random stream and events."""
    name: str                      # "teacher", "student" (or another student's name)
    train: TrainConfig
    prepared: Prepared
    images: torch.Tensor           # the phase's uint8 training set, on the device
    model: nn.Module               # the weights (checkpointed)
    engine: EngineConfig = field(default_factory=EngineConfig)
    augment: Augmenter | None = None
    seed: int = 0
    index: int = 0                 # member k of `total`
    total: int = 1
    checkpoint: Path | None = None
    on_event: EventCallback = ignore
    should_stop: Callable[[], bool] = lambda: False
    _last_progress: float = 0.0

    def __post_init__(self) -> None:
        self.net = training_net(self.model, self.engine, self.prepared)
        self.optimizer = make_optimizer(self.train, self.model, static=self.engine.compile != "off")
        self.scaler = self.prepared.precision.new_scaler()
        self.generator = torch.Generator(device=self.prepared.device).manual_seed(self.seed)
        # CUDA graphs capture one shape: reduce-overhead drops each epoch's last, smaller batch (its rows
        # are trained in other epochs, as the order changes; evaluation still covers every example).
        n, batch = len(self.images), self.train.batch_size
        self.drop_last = self.engine.compile == "reduce-overhead" and n >= batch
        self.steps_per_epoch = n // batch if self.drop_last else math.ceil(n / batch)

    @property
    def shards(self) -> Shards:
        return self.prepared.shards

    def batches(self):
        """This process's rows of each global batch: slices of a seeded permutation (a batch smaller than
        the process count, or a last batch a compiled step would recompile for, is skipped)."""
        order = torch.randperm(len(self.images), generator=self.generator, device=self.prepared.device)
        for idx in order.split(self.train.batch_size):
            if len(idx) >= self.shards.world and not (self.drop_last and len(idx) < self.train.batch_size):
                yield self.shards.rows(idx)

    def augment_generator(self, epoch: int) -> torch.Generator:
        """One process: the phase's own generator (permutation and augmentation share it). Under data
        parallelism the permutation must match on every process and the draws must not."""
        if self.shards.world == 1:
            return self.generator
        return self.shards.augment_generator(self.seed, epoch, self.generator.device)

    def set_lr(self, epoch: int, step: int) -> float:
        total = self.train.epochs * self.steps_per_epoch
        lr = learning_rate(self.train, (epoch - 1) * self.steps_per_epoch + step, total)
        set_lr(self.optimizer, lr)
        return lr

    def begin_step(self) -> None:
        if self.engine.compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten

    def tick(self, epoch: int, step: int) -> None:
        """Between steps: honour a stop request and emit throttled progress (no device sync)."""
        if self.shards.world == 1:
            stop = self.should_stop()
        else:
            due = step % STOP_SYNC_STEPS == 0 or step == self.steps_per_epoch
            stop = due and self.shards.any(self.should_stop(), self.prepared.device)
        if stop:
            raise StopRequested(f"stopped during {self.name} epoch {epoch}")
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or step == self.steps_per_epoch:
            self._last_progress = now
            self.on_event(Progress(self.name, self.index, epoch, step, self.steps_per_epoch))

    def fail_if_not_finite(self, first_bad_step: torch.Tensor, epoch: int) -> None:
        bad = int(self.shards.first_bad_step(first_bad_step))
        if bad >= 0:
            raise RunFailed(f"non-finite loss in {self.name} epoch {epoch}, step {bad}; "
                            f"try a lower lr or another loss", self.name, epoch, bad)

    def restore(self) -> tuple[int, list[dict], dict]:
        try:
            return restore_phase(self.checkpoint, self.model, self.optimizer, self.generator)
        except WrongDevice as e:
            raise RunFailed(str(e), self.name) from None

    def end_epoch(self, epoch: int, record: dict, history: list[dict], extra: dict | None = None) -> None:
        """Check the epoch's metrics, keep its record, say so, and checkpoint (main process only)."""
        bad = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:
            raise RunFailed(f"non-finite metrics in {self.name} epoch {epoch} ({', '.join(bad)}): the model's "
                            f"outputs are NaN or infinite; try a lower lr", self.name, epoch)
        history.append(record)
        self.on_event(EpochMetrics(self.name, self.index, epoch, {k: v for k, v in record.items() if k != "epoch"}))
        if epoch > 0 and self.checkpoint is not None and self.shards.main:  # epoch 0 trained nothing
            save_phase(self.checkpoint, epoch, self.model, self.optimizer, self.generator, history, extra)


def train_epoch(phase: Phase, epoch: int, step: Step) -> tuple[dict, float]:
    """One pass over the phase's set. Per batch: the lr, the augmented input, `step`'s loss (and a count
    to sum, such as agreeing rows), the optimiser step. Sums stay on the device and are read once, at
    the end. Returns ({"train_loss", "lr"}, the count per trained row)."""
    device = phase.prepared.device
    phase.model.train()
    sums = torch.zeros(3, device=device)  # [Σ loss·rows, Σ count, rows]
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    draws = phase.augment_generator(epoch)
    lr, rows = phase.set_lr(epoch, 0), 0
    for k, idx in enumerate(phase.batches(), 1):
        lr = phase.set_lr(epoch, k - 1)
        batch = phase.prepared.augment(phase.images[idx], phase.augment, draws)
        phase.begin_step()
        loss, count = step(idx, batch)
        backward_step(loss, phase.optimizer, phase.scaler)
        loss, trained = loss.detach(), len(batch.images)  # the real rows and any synthetic ones
        sums[0] += loss * trained
        if count is not None:
            sums[1] += count
        rows += trained
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), k, first_bad)
        phase.tick(epoch, k)
    phase.fail_if_not_finite(first_bad, epoch)
    sums[2] = rows
    loss_sum, count_sum, rows_all = phase.shards.sum_(sums).tolist()
    return {"train_loss": loss_sum / max(rows_all, 1), "lr": lr}, count_sum / max(rows_all, 1)


@dataclass
class TeacherResult:
    initial_state: dict
    final_state: dict
    metrics: dict[str, float]
    key: str = ""                 # the teacher store's key, when it came from a store
    cache_dir: str | None = None  # where its output cache is kept (beside it in the store); None: memory only


def train_teacher(cfg: RunConfig, member: int, prepared: Prepared, *, checkpoint: Path | None = None,
                  on_event: EventCallback = ignore, should_stop: Callable[[], bool] = lambda: False) -> TeacherResult:
    """Train teacher member k with cross-entropy; seeds differ only by member."""
    seed, train = member_seed(cfg.seed, member), cfg.teacher
    torch.manual_seed(seed)
    model = build_model(train, prepared)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    phase = Phase(name="teacher", train=train, prepared=prepared, images=prepared.teacher_set.images, model=model,
                  engine=cfg.engine, augment=Augmenter(train.augment, mixup_alpha=cfg.distill.mixup_alpha),
                  seed=seed, index=member, total=cfg.members, checkpoint=checkpoint, on_event=on_event,
                  should_stop=should_stop)
    start, history, saved = phase.restore()
    initial_state = saved.get("initial_state", initial_state)
    labels, eval_every = prepared.teacher_set.labels, resolve_eval_every(cfg.eval_every, train.epochs)
    test_images, test_labels = prepared.rows(prepared.test_set.images), prepared.rows(prepared.test_set.labels)

    def step(idx: torch.Tensor, batch: Augmented):
        return label_loss(train_forward(phase.net, prepared, batch.images), labels[idx], batch.mix), None

    on_event(PhaseStart("teacher", member, cfg.members, train.epochs, phase.steps_per_epoch))
    for epoch in range(start + 1, train.epochs + 1):
        record, _ = train_epoch(phase, epoch, step)
        if epoch % eval_every == 0 or epoch == train.epochs:
            acc = FidelityAccumulator(prepared.device)
            acc.add(predict(model, prepared, test_images), labels=test_labels)
            result = _result(acc, prepared)
            record.update(test_acc=result["acc"], test_nll=result["nll"])
        phase.end_epoch(epoch, {"epoch": epoch, **record}, history, {"initial_state": initial_state})
    final = history[-1] if history else {}
    on_event(PhaseEnd("teacher", member, cfg.members, final))
    return TeacherResult(initial_state, {k: v.detach().clone() for k, v in model.state_dict().items()}, final)


def init_student(cfg: RunConfig, prepared: Prepared, teachers: list[TeacherResult]) -> nn.Module:
    torch.manual_seed(student_seed(cfg.seed))
    student = build_model(cfg.student, prepared)
    how = cfg.distill.init
    if how == "teacher-init":
        student.load_state_dict(teachers[0].initial_state)
    elif how == "interpolate":
        lam = cfg.distill.init_lambda
        student.load_state_dict(interpolate_state(teachers[0].final_state, student.state_dict(), lam))
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
    train, spec, name = cfg.student, cfg.distill, phase
    augment = with_synthetic(Augmenter(spec.augment, mixup_alpha=spec.mixup_alpha), prepared.synthetic)
    phase = Phase(name=name, train=train, prepared=prepared, images=prepared.distill_set.images, model=student,
                  engine=cfg.engine, augment=augment, seed=student_seed(cfg.seed), checkpoint=checkpoint,
                  on_event=on_event, should_stop=should_stop)
    start, history, _ = phase.restore()
    labels, eval_every = prepared.distill_set.labels, resolve_eval_every(cfg.eval_every, train.epochs)

    # The teacher is fixed: its outputs on the clean sets are computed once, not every evaluation.
    # Under data parallelism each process evaluates its rows of the clean sets.
    test_images, test_labels = prepared.rows(prepared.test_set.images), prepared.rows(prepared.test_set.labels)
    clean_images = prepared.rows(prepared.distill_set.images)
    teacher_test, teacher_distill = predict(teacher, prepared, test_images), predict(teacher, prepared, clean_images)
    constants = teacher_constants(teacher, prepared, teacher_test, test_labels)
    for member in teacher.members:  # from here on the teacher only feeds training steps
        cast_for_inference(member, prepared.precision.dtype)

    def evaluate(epoch: int, online: dict) -> dict:
        test, clean = FidelityAccumulator(prepared.device), FidelityAccumulator(prepared.device)
        test.add(predict(student, prepared, test_images), teacher_test, test_labels)
        clean.add(predict(student, prepared, clean_images), teacher_distill)
        t, c = _result(test, prepared), _result(clean, prepared)
        return {"epoch": epoch, **online, "train_agreement_eval": c["agreement"],
                "test_agreement": t["agreement"], "test_kl": t["kl"], "test_acc": t["acc"],
                "test_nll": t["nll"], "test_ece": t["ece"], "test_examples": int(t["n"]), **constants}

    on_event(PhaseStart(name, 0, 1, train.epochs, phase.steps_per_epoch))
    outputs, plan = open_teacher_outputs(cfg, prepared, teacher, teachers, augment, on_event,
                                         lambda model, x: train_forward(model, prepared, x), cache_fill)

    def step(idx: torch.Tensor, batch: Augmented):
        teacher_logits = outputs.outputs(idx, batch.views, batch.images)
        student_logits = train_forward(phase.net, prepared, batch.images)
        loss = total_loss(student_logits, teacher_logits, labels[idx], spec.loss, spec.temperature, spec.alpha,
                          batch.mix, batch.synthetic, spec.synthetic_temperature)
        return loss, (student_logits.detach().argmax(-1) == teacher_logits.argmax(-1)).sum()

    if start == 0:
        phase.end_epoch(0, evaluate(0, {"lr": learning_rate(train, 0, 1)}), history)
    try:
        for epoch in range(start + 1, train.epochs + 1):
            online, agreement = train_epoch(phase, epoch, step)
            online["train_agreement"] = agreement
            due = epoch % eval_every == 0 or epoch == train.epochs
            phase.end_epoch(epoch, evaluate(epoch, online) if due else {"epoch": epoch, **online}, history)
    finally:  # teacher outputs stay valid whatever happens to the student: keep them
        summary = finish(outputs, on_event)
    summary["reason"] = plan.reason
    final = final_metrics(history)
    on_event(PhaseEnd(name, 0, 1, final))
    return {"metrics": final, "history": history, "student": student, "teacher_cache": summary}


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
