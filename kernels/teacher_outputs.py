"""What the distillation step asks of its teacher: `outputs(examples, views, x)`, the ensemble's output
on batch `x` (row i is view views[i] of example examples[i]).

Two implementations: `OnlineTeacher` runs the members on `x`; `kernels.teacher_cache.TeacherCache`
looks the outputs up and computes only what is missing. `open_teacher_outputs` plans which one a run
gets (the memory budget, the augmentation, the spec) and keys the cache, so the step has no cache branch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kernels.augment import Augmenter
from kernels.catalog import is_synthetic
from kernels.config import SLOTS_PER_DEVICE_ENV, RunConfig
from kernels.events import EventCallback, Log
from kernels.teacher_cache import CacheFile, CacheUnavailable, MemberTable, TeacherCache, tensor_digest, weights_digest

# The share of a device's memory all of its runs' teacher caches may take when the spec sets no budget;
# split evenly between the runs the queue places on the device (KDTUI_SLOTS_PER_DEVICE).
DEVICE_SHARE_CUDA, DEVICE_SHARE_CPU = 1 / 2, 1 / 4
SLOTS_ENV = SLOTS_PER_DEVICE_ENV


class OnlineTeacher:
    """The members run on every batch; nothing is kept."""
    tier = "online"

    def __init__(self, ensemble: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        self.ensemble, self.forward = ensemble, forward
        self.notes: list[str] = []

    def save(self) -> None:
        """Nothing to keep."""

    def summary(self) -> dict:
        return {"mode": "off", "tier": "online", "hit_rate": 0.0, "entries": 0, "bytes": 0, "computed": 0}

    @torch.no_grad()  # not inference_mode: its tensors may not enter the autograd graph
    def outputs(self, examples: torch.Tensor, views: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return self.forward(self.ensemble, x).float()


@dataclass(frozen=True)
class CachePlan:
    """How the run's teacher is served: `tier` "members" or "ensemble" (kernels.teacher_cache), or None
    for the online teacher; `fill` the fill strategy; `reason` one line for the run's events and record."""
    tier: str | None
    fill: str | None
    reason: str


def slots_per_device() -> int:
    """How many runs share this run's device (the queue worker says so in the environment; else 1)."""
    try:
        return max(1, int(os.environ.get(SLOTS_ENV, "1")))
    except ValueError:
        return 1


def default_cache_budget(device: torch.device, slots: int | None = None) -> int:
    """Bytes this run's teacher cache may take when the spec sets no budget: its slot's part of a fixed
    share of the device's total memory. Total, not free: runs that plan at the same moment would each
    see the same free memory and together overrun it."""
    slots = slots or slots_per_device()
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * DEVICE_SHARE_CUDA) // slots
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * DEVICE_SHARE_CPU) // slots


def device_signature(device: torch.device) -> str:
    """What a cached output's bits depend on besides the weights and inputs: the device kind, and on CUDA
    the card's model and the CUDA and cuDNN versions (their kernels round differently)."""
    if device.type != "cuda":
        return device.type
    return (f"cuda:{torch.cuda.get_device_name(device)}|cuda {torch.version.cuda}"
            f"|cudnn {torch.backends.cudnn.version()}")


def plan_teacher_cache(cfg: RunConfig, augment: Augmenter, n_examples: int, classes: int,
                       storage: torch.dtype, persistent: bool, budget: int) -> CachePlan:
    """Per-member tables when they fit the budget (one cache for every τ and every ensemble that shares
    a member), else the ensemble's table when that fits (m times smaller), else the online teacher."""
    spec = cfg.distill
    if spec.teacher_cache == "off":
        return _online("teacher cache off (distill.teacher_cache = 'off'): the teacher runs online")
    if any(is_synthetic(item) for item in cfg.data.extra):
        return _online("teacher online: synthetic rows are drawn afresh into every minibatch (a "
                       "'synthetic:' extra item), not a finite set of views")
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
        return CachePlan("members", fill, (
            f"teacher cache on, members tier ({fill} fill): {cfg.members} member(s) x {shape}, {storage}, "
            f"{members_need / mb:.1f} MB of {budget / mb:.0f} MB{kept}"))
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
    only the batches that miss."""
    return "full" if epochs >= views else "lazy"


def member_keys(teachers: list, prepared, augment: Augmenter) -> list[str]:
    """Each member's cache key: what its outputs on the distillation views depend on."""
    n, classes = len(prepared.distill_set), prepared.dataset.num_classes
    data = tensor_digest((prepared.distill_set.images, prepared.mean, prepared.std), augment.geometry)
    where = device_signature(prepared.device)
    return [f"{t.key or 'unstored'}|weights={weights_digest(t.final_state)}|data={data}|views={augment.geometry}|"
            f"{n}x{augment.num_views}x{classes}|{where}|{prepared.precision.dtype}" for t in teachers]


