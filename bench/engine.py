"""Throughput of one distillation epoch: kdtui's engine vs a plain PyTorch loop vs the floor.

    python bench/engine.py [--device cpu|cuda] [--repeats 3] [--quick]

Two cases, each with the same models, data size, batch (128), optimiser (SGD, Nesterov momentum 0.9,
weight decay 1e-4) and loss (`kernels.losses.distillation_loss`, KL at temperature 4):

  lenet5    LeNet-5 -> LeNet-5, 60,000 x 1x28x28 random uint8 images, 10 classes, crop
  resnet20  ResNet-20 -> ResNet-20, 4,096 x 3x32x32 random uint8 images, 100 classes, crop + hflip

and three ways of running one student epoch over the distillation set:

  engine  `kernels.engine.distill` on a `Prepared` built by hand from the random tensors (no files).
          How the epoch is timed: the student runs with epochs = 2 and eval_every = 10**9, so epoch 1
          is not evaluated. `distill` emits EpochMetrics(epoch 0) right after its initial evaluation
          and EpochMetrics(epoch 1) right after epoch 1's training (its one sync, `sums.tolist()`, is
          inside), so the time between those two events is exactly one training epoch of the engine's
          loop: batching, augmentation, `to_input`, teacher and student, loss, optimiser step, lr
          schedule, on-device metrics, progress ticks. After the epoch-1 event `should_stop` turns true
          and the engine stops after one step of epoch 2 (StopRequested), so the final evaluation is
          never run. Epoch-0 evaluation is outside the timed interval.
  plain   the paper's kind of loop: a torch.utils.data.Dataset making one PIL image per sample, run
          through torchvision transforms (RandomCrop(size, padding=4)[, RandomHorizontalFlip],
          ToTensor, Normalize), a DataLoader(batch, shuffle=True, num_workers=0), teacher forward
          under no_grad, student forward/backward, SGD step, `.item()` per step for loss and agreement.
  floor   the same teacher forward and student forward/backward/step on batches already made
          (normalised float tensors in memory, built before the clock starts); no data handling, no
          metrics, no schedule.

How the variants are interleaved (`--interleave`):
  step (CPU default)   in each repeat the engine runs one epoch, and inside its between-steps hook
          (`should_stop`, called once after every step) one floor step and one plain step run; the
          hook's time is subtracted from the engine's epoch, and the floor and plain times are the
          sums of their steps. All three thus see the same machine load, step by step, which is what
          makes the ratios usable on a shared machine.
  epoch (CUDA default) whole epochs one after another, the order rotating per repeat (per-step
          syncs inside the hook would take away the engine's CPU/GPU overlap on CUDA).
The `ensemble` case (`--cases ensemble`) distils from 5-member teachers, LeNet-5 (10,000 images, crop)
and ResNet-20 (1,024 images, crop + hflip), and times in each repeat two engine epochs: `warm`, the
teacher cache (kernels.teacher_cache) already holding every view the epoch draws (an untimed epoch with
the same seed filled it, as an earlier sweep point would have), and `off` (distill.teacher_cache =
"off": five teacher forwards per step). Inside the `off` epoch's hook, one `plain` step (the gnosis-style
loop with the 5-member ensemble) and one `student` step run; inside the `warm` epoch's, one `student`
step. `student` is the student-only floor: student forward, loss against teacher outputs computed
beforehand, backward and step on ready batches, no teacher. Targets: warm / student floor <= 1.15;
off / warm >= 2.

An untimed warm-up runs first. The table shows medians, images/s, engine/plain (the speed-up,
higher is better; targets: >= 2x for LeNet-5, >= 1x for ResNet-20) and engine time / floor time
(target <= 1.2). Each ratio is the median of the per-repeat ratios, which moves less with the
machine's load than a ratio of medians. The engine and the floors use channels_last tensors, as the
engine always does (measured on CPU, 1 thread, median of 3: LeNet-5 0.85x, ResNet-20 0.80x the time
of contiguous tensors; faster on CUDA too).

The machine may be shared: compare ratios from one run, not absolute numbers across runs. With 2
cores and other processes busy, 2 OpenMP threads can run 3-5x slower than 1 (threads wait for a
preempted sibling at every op), so on a shared machine prefer `--threads 1` for the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from kernels import engine  # noqa: E402
from kernels.config import DataConfig, DistillConfig, RunConfig, TrainConfig  # noqa: E402
from kernels.data import Dataset, ImageSet  # noqa: E402
from kernels.events import EpochMetrics  # noqa: E402
from kernels.losses import distillation_loss  # noqa: E402

BATCH = 128
LR = 0.05
TEMPERATURE = 4.0
PADDING = 4  # Augmenter's crop_padding default, RandomCrop's padding


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    n: int            # distillation (training) images per epoch
    n_test: int       # only the engine's epoch-0 evaluation sees these (outside the timed epoch)
    channels: int
    size: int
    classes: int
    augment: tuple[str, ...]


CASES = (
    Case("lenet5", "lenet5", 60_000, 1_024, 1, 28, 10, ("crop",)),
    Case("resnet20", "resnet20", 4_096, 1_024, 3, 32, 100, ("crop", "hflip")),
)


ENSEMBLE_MEMBERS = 5
ENSEMBLE_CASES = (
    Case("ensemble-lenet5", "lenet5", 10_000, 1_024, 1, 28, 10, ("crop",)),
    Case("ensemble-resnet20", "resnet20", 1_024, 1_024, 3, 32, 100, ("crop", "hflip")),
)


def quick(case: Case) -> Case:
    return replace(case, n=min(case.n, 2_048 if case.model == "lenet5" else 512), n_test=256)


# ------------------------------------------------------------------------------------------ setup


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(case: Case, seed: int = 0) -> tuple[Dataset, ImageSet]:
    g = torch.Generator().manual_seed(seed)
    shape = (case.channels, case.size, case.size)
    train = ImageSet(torch.randint(0, 256, (case.n, *shape), generator=g, dtype=torch.uint8),
                     torch.randint(0, case.classes, (case.n,), generator=g))
    test = ImageSet(torch.randint(0, 256, (case.n_test, *shape), generator=g, dtype=torch.uint8),
                    torch.randint(0, case.classes, (case.n_test,), generator=g))
    x = train.images.double().div(255.0)
    mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in x.std(dim=(0, 2, 3)))
    return Dataset(f"random-{case.name}", train, test, case.classes, mean, std), train


def make_config(case: Case, device: torch.device) -> RunConfig:
    train = TrainConfig(model=case.model, epochs=2, batch_size=BATCH, lr=LR, momentum=0.9, nesterov=True,
                        weight_decay=1e-4, schedule="cosine")
    return RunConfig(data=DataConfig(dataset="none", root=""), teacher=replace(train, epochs=1), student=train,
                     distill=DistillConfig(loss="kl", temperature=TEMPERATURE, alpha=0.0, augment=case.augment),
                     members=1, seed=0, device=device.type, eval_every=10**9)


def make_prepared(dataset: Dataset, device: torch.device) -> engine.Prepared:
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    train = dataset.train.to(device)
    test = dataset.test.to(device)
    # The teacher set only feeds the epoch-0 "teacher_train_acc" constant: keep it small.
    return engine.Prepared(dataset, test, train, test, device, mean, std)


def make_teacher_state(case: Case, cfg: RunConfig, prepared: engine.Prepared) -> engine.TeacherResult:
    torch.manual_seed(123)
    model = engine.build_model(cfg.teacher, prepared)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return engine.TeacherResult(state, state, {})


def new_models(case: Case, dataset: Dataset, teacher_state: dict, device: torch.device,
               channels_last: bool = False) -> tuple[nn.Module, nn.Module]:
    from kernels import models

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    teacher = models.create(case.model, case.classes, case.channels, case.size).to(device, memory_format=fmt)
    teacher.load_state_dict(teacher_state)
    teacher.eval().requires_grad_(False)
    torch.manual_seed(999)
    student = models.create(case.model, case.classes, case.channels, case.size).to(device, memory_format=fmt)
    student.train()
    return teacher, student


def make_optimizer(student: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=1e-4)


# --------------------------------------------------------------------------------------- variants


def run_engine(cfg: RunConfig, prepared: engine.Prepared, teachers: list,
               companions: tuple = ()) -> tuple[float, list[float]]:
    """Seconds of one engine training epoch (EpochMetrics 0 -> 1; see the module docstring).

    Each companion (a runner of another variant) makes one step inside the engine's between-steps
    hook (`should_stop`); the hook's time is taken out of the engine's. Returns (engine seconds,
    seconds of each companion's steps).
    """
    marks: dict[int, float] = {}
    spent = [0.0] * len(companions)
    hook = [0.0]

    def on_event(event) -> None:
        if isinstance(event, EpochMetrics) and event.phase == "student":
            marks[event.epoch] = time.perf_counter()

    def should_stop() -> bool:
        if 1 in marks:
            return True
        if companions:
            sync(prepared.device)  # the engine's queued work is the engine's time
            entered = time.perf_counter()
            for i, runner in enumerate(companions):
                spent[i] += runner.step()
            hook[0] += time.perf_counter() - entered
        return False

    try:
        engine.distill(cfg, prepared, teachers, on_event=on_event, should_stop=should_stop)
    except engine.StopRequested:
        pass
    return marks[1] - marks[0] - hook[0], spent


class PILImages(torch.utils.data.Dataset):
    """One PIL image per sample, as torchvision's MNIST/CIFAR classes hand them out."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        arr = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.arr[i])
        return self.transform(img), self.labels[i]


def make_plain_loader(case: Case, dataset: Dataset, train: ImageSet) -> torch.utils.data.DataLoader:
    ops = [T.RandomCrop(case.size, padding=PADDING)]
    if "hflip" in case.augment:
        ops.append(T.RandomHorizontalFlip())
    ops += [T.ToTensor(), T.Normalize(dataset.mean, dataset.std)]
    ds = PILImages(train.images, train.labels, T.Compose(ops))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0)


