"""The experiment spec: the TOML contract of docs/spec.md, validated, resolved and hashed.

A spec is read (`load_spec`, `parse_spec`, `spec_from_dict`), checked field by field by pydantic,
and every problem is turned into one user-facing line (`SpecError`) that names the field, the bad
value and what is allowed. Values whose good default depends on the data set (batch size, learning
rates, epochs, augmentation, model) are `None` in the spec as written and are filled in by
`Spec.resolved()` from `DATASET_DEFAULTS`; a value the user wrote always wins.

This module must stay cheap to import (the CLI's `--help` and the app import it): it touches
`kernels.catalog` and `kernels.config` only, never torch.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictStr, ValidationError
from pydantic import field_validator
from pydantic_core import PydanticCustomError

from kdtui.core.names import escape_char, unsafe_characters
from kernels import catalog
from kernels.config import DataConfig, DistillConfig, EngineConfig, RunConfig, TrainConfig
# The seed of teacher member k is `run_seed * 1000 + k` (and the student's `run_seed * 1000 + 999`),
# defined once in kernels.config because the engine seeds from it; re-exported here for the app.
from kernels.config import member_seed, student_seed

__all__ = [
    "SpecError", "Spec", "DataSpec", "TeacherSpec", "StudentSpec", "DistillSpec", "EvalSpec",
    "load_spec", "parse_spec", "spec_from_dict", "expand_sweep", "check_files", "spec_hash", "group_hash", "teacher_key",
    "member_seed", "student_seed", "DATASET_DEFAULTS", "DATASET_CHANNELS", "FIELD_PATHS", "MAX_MEMBERS",
]

MAX_MEMBERS = 999   # member seeds run_seed*1000 + k must stay clear of the student's (+999)
MAX_SEED = 2**32 - 1
# Upper bounds a spec is checked against before anything runs, so a typo fails in one line at launch,
# not hours later or on a device that runs out of memory. The paper's images are 28 and 32 pixels; a
# batch of 128 RGB images of 512x512 is ~400 MB as float32 before the first layer, and the
# activations of a ResNet on it take tens of GB: past what one GPU holds.
MAX_IMAGE_SIZE = 512
MAX_EPOCHS = 10_000          # the paper's longest schedule is 300 epochs
MAX_BATCH_SIZE = 65_536
MAX_NAME_LENGTH = 500        # characters; a sweep point's name adds its values to the spec's name


class SpecError(Exception):
    """A bad spec, explained in one line fit for a user; `path` is the offending field when known."""

    def __init__(self, message: str, path: str | None = None):
        message = " ".join(str(message).split("\n"))
        super().__init__(message)
        self.message = message
        self.path = path


# ---------------------------------------------------------------------------------------------
# Data-set-dependent defaults
# ---------------------------------------------------------------------------------------------

DATASET_CHANNELS = {"digits": 1, "mnist": 1, "fashion-mnist": 1, "emnist": 1,
                    "cifar10": 3, "cifar100": 3, "svhn": 3, "imagefolder": 3}

# digits: measured on 2 CPU cores (docs/spec.md, "Defaults by data set"); the paper's CIFAR values collapse here.
_DIGITS = {
    "teacher": dict(epochs=20, batch_size=32, lr=0.05, nesterov=False, final_lr=0.0),
    "student": dict(epochs=20, batch_size=32, lr=0.01, nesterov=True, final_lr=1e-6),
}
# MNIST-like (60k 28x28 images, LeNet-5): one epoch is ~470 steps at batch 128, so 20 epochs train a
# LeNet-5 fully; the paper's 100 teacher epochs belong to its 200-image teacher (E1), whose preset
# sets teacher_subset and epochs itself. lr 0.05 is the step LeNet-5 (average pooling) takes stably.
_MNIST = {
    "teacher": dict(epochs=20, batch_size=128, lr=0.05, nesterov=False, final_lr=0.0),
    "student": dict(epochs=20, batch_size=128, lr=0.05, nesterov=True, final_lr=1e-6),
}
# The paper's appendix (CIFAR): teachers 200 epochs, batch 256, cosine 0.1 -> 0; students 300 epochs,
# batch 128, Nesterov, cosine 0.05 -> 1e-6.
_PAPER = {
    "teacher": dict(epochs=200, batch_size=256, lr=0.1, nesterov=False, final_lr=0.0),
    "student": dict(epochs=300, batch_size=128, lr=0.05, nesterov=True, final_lr=1e-6),
}


def _table(base: dict, model: str, augment: tuple[str, ...]) -> dict:
    return {"teacher": {"model": model, **base["teacher"], "augment": augment},
            "student": dict(base["student"]),
            "distill": {"augment": augment}}


# What `Spec.resolved()` fills in when a field is left out, per data set. Digits are not mirror-
# symmetric (and neither are SVHN's house numbers), so they get no horizontal flip. The student's
# model and norm default to the teacher's (self-distillation, and what student.init needs).
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": _table(_DIGITS, "lenet5", ("crop",)),
    "mnist": _table(_MNIST, "lenet5", ("crop",)),
    "fashion-mnist": _table(_MNIST, "lenet5", ("crop",)),
    "emnist": _table(_MNIST, "lenet5", ("crop",)),
    "cifar10": _table(_PAPER, "resnet20", ("crop", "hflip")),
    "cifar100": _table(_PAPER, "resnet20", ("crop", "hflip")),
    "svhn": _table(_PAPER, "resnet20", ("crop",)),
    "imagefolder": _table(_PAPER, "resnet20", ("crop", "hflip")),
}
assert set(DATASET_DEFAULTS) == set(catalog.DATASETS) == set(DATASET_CHANNELS)


# ---------------------------------------------------------------------------------------------
# Field types: strict (TOML is typed; "10" is not an integer), with user-facing messages
# ---------------------------------------------------------------------------------------------

def _fail(message: str) -> PydanticCustomError:
    # The message travels as context so that braces in user values are not read as a template.
    return PydanticCustomError("kdtui", "{m}", {"m": message})


@dataclasses.dataclass(frozen=True, slots=True)
class Rule(AfterValidator):
    """A field check that also says in words what it allows (docs/spec.md is generated from it)."""
    rule: str = ""


def _check(ok: Callable[[Any], bool], message: str, rule: str | None = None) -> Rule:
    def validate(value):
        if not ok(value):
            raise _fail(message)
        return value
    return Rule(validate, rule=rule or message)


def _safe_name(value: str) -> str:
    # A name is shown in terminals; these characters would act on the terminal instead (names.py).
    unsafe = unsafe_characters(value)
    if unsafe:
        raise _fail("must not contain control characters or bidirectional overrides (found "
                    f"{', '.join(escape_char(c) for c in unsafe)})")
    return value


def _one_of(choices: tuple[str, ...], what: str) -> Rule:
    return _check(lambda v: v in choices, f"unknown {what}; allowed: {', '.join(choices)}",
                  rule="one of " + ", ".join(f"`{c}`" for c in choices))


def _unique(values: list) -> list:
    if len(set(map(json.dumps, values))) != len(values):
        raise _fail("must not repeat a value")
    return values


def _nonempty_list(values: list) -> list:
    if not values:
        raise _fail("must not be empty")
    return values


def _check_extra(item: str) -> str:
    # kernels.catalog holds the one rule (data loading applies it too); the spec keeps the canonical
    # form, so an item's spelling cannot split spec hashes.
    try:
        return catalog.parse_extra(item).canonical
    except ValueError as e:
        raise _fail(str(e)) from None


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]          # strict float still takes a TOML integer (4 -> 4.0)
Str = StrictStr
Bool = StrictBool

PositiveInt = Annotated[Int, _check(lambda v: v >= 1, "must be >= 1")]
Epochs = Annotated[PositiveInt, _check(lambda v: v <= MAX_EPOCHS, f"must be <= {MAX_EPOCHS}")]
BatchSize = Annotated[PositiveInt, _check(lambda v: v <= MAX_BATCH_SIZE, f"must be <= {MAX_BATCH_SIZE}")]
NonNegInt = Annotated[Int, _check(lambda v: v >= 0, "must be >= 0")]
PositiveFloat = Annotated[Float, _check(lambda v: v > 0, "must be > 0")]
NonNegFloat = Annotated[Float, _check(lambda v: v >= 0, "must be >= 0")]
UnitFloat = Annotated[Float, _check(lambda v: 0 <= v <= 1, "must be between 0 and 1")]
PartIndex = Annotated[Int, _check(lambda v: v in (0, 1), "must be 0 or 1")]
Model = Annotated[Str, _one_of(catalog.MODELS, "model")]
Norm = Annotated[Str, _one_of(catalog.NORMS, "norm")]
Optimizer = Annotated[Str, _one_of(catalog.OPTIMIZERS, "optimizer")]
Schedule = Annotated[Str, _one_of(catalog.SCHEDULES, "schedule")]


def _check_augmentation(name: str) -> str:
    # kernels.catalog holds the rule (the Augmenter applies it too); the canonical form keeps
    # "colorjitter:0.2" and "colorjitter" from splitting spec hashes.
    try:
        return catalog.canonical_augmentation(name)
    except ValueError as e:
        raise _fail(str(e)) from None


def _one_per_kind(names: list) -> list:
    kinds = [name.partition(":")[0] for name in names]
    if len(set(kinds)) != len(kinds):
        raise _fail("must not name an augmentation twice")
    return names


Augmentation = Annotated[Str, Rule(_check_augmentation, rule="one of " + ", ".join(
    f"`{c}`" for c in catalog.AUGMENTATIONS) + ", or with a value: " + ", ".join(
    f"`{kind}:x` (0 <= x <= {top:g})" for kind, (_, top) in catalog.AUGMENT_PARAMETERS.items()))]
AugmentList = Annotated[list[Augmentation], AfterValidator(_unique), AfterValidator(_one_per_kind)]
Momentum = Annotated[Float, _check(lambda v: 0 <= v < 1, "must be >= 0 and < 1")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=False)


class DataSpec(_Section):
    dataset: Annotated[Str, _one_of(catalog.DATASETS, "dataset")] = "digits"
    root: Annotated[Str, _check(bool, "must not be empty")] = "~/.cache/kdtui/data"
    download: Bool = True
    image_size: Annotated[NonNegInt, _check(lambda v: v <= MAX_IMAGE_SIZE, f"must be <= {MAX_IMAGE_SIZE}")] = 0  # 0: the data set's own size
    teacher_subset: NonNegInt = 0
    teacher_subset_per_seed: Bool = False      # E1: a different teacher subset for every run seed
    split: Annotated[Float, _check(lambda v: 0 <= v < 1, "must be >= 0 and < 1")] = 0.0
    teacher_split: PartIndex = 0
    student_splits: Annotated[list[PartIndex], AfterValidator(_nonempty_list), AfterValidator(_unique)] = \
        Field(default_factory=lambda: [0])
    extra: list[Annotated[Str, AfterValidator(_check_extra)]] = Field(default_factory=list)
    extra_only: Bool = False                   # E1: the student distils on the extra data alone


class TeacherSpec(_Section):
    model: Optional[Model] = None
    norm: Norm = "batch"
    members: Annotated[Int, _check(lambda v: 1 <= v, "must be >= 1"),
                       _check(lambda v: v <= MAX_MEMBERS, f"must be <= {MAX_MEMBERS}")] = 1
    epochs: Optional[Epochs] = None
    batch_size: Optional[BatchSize] = None
    lr: Optional[PositiveFloat] = None
    optimizer: Optimizer = "sgd"
    momentum: Momentum = 0.9
    nesterov: Optional[Bool] = None
    weight_decay: NonNegFloat = 1e-4
    schedule: Schedule = "cosine"
    final_lr: Optional[NonNegFloat] = None     # extension: the cosine schedule's end value
    augment: Optional[AugmentList] = None


class StudentSpec(_Section):
    model: Optional[Model] = None              # default: the teacher's
    norm: Optional[Norm] = None                # default: the teacher's
    epochs: Optional[Epochs] = None
    batch_size: Optional[BatchSize] = None
    lr: Optional[PositiveFloat] = None
    optimizer: Optimizer = "sgd"
    momentum: Momentum = 0.9
    nesterov: Optional[Bool] = None
    weight_decay: NonNegFloat = 1e-4
    schedule: Schedule = "cosine"
    final_lr: Optional[NonNegFloat] = None
    init: Annotated[Str, _one_of(catalog.INITS, "init")] = "random"
    init_lambda: UnitFloat = 0.0
    # E7: the paper's code also multiplies the student's learning rate by (1 - init_lambda).
    scale_lr_by_init: Bool = False


class DistillSpec(_Section):
    loss: Annotated[Str, _one_of(catalog.LOSSES, "loss")] = "kl"
    temperature: PositiveFloat = 4.0
    alpha: UnitFloat = 0.0
    augment: Optional[AugmentList] = None
    mixup_alpha: PositiveFloat = 1.0
    # Teacher outputs per (example, view), computed once and shared by every run of the same teacher
    # (kernels.teacher_cache); "auto" decides per run and says why in the run's events.
    teacher_cache: Annotated[Str, _one_of(catalog.TEACHER_CACHE, "teacher_cache")] = "auto"
    teacher_cache_mb: NonNegInt = 0   # the cache's memory budget; 0: a share of the device per slot
    # τ of the rows a "synthetic:" extra item mixes into each minibatch; unset: `temperature`
    # (the paper's released code distilled its GAN rows at τ = 1).
    synthetic_temperature: Optional[PositiveFloat] = None


class EngineSpec(_Section):
    compile: Annotated[Str, _one_of(catalog.COMPILE_MODES, "compile")] = "off"
    sync_batch_norm: Bool = False     # with --nproc: batch statistics over all processes (CUDA)


class EvalSpec(_Section):
    every: Optional[PositiveInt] = None  # default: every epoch up to 30 epochs, else about 30 evaluations
    # extension, the paper's E12 control: also distil a student from an independent teacher set
    # (same settings, other seeds) and report its agreement with this run's teacher.
    independent: Bool = False
    # the paper's Table 1: linear CKA between teacher and student at each ResNet stage (E8)
    cka: Bool = False


_DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]+")
_SECTIONS: dict[str, type[_Section]] = {"data": DataSpec, "teacher": TeacherSpec, "student": StudentSpec,
                                        "distill": DistillSpec, "eval": EvalSpec, "engine": EngineSpec}
# Every dotted path a sweep may vary (everything but `name` and `sweep`).
FIELD_PATHS: tuple[str, ...] = ("seed", "device") + tuple(
    f"{section}.{field}" for section, model in _SECTIONS.items() for field in model.model_fields)


class Spec(_Section):
    name: Annotated[Str, _check(lambda v: v.strip() != "", "must not be empty"),
                    _check(lambda v: len(v) <= MAX_NAME_LENGTH, f"must be at most {MAX_NAME_LENGTH} characters long"),
                    AfterValidator(_safe_name)] = "experiment"
    seed: Annotated[Int, _check(lambda v: 0 <= v <= MAX_SEED, f"must be between 0 and {MAX_SEED}")] = 0
    device: Annotated[Str, _check(lambda v: _DEVICE.fullmatch(v) is not None,
                                  "must be auto, cpu, cuda or cuda:N")] = "auto"
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    # dotted path -> values; checked against the rest of the spec by spec_from_dict / expand_sweep.
    sweep: Optional[dict[str, Any]] = None

    @field_validator("sweep", mode="before")
    @classmethod
    def _flatten_sweep(cls, value):
        # `distill.temperature = [...]` unquoted inside [sweep] is a nested table in TOML; accept it.
        if not isinstance(value, Mapping):
            return value
        flat: dict[str, Any] = {}

        def walk(prefix: str, table: Mapping) -> None:
            for key, item in table.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                if isinstance(item, Mapping):
                    walk(path, item)
                else:
                    flat[path] = item
        walk("", value)
        return flat or None

    # -- resolution -----------------------------------------------------------------------------

    def resolved(self) -> "Spec":
        """This spec with every data-set-dependent default filled in (user values kept; idempotent)."""
        table = DATASET_DEFAULTS[self.data.dataset]

        def fill(section: _Section, defaults: Mapping[str, Any]) -> dict:
            return {k: (list(v) if isinstance(v, tuple) else v)
                    for k, v in defaults.items() if getattr(section, k) is None}

        teacher_fill = fill(self.teacher, table["teacher"])
        teacher = self.teacher.model_copy(update=teacher_fill)
        student_defaults = {**table["student"], "model": teacher.model, "norm": teacher.norm}
        student_fill, distill_fill = fill(self.student, student_defaults), fill(self.distill, table["distill"])
        if not (teacher_fill or student_fill or distill_fill):
            return self  # already resolved: a 5,000-point sweep asks this three times a point
        student = self.student.model_copy(update=student_fill)
        distill = self.distill.model_copy(update=distill_fill)
        return self.model_copy(update={"teacher": teacher, "student": student, "distill": distill}, deep=True)

    def to_toml(self) -> str:
        """The resolved spec as TOML (every value actually used; the sweep only if there is one)."""
        return _toml(self.resolved().model_dump(mode="json", exclude_none=True))

    def to_run_config(self) -> RunConfig:
        """The engine's settings, field by field; `device = "auto"` is left for the runner to resolve."""
        s = self.resolved()
        d, t, st, di = s.data, s.teacher, s.student, s.distill
        data = DataConfig(dataset=d.dataset, root=os.path.expanduser(d.root), download=d.download,
                          image_size=d.image_size, teacher_subset=d.teacher_subset, split=d.split,
                          teacher_split=d.teacher_split, student_splits=tuple(d.student_splits),
                          extra=tuple(d.extra), extra_only=d.extra_only,
                          subset_seed=s.seed if d.teacher_subset_per_seed else 0)

        def train(x, augment, lr_scale: float = 1.0) -> TrainConfig:
            return TrainConfig(model=x.model, epochs=x.epochs, batch_size=x.batch_size, lr=x.lr * lr_scale,
                               norm=x.norm, optimizer=x.optimizer, momentum=x.momentum, nesterov=x.nesterov,
                               weight_decay=x.weight_decay, schedule=x.schedule,
                               final_lr=x.final_lr * lr_scale, augment=tuple(augment))
        student_lr_scale = 1.0 - st.init_lambda if st.scale_lr_by_init else 1.0
        distill = DistillConfig(loss=di.loss, temperature=di.temperature, alpha=di.alpha,
                                augment=tuple(di.augment), mixup_alpha=di.mixup_alpha,
                                init=st.init, init_lambda=st.init_lambda, teacher_cache=di.teacher_cache,
                                teacher_cache_mb=di.teacher_cache_mb,
                                synthetic_temperature=di.synthetic_temperature or 0.0)
        engine = EngineConfig(compile=s.engine.compile, sync_batch_norm=s.engine.sync_batch_norm)
        # The student sees the distillation data, so its augmentation is distill.augment.
        return RunConfig(data=data, teacher=train(t, t.augment), student=train(st, di.augment, student_lr_scale),
                         distill=distill,
                         members=t.members, seed=s.seed, device=s.device, eval_every=s.eval.every or 0,
                         engine=engine)


