"""docs/spec.md, generated from the spec model so that the reference cannot drift from the code.

Types, defaults, allowed values and the data-set-dependent defaults are read from the pydantic
model in `kdtui.core.spec`: the checks' `Rule` texts, `Literal` and `Enum` choices, and
`Spec.resolved()` for every field left unset. Only the one-line meanings are written here (or, when a
field has one, taken from its `description`). tests/test_docs.py fails when docs/spec.md differs
from `render_spec_reference()` or when a field has no meaning; regenerate with

    python -m kdtui.core.spec_docs > docs/spec.md
"""
from __future__ import annotations

import enum
import sys
import types
import typing
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from kdtui.core.spec import DATASET_DEFAULTS, Rule, Spec

__all__ = ["MEANINGS", "field_paths", "undescribed_fields", "render_spec_reference"]

# What each field is for, in a line. Facts the model holds (type, default, bounds, choices) are
# not repeated here: the generator adds them.
MEANINGS: dict[str, str] = {
    "name": "Free text naming the experiment; the run id is generated. Sweep points are named "
            "`name[key=value,...]` (the whole name at most 500 characters). Control characters and "
            "bidirectional overrides are refused.",
    "seed": "Run seed. Teacher member k is seeded `seed*1000 + k`, the student `seed*1000 + 999`.",
    "device": "Where the run computes; `auto` picks CUDA when present, else the CPU.",
    "sweep": "Optional grid: each key is a dotted field path (`seed`, `distill.temperature`), each "
             "value a non-empty list; one run per combination, the last key varying fastest.",
    "data.dataset": "The data set. `digits` ships inside kdtui and needs no download.",
    "data.root": "Folder where downloaded or prepared data sets live (for `imagefolder`, the images).",
    "data.download": "`false`: fail with a message naming the folder instead of downloading.",
    "data.image_size": "Resize every image to this side length once at load; 0 keeps the data set's "
                       "own size (digits: 28). At most 512: a batch of 128 RGB images of 512x512 is "
                       "~400 MB before the first layer, and a ResNet's activations on it outgrow one "
                       "GPU's memory.",
    "data.teacher_subset": "0: the teacher trains on all its training data; N: on N examples "
                           "drawn stratified by class.",
    "data.teacher_subset_per_seed": "`true`: the teacher's subset is drawn anew for each run seed "
                                    "(the paper's E1 varies it per trial); `false`: one subset for "
                                    "every seed.",
    "data.split": "0: no split; f: split the training set into parts D0 (fraction f) and D1 (the "
                  "rest), for the data-recycling experiment.",
    "data.teacher_split": "The part the teacher trains on (needs `split` > 0 for part 1).",
    "data.student_splits": "The parts the student distils on, e.g. `[1]` or `[0, 1]`.",
    "data.extra": "Extra distillation-only data, each item one of `<dataset>:N` (N training images "
                  "of another data set; `emnist` draws from EMNIST `byclass`, 697,932 images), "
                  "`noise:p` (replace each image by uniform noise with probability p), "
                  "`tensors:PATH` (append a saved uint8 image tensor once, as a fixed pool that is "
                  "augmented like the real images) or `synthetic:PATH:ratio=S:R` (per-minibatch "
                  "mixing: every student minibatch of B real rows gets round(B·S/R) rows drawn afresh "
                  "from the tensor in PATH, not augmented; `ratio=1:4` makes a fifth of each batch "
                  "synthetic, the paper's GAN arm; at most one such item; the teacher then runs "
                  "online). Files must exist and be readable when the run is launched; the file "
                  "format is the same for both.",
    "data.extra_only": "`true`: the student distils on the `extra` data alone, not on the training "
                       "set (the paper's E1 EMNIST arms).",
    "teacher.model": "Teacher architecture.",
    "teacher.norm": "Normalisation layers: `batch` norm, or `layer` (GroupNorm with one group).",
    "teacher.members": "Ensemble size m: the teacher is the mean of m members' predicted "
                       "probabilities.",
    "teacher.epochs": "Training epochs of each teacher member (at most 10,000; the paper's longest schedule is 300).",
    "teacher.batch_size": "Mini-batch size (at most 65,536).",
    "teacher.lr": "Initial learning rate.",
    "teacher.optimizer": "Optimiser.",
    "teacher.momentum": "SGD momentum (Adam: beta1).",
    "teacher.nesterov": "Nesterov momentum (SGD).",
    "teacher.weight_decay": "L2 weight decay.",
    "teacher.schedule": "Learning-rate schedule: `cosine` from `lr` to `final_lr`, or `constant`.",
    "teacher.final_lr": "The cosine schedule's last learning rate (at most `lr`).",
    "teacher.augment": "Augmentations while training the teacher; no value twice.",
    "student.model": "Student architecture; unset: the teacher's (self-distillation).",
    "student.norm": "Student normalisation; unset: the teacher's.",
    "student.epochs": "Distillation epochs (at most 10,000).",
    "student.batch_size": "Mini-batch size (at most 65,536).",
    "student.lr": "Initial learning rate.",
    "student.optimizer": "Optimiser.",
    "student.momentum": "SGD momentum (Adam: beta1).",
    "student.nesterov": "Nesterov momentum (SGD).",
    "student.weight_decay": "L2 weight decay.",
    "student.schedule": "Learning-rate schedule: `cosine` from `lr` to `final_lr`, or `constant`.",
    "student.final_lr": "The cosine schedule's last learning rate (at most `lr`).",
    "student.init": "Student's starting weights: `random`, `teacher-init` (the weights the teacher "
                    "started from) or `interpolate` (see `init_lambda`); the last two need the "
                    "teacher's model and norm.",
    "student.init_lambda": "With `init = \"interpolate\"`: the start is λ·(trained teacher) + "
                           "(1−λ)·(random init), λ being this value.",
    "student.scale_lr_by_init": "With `init = \"interpolate\"`: multiply `lr` and `final_lr` by "
                                "(1−λ), as the paper's code did for its Fig. 6b (the text does not "
                                "say so).",
    "distill.loss": "Distillation loss: forward KL(teacher ‖ student) scaled by τ², reverse KL, "
                    "symmetric KL, Brier score on probabilities, or cross-entropy with the "
                    "teacher's argmax (`hard`).",
    "distill.temperature": "Softmax temperature τ applied to teacher and student logits in the loss.",
    "distill.alpha": "Weight of cross-entropy with the true labels; the distillation loss gets "
                     "1 − alpha.",
    "distill.augment": "Augmentations of the distillation data (the student's view, which the "
                       "teacher sees too); no value twice.",
    "distill.mixup_alpha": "Beta(a, a) parameter of mixup and cutmix.",
    "distill.teacher_cache": "`auto`: reuse the teacher's outputs per (example, view) where the "
                             "augmentation allows it; `off`: always run the teacher.",
    "distill.teacher_cache_mb": "Memory budget of the teacher cache in MiB. Each member's outputs "
                                "are kept when they fit; else only the ensemble's (m times smaller, "
                                "still exact at every temperature); over even that the teacher stays "
                                "online. 0: half the device's total memory on CUDA, a quarter of the "
                                "RAM on CPU, split evenly between the runs the queue places on "
                                "that device.",
    "distill.synthetic_temperature": "τ for the rows a `synthetic:` item of `data.extra` mixes into "
                                     "each minibatch (the real rows keep `temperature`); unset: "
                                     "`temperature`. The paper's released code used 1 for its GAN "
                                     "rows. Ignored, and left out of the run's identity, without a "
                                     "`synthetic:` item.",
    "eval.every": "Epochs between test evaluations. Unset: worked out per phase from its epochs, "
                  "every epoch up to 30 epochs, beyond that about 30 evaluations (every 10 at "
                  "300); the last epoch is always evaluated.",
    "eval.independent": "The paper's E12 control: also distil a student from an independent "
                        "teacher (same settings, other seeds) and report its agreement with this "
                        "run's teacher as `independent_*` metrics.",
    "eval.cka": "The paper's Table 1: also record linear CKA between the teacher and the student at "
                "each ResNet stage (`cka_stage1` … `cka_stage3`, on the first 2,000 test images).",
    "engine.compile": "Compile the training step's model with `torch.compile`. `reduce-overhead` (CUDA graphs) "
                      "drops each epoch's last, smaller batch, so every step has one shape and each phase "
                      "captures one graph; train metrics count the rows trained, evaluation every example. "
                      "Compiling is not part of a run's identity (spec hash, teacher key), except "
                      "`reduce-overhead`, whose dropped batches change what is trained.",
    "engine.sync_batch_norm": "With `kdtui run --nproc N` on CUDA: batch-norm statistics over every "
                              "process's rows (SyncBatchNorm) instead of each process's own.",
}

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table"}