def _cache_file(folder: str | None, key: str, tier: str, notes: list[str]) -> CacheFile | None:
    if not folder:
        return None
    try:
        return CacheFile(Path(folder), key, tier)
    except (OSError, CacheUnavailable) as e:  # no secret: the table lives in memory only
        notes.append(f"{e}; kept in memory, not saved")
        return None


def open_teacher_outputs(cfg: RunConfig, prepared, ensemble: nn.Module, teachers: list, augment: Augmenter,
                         on_event: EventCallback, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                         fill: str | None = None) -> tuple[OnlineTeacher | TeacherCache, CachePlan]:
    """The run's teacher outputs, online or cached, and the plan that chose them (said in a Log event).
    `fill` forces a fill strategy (benchmarks); None lets `plan_teacher_cache` decide."""
    n, classes = len(prepared.distill_set), prepared.dataset.num_classes
    storage = prepared.precision.dtype
    persistent = all(t.cache_dir for t in teachers)
    budget = cfg.distill.teacher_cache_mb * 2 ** 20 or default_cache_budget(prepared.device)
    plan = plan_teacher_cache(cfg, augment, n, classes, storage, persistent, budget)
    if plan.tier is not None and fill is not None:
        plan = replace(plan, fill=fill)
    on_event(Log(plan.reason))
    if plan.tier is None:
        return OnlineTeacher(ensemble, forward), plan
    keys, notes = member_keys(teachers, prepared, augment), []
    views, device = augment.num_views, prepared.device
    if plan.tier == "members":
        tables = [MemberTable.empty(key, n * views, classes, storage, device) for key in keys]
        files = [_cache_file(t.cache_dir, key, "members", notes) for t, key in zip(teachers, keys)]
    else:
        # The ordered member set: another ensemble, or these members in another order (the log-mean-exp
        # sums in member order), never reads this table. τ is not in the key: the table holds the
        # ensemble's output before τ (see kernels.teacher_cache), so every τ may read it.
        # /2: tables stored before the ensemble's output became row-exact (kernels.ensemble) are not read.
        key = "ensemble/2[" + " ; ".join(keys) + "]|float32"
        tables = [MemberTable.empty(key, n * views, classes, torch.float32, device)]
        files = [_cache_file(teachers[0].cache_dir, key, "ensemble", notes) if persistent else None]
    images = prepared.distill_set.images
    cache = TeacherCache(list(ensemble.members), tables, files, views, plan.fill,
                         render=lambda examples, v: prepared.render(images[examples], augment, v),
                         forward=forward, tier=plan.tier)
    cache.notes.extend(notes)
    cache.load()
    report_notes(cache, on_event)
    return cache, plan


def report_notes(teacher: OnlineTeacher | TeacherCache, on_event: EventCallback) -> None:
    """One Log line for the cache notes not yet said (a file rebuilt, not loaded, not saved)."""
    said = sorted(set(teacher.notes) - {"loaded", "no cache file yet"})
    teacher.notes.clear()
    if said:
        on_event(Log(f"teacher cache: {'; '.join(said)}"))


def finish(teacher: OnlineTeacher | TeacherCache, on_event: EventCallback) -> dict:
    """Save what a cache computed (never failing the run) and return the record's summary of it."""
    teacher.save()
    report_notes(teacher, on_event)
    summary = teacher.summary()
    if teacher.tier == "online":
        return summary
    unit = "member" if teacher.tier == "members" else "ensemble"
    on_event(Log(f"teacher cache: hit rate {summary['hit_rate']:.1%}, {summary['computed']} {unit} outputs "
                 f"computed, {summary['entries']} held, {summary['bytes'] / 2 ** 20:.1f} MB"))
    return summary