# ---------------------------------------------------------------------------------------------
# Reading, and turning problems into one line
# ---------------------------------------------------------------------------------------------

def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file; every problem (missing file included) is a SpecError."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{source}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{source}: is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark at the start (some editors write one) is not TOML
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return parse_spec(text, source)


_TOML_WHERE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)


def parse_spec(text: str, source: str = "spec") -> Spec:
    """Validate spec TOML text; `source` names it in messages (usually the file name)."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise SpecError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_WHERE.match(message)
        if where:
            raise SpecError(f"{source}: line {where[2]}: invalid TOML: {where[1]} (column {where[3]})") from None
        message = message.replace(" (at end of document)", "")
        if message != str(exc):
            raise SpecError(f"{source}: end of file: invalid TOML: {message}") from None
        raise SpecError(f"{source}: invalid TOML: {message}") from None
    try:
        return spec_from_dict(data, source)
    except RecursionError:  # nested just shallow enough for the parser, too deep to check
        raise SpecError(f"{source}: values nested too deeply") from None


def spec_from_dict(data: Mapping[str, Any], source: str = "spec") -> Spec:
    """Validate a spec given as a (TOML-shaped) dict, the sweep's values included."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a table of settings, got {type(data).__name__}")
    spec, problem = _validate(data)
    if problem is not None:
        raise SpecError(f"{source}: {problem.text()}", problem.path)
    if spec.sweep is not None:
        _check_sweep(spec, source)
    return spec