# ---------------------------------------------------------------------------------------------
# Reading the model
# ---------------------------------------------------------------------------------------------

def _sections() -> list[tuple[str, type[BaseModel]]]:
    return [(name, info.annotation) for name, info in Spec.model_fields.items() if _is_section(info)]


def _is_section(info: FieldInfo) -> bool:
    return isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)


def _fields() -> Iterator[tuple[str, FieldInfo]]:
    """(dotted path, field) for every field: top-level ones first, then each section's."""
    for name, info in Spec.model_fields.items():
        if not _is_section(info):
            yield name, info
    for section, model in _sections():
        for name, info in model.model_fields.items():
            yield f"{section}.{name}", info


def field_paths() -> list[str]:
    return [path for path, _ in _fields()]


def undescribed_fields() -> list[str]:
    """Fields with neither a `description` nor an entry in MEANINGS."""
    return [path for path, info in _fields() if not (info.description or path in MEANINGS)]


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """(the bare type, every metadata object met on the way) through Annotated and Optional."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            metadata.extend(annotation.__metadata__)
            annotation = annotation.__origin__
            continue
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                annotation = rest[0]
                continue
        return annotation, metadata


def _describe_type(annotation: Any) -> tuple[str, list[str]]:
    """(type in words, the allowed-value rules) of an annotation."""
    bare, metadata = _unwrap(annotation)
    rules = [m.rule for m in metadata if isinstance(m, Rule) and m.rule]
    origin = typing.get_origin(bare)
    if origin is typing.Literal:
        choices = typing.get_args(bare)
        kinds = {type(c) for c in choices}
        return _TYPE_NAMES.get(kinds.pop(), "value") if len(kinds) == 1 else "value", \
            ["one of " + ", ".join(f"`{_toml(c)}`" for c in choices)] + rules
    if isinstance(bare, type) and issubclass(bare, enum.Enum):
        return "string", ["one of " + ", ".join(f"`{m.value}`" for m in bare)] + rules
    if origin is list:
        (item,) = typing.get_args(bare) or (Any,)
        item_type, item_rules = _describe_type(item)
        return f"list of {item_type}s", [f"each {r}" for r in item_rules] + rules
    if origin is dict:
        return "table", rules
    return _TYPE_NAMES.get(bare, getattr(bare, "__name__", str(bare))), rules


def _toml(value: Any) -> str:
    """A value as a spec would write it."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _default(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)