class PlainRunner:
    """The paper's kind of loop: DataLoader over PIL images, `.item()` per step."""

    def __init__(self, case: Case, dataset: Dataset, loader, teacher_state: dict, device: torch.device):
        self.teacher, self.student = new_models(case, dataset, teacher_state, device)
        self.optimizer = make_optimizer(self.student)
        self.loader, self.device = loader, device
        self.batches = iter(loader)  # created outside the clock: the loop's per-epoch iterator
        self.loss_sum, self.agree = 0.0, 0

    def _step(self) -> None:
        try:
            x, _ = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            x, _ = next(self.batches)
        x = x.to(self.device)
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = self.student(x)
        loss = distillation_loss(s_logits, t_logits, "kl", TEMPERATURE)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.item() * len(x)
        self.agree += (s_logits.argmax(1) == t_logits.argmax(1)).sum().item()

    def step(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        self._step()
        sync(self.device)
        return time.perf_counter() - start

    def epoch(self) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(len(self.loader)):
            self._step()
        sync(self.device)
        return time.perf_counter() - start


def make_floor_batches(prepared: engine.Prepared, train: ImageSet) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(len(train), generator=g).to(prepared.device)
    images = prepared.distill_set.images
    with torch.no_grad():
        return [prepared.to_input(images[idx])[0].clone() for idx in perm.split(BATCH)]


class FloorRunner:
    """Teacher forward + student forward/backward/step on batches already made; nothing else."""

    def __init__(self, case: Case, dataset: Dataset, prepared: engine.Prepared, batches: list[torch.Tensor],
                 teacher_state: dict):
        self.teacher, self.student = new_models(case, dataset, teacher_state, prepared.device, channels_last=True)
        self.optimizer = make_optimizer(self.student)
        self.prepared, self.batches, self.i = prepared, batches, 0

    def _step(self) -> None:
        x = self.batches[self.i % len(self.batches)]
        self.i += 1
        with torch.no_grad():
            t_logits = engine.train_forward(self.teacher, self.prepared, x).float()
        s_logits = engine.train_forward(self.student, self.prepared, x)
        loss = distillation_loss(s_logits, t_logits, "kl", TEMPERATURE)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def step(self) -> float:
        sync(self.prepared.device)
        start = time.perf_counter()
        self._step()
        sync(self.prepared.device)
        return time.perf_counter() - start

    def epoch(self, steps: int | None = None) -> float:
        sync(self.prepared.device)
        start = time.perf_counter()
        for _ in range(len(self.batches) if steps is None else steps):
            self._step()
        sync(self.prepared.device)
        return time.perf_counter() - start


# --------------------------------------------------------------------------------------- ensemble


def make_ensemble_teachers(case: Case, cfg: RunConfig, prepared: engine.Prepared, cache_dir: Path | None) -> list:
    teachers = []
    for k in range(ENSEMBLE_MEMBERS):
        torch.manual_seed(123 + k)
        state = {n: v.detach().clone() for n, v in engine.build_model(cfg.teacher, prepared).state_dict().items()}
        teachers.append(engine.TeacherResult(state, state, {}, key=f"bench-{case.name}-{k}",
                                             cache_dir=str(cache_dir / str(k)) if cache_dir else None))
    return teachers


class EnsemblePlainRunner(PlainRunner):
    """The gnosis-style loop with a 5-member ensemble teacher (log of the mean of member probabilities)."""

    def __init__(self, case: Case, dataset: Dataset, loader, teachers: list, device: torch.device):
        super().__init__(case, dataset, loader, teachers[0].final_state, device)
        from kernels.ensemble import Ensemble
        members = [new_models(case, dataset, t.final_state, device)[0] for t in teachers]
        self.teacher = Ensemble(members).eval()


class StudentFloorRunner:
    """Student forward, loss against ready teacher outputs, backward, step; no teacher, no data handling."""

    def __init__(self, case: Case, dataset: Dataset, prepared: engine.Prepared, batches: list[torch.Tensor],
                 teacher_logits: list[torch.Tensor]):
        _, self.student = new_models(case, dataset, make_teacher_state(case, make_config(case, prepared.device),
                                                                          prepared).final_state,
                                     prepared.device, channels_last=True)
        self.optimizer = make_optimizer(self.student)
        self.prepared, self.batches, self.logits, self.i = prepared, batches, teacher_logits, 0

    def step(self) -> float:
        sync(self.prepared.device)
        start = time.perf_counter()
        j = self.i % len(self.batches)
        self.i += 1
        s_logits = engine.train_forward(self.student, self.prepared, self.batches[j])
        loss = distillation_loss(s_logits, self.logits[j], "kl", TEMPERATURE)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        sync(self.prepared.device)
        return time.perf_counter() - start


def bench_ensemble_case(case: Case, device: torch.device, repeats: int, cache_root: Path) -> dict:
    dataset, train = make_data(case)
    cfg = replace(make_config(case, device), members=ENSEMBLE_MEMBERS)
    off_cfg = replace(cfg, distill=replace(cfg.distill, teacher_cache="off"))
    prepared = make_prepared(dataset, device)
    teachers = make_ensemble_teachers(case, cfg, prepared, cache_root / case.name)
    loader = make_plain_loader(case, dataset, train)
    batches = make_floor_batches(prepared, train)
    ensemble = engine.load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    with torch.no_grad():
        logits = [engine.train_forward(ensemble, prepared, x).float() for x in batches]
    # Untimed: fill the cache with the views the timed epochs draw (same seed, same draws).
    run_engine(cfg, prepared, teachers)
    times: dict[str, list[float]] = {}

    def record(r: int, name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)
        print(f"  {case.name} repeat {r + 1}/{repeats} {name:14s} {seconds:7.2f} s  "
              f"({case.n / seconds:8.0f} img/s)", flush=True)

    for r in range(repeats):
        floor = StudentFloorRunner(case, dataset, prepared, batches, logits)
        plain = EnsemblePlainRunner(case, dataset, loader, teachers, device)
        seconds, (floor_s, plain_s) = run_engine(off_cfg, prepared, teachers, (floor, plain))
        record(r, "off", seconds)
        record(r, "student@off", floor_s)
        record(r, "plain", plain_s)
        floor = StudentFloorRunner(case, dataset, prepared, batches, logits)
        seconds, (floor_s,) = run_engine(cfg, prepared, teachers, (floor,))
        record(r, "warm", seconds)
        record(r, "student@warm", floor_s)
    medians = {k: statistics.median(v) for k, v in times.items()}
    paired = {"warm/student": _median_ratio(times["warm"], times["student@warm"]),
              "off/student": _median_ratio(times["off"], times["student@off"]),
              "off/warm": statistics.median((o / fo) / (w / fw) for o, fo, w, fw in
                                            zip(times["off"], times["student@off"], times["warm"],
                                                times["student@warm"])),
              "plain/warm": statistics.median((p / fo) / (w / fw) for p, fo, w, fw in
                                              zip(times["plain"], times["student@off"], times["warm"],
                                                  times["student@warm"]))}
    return {"median": medians, "paired": paired}


def print_ensemble(results: dict) -> None:
    print()
    print("ensemble (5 members): median seconds per epoch; warm/student and off/student = engine time / the")
    print("student-only floor stepped inside the same epoch; off/warm and plain/warm compare epochs through")
    print("their floors (each epoch's time over its own floor), so load changes between epochs cancel")
    print(f"{'case':18s} {'images':>7s} {'warm':>7s} {'off':>7s} {'plain':>7s} {'student':>8s} "
          f"{'warm/student':>13s} {'off/student':>12s} {'off/warm':>9s} {'plain/warm':>11s}")
    for name, (case, result) in results.items():
        med, paired = result["median"], result["paired"]
        ok = "ok" if paired["warm/student"] <= 1.15 else "MISS"
        print(f"{name:18s} {case.n:7d} {med['warm']:7.2f} {med['off']:7.2f} {med['plain']:7.2f} "
              f"{med['student@warm']:8.2f} {paired['warm/student']:9.2f} {ok:4s} {paired['off/student']:11.2f} "
              f"{paired['off/warm']:8.2f}x {paired['plain/warm']:10.2f}x")
    print("targets: warm/student <= 1.15; off/warm >= 2x")


# ------------------------------------------------------------------------------------------- main


def _median_ratio(top: list[float], bottom: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(top, bottom))


def bench_case(case: Case, device: torch.device, repeats: int, interleave: str) -> dict:
    dataset, train = make_data(case)
    cfg = make_config(case, device)
    prepared = make_prepared(dataset, device)
    teachers = [make_teacher_state(case, cfg, prepared)]
    state = teachers[0].final_state
    loader = make_plain_loader(case, dataset, train)
    batches = make_floor_batches(prepared, train)
    preps = {"engine": prepared}

    # Warm-up (untimed): oneDNN primitives, allocator, cuDNN autotuning for these shapes.
    FloorRunner(case, dataset, prepared, batches, state).epoch(steps=3)

    times: dict[str, list[float]] = {}

    def record(r: int, name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)
        print(f"  {case.name} repeat {r + 1}/{repeats} {name:12s} {seconds:7.2f} s  "
              f"({case.n / seconds:8.0f} img/s)", flush=True)

    for r in range(repeats):
        if interleave == "step":
            # One engine epoch per engine variant; floor and plain step inside it, step by step.
            for name, prep in (list(preps.items()) if r % 2 == 0 else list(preps.items())[::-1]):
                floor = FloorRunner(case, dataset, prepared, batches, state)
                plain = PlainRunner(case, dataset, loader, state, device)
                seconds, (floor_s, plain_s) = run_engine(cfg, prep, teachers, (floor, plain))
                suffix = "" if name == "engine" else f"@{name}"
                record(r, name, seconds)
                record(r, "floor" + suffix, floor_s)
                record(r, "plain" + suffix, plain_s)
        else:
            variants = {name: (lambda prep=prep: run_engine(cfg, prep, teachers)[0]) for name, prep in preps.items()}
            variants["plain"] = lambda: PlainRunner(case, dataset, loader, state, device).epoch()
            variants["floor"] = lambda: FloorRunner(case, dataset, prepared, batches, state).epoch()
            names = list(variants)
            for name in names[r % len(names):] + names[:r % len(names)]:
                record(r, name, variants[name]())

    medians = {k: statistics.median(v) for k, v in times.items()}
    # Ratios of runs made in the same repeat (adjacent, or step-interleaved), then their median: a
    # load change on a shared machine shifts both sides of a pair, so these are steadier.
    paired = {"engine/plain": _median_ratio(times["plain"], times["engine"]),
              "engine/floor": _median_ratio(times["engine"], times["floor"])}
    return {"median": medians, "paired": paired}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--cases", default="lenet5,resnet20",
                        help="comma-separated subset of: lenet5,resnet20,ensemble (5-member teachers, cache warm/off)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default). On a shared 2-core machine 1 thread "
                             "gives far steadier numbers than 2")
    parser.add_argument("--interleave", choices=("step", "epoch"), default=None,
                        help="step (CPU default): floor and plain run step by step inside the engine's epoch; "
                             "epoch (CUDA default): whole epochs, one after another")
    parser.add_argument("--lenet-images", type=int, default=0, help="override the LeNet-5 set size")
    parser.add_argument("--resnet-images", type=int, default=0, help="override the ResNet-20 set size")
    args = parser.parse_args()

    device = engine.resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    wanted = args.cases.split(",")
    cases = [quick(c) if args.quick else c for c in CASES if c.name in wanted]
    sizes = {"lenet5": args.lenet_images, "resnet20": args.resnet_images}
    cases = [replace(c, n=sizes[c.name]) if sizes[c.name] > 0 else c for c in cases]
    interleave = args.interleave or ("epoch" if device.type == "cuda" else "step")
    print(f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"batch {BATCH} | repeats {args.repeats} | interleave {interleave}"
          f"{' | quick' if args.quick else ''}", flush=True)

    began = time.perf_counter()
    results = {c.name: (c, bench_case(c, device, args.repeats, interleave)) for c in cases}
    if "ensemble" in wanted:
        import tempfile
        ensemble_cases = [quick(c) if args.quick else c for c in ENSEMBLE_CASES]
        with tempfile.TemporaryDirectory(prefix="kdtui-bench-cache-") as cache_root:
            ensemble = {c.name: (c, bench_ensemble_case(c, device, args.repeats, Path(cache_root)))
                        for c in ensemble_cases}
        print_ensemble(ensemble)
        if not results:
            print(f"total {time.perf_counter() - began:.0f} s")
            return

    print()
    print("median seconds per epoch (images/s); engine/plain = plain time / engine time (speed-up);")
    print("engine/floor = engine time / floor time; each ratio is the median of the per-repeat ratios")
    print(f"{'case':9s} {'images':>7s} {'engine':>17s} {'plain':>17s} {'floor':>17s} "
          f"{'engine/plain':>15s} {'engine/floor':>13s}")
    for name, (case, result) in results.items():
        med, paired = result["median"], result["paired"]
        row = f"{name:9s} {case.n:7d}"
        for k in ("engine", "plain", "floor"):
            row += f" {med[k]:6.2f} ({case.n / med[k]:7.0f})"
        speedup, over = paired["engine/plain"], paired["engine/floor"]
        target = 2.0 if case.model == "lenet5" else 1.0
        row += f" {speedup:8.2f}x {'ok' if speedup >= target else 'MISS':4s}"
        row += f" {over:8.2f} {'ok' if over <= 1.2 else 'MISS'}"
        print(row)
    print(f"targets: engine/plain >= 2x (lenet5), >= 1x (resnet20); engine/floor <= 1.2 | "
          f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