class _Problem:
    def __init__(self, message: str, path: str | None = None, value: Any = None, more: int = 0):
        self.message, self.path, self.value, self.more = message, path, value, more

    def text(self) -> str:
        head = f"{self.path} = {_show(self.value)}: {self.message}" if self.path is not None else self.message
        return head + (f" (and {self.more} more)" if self.more else "")


def _validate(data: Mapping[str, Any]) -> tuple[Spec | None, _Problem | None]:
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        return None, _from_pydantic(exc)
    problem = _consistency(spec.resolved())
    return (None, problem) if problem else (spec, None)


_TYPE_MESSAGES = {
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string", "list_type": "must be a list",
    "dict_type": "must be a table", "model_type": "must be a table", "model_attributes_type": "must be a table",
    "too_short": "must not be empty",
}


def _from_pydantic(exc: ValidationError) -> _Problem:
    errors = exc.errors()
    # A misspelt key is the likeliest root cause of anything else, so it is reported first.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    first, more = errors[0], len(errors) - 1
    loc = first["loc"]
    path = _path(loc)
    if first["type"] == "extra_forbidden":
        return _Problem(_unknown_key(loc, first["input"]), more=more)
    if first["type"] == "kdtui":
        return _Problem(first["ctx"]["m"], path, first["input"], more)
    message = _TYPE_MESSAGES.get(first["type"])
    if message is None:
        message = first["msg"][:1].lower() + first["msg"][1:]
    if loc and loc[-1] in _SECTIONS and len(loc) == 1 and first["type"].endswith("type"):
        message = f"must be a table ([{loc[0]}])"
    return _Problem(message, path, first["input"], more)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_key(loc: tuple, value: Any) -> str:
    key = str(loc[-1])
    if len(loc) == 1:
        names = list(Spec.model_fields)
    else:
        names = list(_SECTIONS[str(loc[0])].model_fields) if str(loc[0]) in _SECTIONS else []
    what = "section" if len(loc) == 1 and isinstance(value, Mapping) else "key"
    close = difflib.get_close_matches(key, names, n=1)
    if not close:  # perhaps the right name in the wrong section, e.g. a top-level `temperature`
        leaves = {p.rsplit(".", 1)[-1]: p for p in FIELD_PATHS if "." in p}
        match = difflib.get_close_matches(key, list(leaves), n=1)
        close = [leaves[match[0]]] if match else []
    hint = f" (did you mean '{close[0]}'?)" if close else f"; allowed: {', '.join(names)}"
    return f"unknown {what} '{_path(loc)}'{hint}"