def _resolved_by_dataset() -> dict[str, Spec]:
    return {dataset: Spec.model_validate({"data": {"dataset": dataset}}).resolved()
            for dataset in DATASET_DEFAULTS}


def _value_at(spec: Spec, path: str) -> Any:
    value: Any = spec
    for part in path.split("."):
        value = getattr(value, part)
    return value


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_spec_reference() -> str:
    """The whole of docs/spec.md."""
    resolved = _resolved_by_dataset()
    datasets = list(resolved)
    per_dataset: list[str] = []    # fields whose default is filled in from the data set

    def default_text(path: str, info: FieldInfo) -> str:
        value = _default(info)
        if value is not None:
            return f"`{_toml(value)}`"
        if path == "sweep":
            return "none"
        values = [_value_at(resolved[d], path) for d in datasets]
        if all(v is None for v in values):
            return "unset"
        per_dataset.append(path)
        if path.startswith("student.") and all(
                v == _value_at(resolved[d], "teacher." + path.split(".", 1)[1]) for v, d in zip(values, datasets)):
            return "the teacher's"
        if all(v == values[0] for v in values):
            return f"`{_toml(values[0])}` (resolved)"
        return "by data set (below)"

    out = [
        "# Spec reference",
        "",
        "<!-- Generated by `python -m kdtui.core.spec_docs > docs/spec.md` from kdtui/core/spec.py; "
        "do not edit by hand (tests/test_docs.py checks it). -->",
        "",
        "A spec is one TOML file. Every field below has a default, so `name = \"x\"` alone is a valid "
        "spec. Keys are checked: an unknown key is an error that suggests the closest name, and a "
        "bad value is reported with its field, the value and what is allowed (exit code 2). Types are "
        "strict: `\"10\"` is not an integer, though an integer is accepted where a number is expected.",
        "",
        "A default shown as *by data set*, *the teacher's* or *(resolved)* is left unset in the spec as "
        "written and filled in when the spec is resolved (`Spec.resolved()`): good batch sizes, learning rates, "
        "epochs and augmentations depend on the data set, and the paper's CIFAR settings do not train "
        "on the 1,437 `digits` images. A value you write always wins. The resolved spec, with every "
        "value actually used, is saved with each run as `spec.toml`.",
        "",
    ]
    groups: list[tuple[str, list[tuple[str, FieldInfo]]]] = [("Top level", [])]
    for path, info in _fields():
        section = path.split(".", 1)[0] if "." in path else None
        if section is None:
            groups[0][1].append((path, info))
        else:
            if groups[-1][0] != f"[{section}]":
                groups.append((f"[{section}]", []))
            groups[-1][1].append((path, info))
    for title, fields in groups:
        out += [f"## {title}", "", _row(["field", "type", "default", "allowed", "meaning"]),
                "|---|---|---|---|---|"]
        for path, info in fields:
            kind, rules = _describe_type(info.annotation)
            kind_rules = [m.rule for m in info.metadata if isinstance(m, Rule) and m.rule]
            meaning = info.description or MEANINGS.get(path, "")
            allowed = "; ".join(kind_rules + rules) or ("`true`, `false`" if kind == "boolean" else "—")
            out.append(_row([f"`{path}`", kind, default_text(path, info), allowed, meaning]))
        out.append("")

    out += ["## Defaults by data set", "",
            "What `Spec.resolved()` fills in for a field left unset, per `data.dataset`. `digits` uses "
            "values measured on a 2-core CPU (the paper's CIFAR values reach only chance accuracy "
            "there); the MNIST-like sets a LeNet-5 setting; CIFAR, SVHN and image folders the "
            "paper's appendix. Digits and house numbers are not mirror-symmetric, so their "
            "augmentation has no horizontal flip.",
            "",
            _row(["field", *[f"`{d}`" for d in datasets]]),
            "|---|" + "---|" * len(datasets)]
    for path in per_dataset:
        out.append(_row([f"`{path}`", *(_toml(_value_at(resolved[d], path)) for d in datasets)]))
    out.append("")
    out += ["## Sweeps", "",
            "Any field above except `name` may be a `[sweep]` key, written as its dotted path "
            "(quoted when it has a dot: `\"distill.temperature\" = [1.0, 4.0]`). Every point is "
            "validated before any run is created. Runs that differ only by `seed` share a group "
            "hash, and comparisons and reports show them as mean ± std.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8")
    sys.stdout.write(render_spec_reference())