def _show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it, roughly in TOML: strings quoted, booleans lower-case."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_show(v, limit) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k} = {_show(v, limit)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _consistency(spec: Spec) -> _Problem | None:
    """Checks across fields, on the resolved spec (so that defaults take part)."""
    t, s, d = spec.teacher, spec.student, spec.data
    if s.init in ("teacher-init", "interpolate"):
        for field in ("model", "norm"):
            if getattr(s, field) != getattr(t, field):
                return _Problem(f"student.init = {_show(s.init)} needs student.{field} == teacher.{field} "
                                f"(got {getattr(s, field)} vs {getattr(t, field)})", None)
    if spec.eval.cka and (t.members != 1 or not (t.model.startswith("resnet") and s.model.startswith("resnet"))):
        return _Problem("needs one ResNet teacher (teacher.members = 1) and a ResNet student: CKA compares "
                        "their stage outputs", "eval.cka", spec.eval.cka)
    if s.scale_lr_by_init and s.init != "interpolate":
        return _Problem("needs student.init = \"interpolate\" (the scale is 1 - init_lambda)",
                        "student.scale_lr_by_init", s.scale_lr_by_init)
    if d.extra_only and not d.extra:
        return _Problem("needs data.extra (the student would have no data)", "data.extra_only", d.extra_only)
    if sum(catalog.is_synthetic(item) for item in d.extra) > 1:
        return _Problem("holds at most one 'synthetic:' item (a run mixes one pool; merge the files)",
                        "data.extra", d.extra)
    if d.teacher_subset_per_seed and not d.teacher_subset:
        return _Problem("needs data.teacher_subset > 0", "data.teacher_subset_per_seed",
                        d.teacher_subset_per_seed)
    if d.split == 0:
        if d.teacher_split != 0:
            return _Problem("needs data.split > 0 (with split = 0 there is only part 0)",
                            "data.teacher_split", d.teacher_split)
        if d.student_splits != [0]:
            return _Problem("needs data.split > 0 (with split = 0 there is only part 0)",
                            "data.student_splits", d.student_splits)
    for role, section in (("teacher", t), ("student", s)):
        if section.final_lr > section.lr:
            return _Problem(f"must be <= {role}.lr ({section.lr})", f"{role}.final_lr", section.final_lr)
    return None


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------

def _set_path(data: dict, path: str, value: Any) -> None:
    *sections, leaf = path.split(".")
    for section in sections:
        data = data.setdefault(section, {})
    data[leaf] = copy.deepcopy(value)


def _check_sweep(spec: Spec, source: str) -> None:
    """Each key is a field path; each value list is non-empty and every value valid on its own."""
    base = spec.model_dump(exclude={"sweep"})
    for key, values in (spec.sweep or {}).items():
        where = f"{source}: sweep.'{key}'"
        if key not in FIELD_PATHS:
            if key == "name":
                raise SpecError(f"{where}: cannot sweep the name (each point is named after its values)", "sweep")
            if key in _SECTIONS:
                raise SpecError(f"{where}: is a section; sweep one of its fields, e.g. "
                                f"'{key}.{next(iter(_SECTIONS[key].model_fields))}'", "sweep")
            close = difflib.get_close_matches(key, FIELD_PATHS, n=1)
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else "; a sweep key is a dotted path such as 'seed' or 'distill.temperature'")
            raise SpecError(f"{where}: unknown field path{hint}", "sweep")
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where} = {_show(values)}: must be a non-empty list of values", "sweep")
        seen: list[str] = []
        for i, value in enumerate(values):
            label = f"{where}[{i}] = {_show(value)}"
            canonical = json.dumps(value, sort_keys=True, default=str)
            if canonical in seen:
                raise SpecError(f"{label}: repeats an earlier value", "sweep")
            seen.append(canonical)
            point = copy.deepcopy(base)
            _set_path(point, key, value)
            _, problem = _validate(point)
            if problem is not None:
                own = problem.path == key and not problem.more
                raise SpecError(f"{label}: {problem.message if own else problem.text()}", "sweep")


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_label(v) for v in value) + "]"
    return str(value) if isinstance(value, str) else repr(value)


_TOML_TABLES: dict[str, str] = {}  # a table's canonical JSON -> its TOML; a sweep's points share most tables


def _toml(data: dict) -> str:
    """tomli_w.dumps(data), byte for byte, with each top-level table written once per process: the
    points of a 5,000-point sweep differ in a key or two, and tomli_w costs ~0.5 ms a spec."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    chunks = [tomli_w.dumps(scalars)] if scalars else []
    for key, table in data.items():
        if isinstance(table, dict):
            canonical = json.dumps([key, table])
            if canonical not in _TOML_TABLES:
                if len(_TOML_TABLES) > 10_000:
                    _TOML_TABLES.clear()
                _TOML_TABLES[canonical] = tomli_w.dumps({key: table})
            chunks.append(_TOML_TABLES[canonical])
    return "\n".join(chunks)


def expand_sweep(spec: Spec, source: str = "spec") -> list[Spec]:
    """The sweep's grid as specs without a sweep: every point validated before any is returned.

    Keys vary in file order with the last key fastest; each point is named `name[k=v,k=v]`.
    Defaults are resolved per point when the spec is unresolved, so sweeping `data.dataset` works.
    """
    if not spec.sweep:
        return [spec]
    _check_sweep(spec, source)
    keys = list(spec.sweep)
    base = spec.model_dump(exclude={"sweep"})
    points = []
    for combo in itertools.product(*(spec.sweep[k] for k in keys)):
        label = ",".join(f"{k}={_label(v)}" for k, v in zip(keys, combo))
        data = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            _set_path(data, key, value)
        data["name"] = f"{spec.name}[{label}]"
        point, problem = _validate(data)
        if problem is not None:
            raise SpecError(f"{source}: sweep point [{label}]: {problem.text()}", "sweep")
        points.append(point)
    return points


def check_files(points: list[Spec], source: str = "spec") -> None:
    """SpecError unless the files the runs will read are there now: `data.extra` items
    `tensors:PATH` and `synthetic:PATH:ratio=S:R` name a readable file. Called when runs are launched, not on every spec read: a
    stored spec of a finished run stays valid after its file moves, and a preset lists files the
    user provides later."""
    for item in dict.fromkeys(item for point in points for item in point.data.extra):
        parsed = catalog.parse_extra(item)
        if parsed.kind not in ("tensors", "synthetic"):
            continue
        path = Path(str(parsed.value)).expanduser()
        if not path.is_file():
            raise SpecError(f"{source}: data.extra = {_show(item)}: no file at {path}", "data.extra")
        if not os.access(path, os.R_OK):
            raise SpecError(f"{source}: data.extra = {_show(item)}: {path} is not readable", "data.extra")


# ---------------------------------------------------------------------------------------------
# Identity: what makes two runs (or two teachers) the same
# ---------------------------------------------------------------------------------------------

def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _identity(spec: Spec) -> dict:
    """The resolved spec minus what says where or how, not what: name, device, data location.

    The data root stays for `imagefolder`, where the folder *is* the data set.
    """
    payload = spec.resolved().model_dump(mode="json", exclude_none=True)
    del payload["name"], payload["device"]
    # How the compute runs, not what it computes: the cache is exact and compiling changes no math,
    # except that CUDA graphs need one batch shape, so reduce-overhead drops each epoch's last batch.
    if payload["engine"].pop("compile") == "reduce-overhead":
        payload["engine"]["last_batch"] = "dropped"
    del payload["distill"]["teacher_cache"], payload["distill"]["teacher_cache_mb"]
    data = payload["data"]
    if not any(catalog.is_synthetic(item) for item in data["extra"]):  # it then changes nothing
        payload["distill"].pop("synthetic_temperature", None)
    del data["download"]
    if data["dataset"] != "imagefolder":
        del data["root"]
    return payload


def spec_hash(spec: Spec) -> str:
    """sha256 hex of the canonical resolved spec (sorted-key JSON) without name, device, data root."""
    return spec_hashes(spec)[0]


def group_hash(spec: Spec) -> str:
    """spec_hash without the seed: runs that differ only by seed share it (mean ± std across seeds)."""
    return spec_hashes(spec)[1]


def spec_hashes(spec: Spec) -> tuple[str, str]:
    """(spec_hash, group_hash) from one identity: what a new run's record needs, computed once."""
    payload = _identity(spec)
    exact = _digest(payload)
    del payload["seed"]
    return exact, _digest(payload)


# The data fields a teacher never sees: the student's parts and the extra distillation data.
_STUDENT_ONLY_DATA = ("student_splits", "extra", "extra_only")


def teacher_key(spec: Spec, member_index: int) -> str:
    """A content hash of everything that determines teacher member k, for the teacher store.

    That is the resolved [teacher] section without `members` (member k of a 3-ensemble is member k of
    a 5-ensemble), the data the teacher trains on (not the student's splits nor the extra data), and
    the member's seed `member_seed(seed, k)`. Device-independent. Student and distill settings are out.
    """
    resolved = spec.resolved()
    if not 0 <= member_index < resolved.teacher.members:
        raise ValueError(f"member index {member_index} out of range for {resolved.teacher.members} members")
    identity = _identity(resolved)
    teacher = identity["teacher"]
    del teacher["members"]
    data = {k: v for k, v in identity["data"].items() if k not in _STUDENT_ONLY_DATA}
    # /2: the pre-activation ResNet's projection shortcut now takes the raw x and VGG-16 has the
    # paper's classifier; teachers stored under /1 have other weights for the same spec.
    key = {"kind": "kdtui-teacher/2", "teacher": teacher, "data": data,
           "member_seed": member_seed(resolved.seed, member_index)}
    if "last_batch" in identity["engine"]:  # only then, so every other teacher keeps its stored key
        key["last_batch"] = identity["engine"]["last_batch"]
    return _digest(key)
