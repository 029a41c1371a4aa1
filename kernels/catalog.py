"""The names the engine understands, importable without torch.

The spec validator and the terminal app need these lists but must start fast, so they live here
rather than in the torch modules; each torch module checks its own registry against them in tests.
"""
from __future__ import annotations

import re
from typing import NamedTuple

MODELS = ("lenet5", "resnet20", "resnet56", "resnet110", "vgg16")
NORMS = ("batch", "layer")
DATASETS = ("digits", "mnist", "fashion-mnist", "emnist", "cifar10", "cifar100", "svhn", "imagefolder")
AUGMENTATIONS = ("crop", "hflip", "vflip", "rotate", "colorjitter", "mixup", "cutmix", "noise", "uniform-noise")
LOSSES = ("kl", "reverse-kl", "symmetric-kl", "brier", "hard")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
INITS = ("random", "teacher-init", "interpolate")
TEACHER_CACHE = ("auto", "off")
# "colorjitter:S" sets the jitter's strength: brightness, contrast and saturation factors uniform in
# [1 - S, 1 + S] and a hue shift uniform in [-S, S]; plain "colorjitter" is the paper's S = 0.2.
JITTER_DEFAULT = 0.2
JITTER_MAX = 0.5   # a hue shift beyond half a turn wraps round
# "uniform-noise:p" replaces each image of every batch by uniform pixel noise with probability p
# (redrawn each batch: the paper's noise arm, App. A.1); plain "uniform-noise" is the paper's p = 0.2.
# kind -> (value when not written, largest value): the augmentations that take a parameter.
AUGMENT_PARAMETERS = {"colorjitter": (JITTER_DEFAULT, JITTER_MAX), "uniform-noise": (0.2, 1.0)}
_PARAMETER_FORMS = "'colorjitter:S' or 'uniform-noise:p'"
COMPILE_MODES = ("off", "default", "max-autotune", "reduce-overhead")  # reduce-overhead: CUDA graphs
# Extra distillation data: "<dataset>:N" appends N unlabelled images of another data set,
# "noise:p" replaces each distillation image by uniform noise with probability p,
# "tensors:PATH" appends a user's uint8 image tensor (e.g. GAN samples) once, as a fixed pool;
# "synthetic:PATH:ratio=S:R" instead mixes S fresh rows drawn from that tensor into each student
# minibatch per R real rows, unaugmented (the paper's GAN arm, App. A.1; kernels.synthetic).
EXTRA_KINDS = ("noise", "tensors", "synthetic") + tuple(d for d in DATASETS if d not in ("digits", "imagefolder"))
_EXTRA_FORMS = "'<dataset>:N', 'noise:p', 'tensors:PATH' or 'synthetic:PATH:ratio=S:R'"
_DECIMAL = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_SYNTHETIC = re.compile(rf"(.+?)\s*:\s*ratio\s*=\s*({_DECIMAL})\s*:\s*({_DECIMAL})")
SYNTHETIC_MAX_RATIO = 4.0   # synthetic rows per real row: a batch at most 5 times its real rows


class ExtraItem(NamedTuple):
    """One parsed `[data] extra` item: its kind, its argument's text and what that text means."""
    kind: str
    arg: str                    # as written, minus surrounding whitespace (synthetic: normalised)
    value: float | int | str    # noise: the probability p; a data set: the count N; tensors, synthetic: the path
    ratio: tuple[float, float] | None = None   # synthetic: (S, R), S synthetic rows per R real rows

    @property
    def canonical(self) -> str:
        """The item as the spec stores it, so that "svhn: 100" and "svhn:100" hash alike."""
        return f"{self.kind}:{self.arg}"


def parse_extra(item: str) -> ExtraItem:
    """The one rule for an extra item (spec validation and data loading both call it).

    Checks all that can be checked without the data; raises ValueError with a one-line message that
    does not repeat the item, since each caller names it in its own way (field path or data error).
    Whitespace around the kind and the argument is dropped: in a TOML string it is never meant.
    """
    kind, sep, arg = item.partition(":")
    kind, arg = kind.strip(), arg.strip()
    if not sep or not kind or not arg:
        raise ValueError(f"must look like {_EXTRA_FORMS}")
    if kind not in EXTRA_KINDS:
        raise ValueError(f"unknown extra data kind '{kind}'; allowed: {', '.join(EXTRA_KINDS)}")
    if kind == "tensors":
        return ExtraItem(kind, arg, arg)
    if kind == "synthetic":
        return _parse_synthetic(arg)
    # Plain ASCII numbers only: float() and int() also take "nan", "1_000" and other scripts' digits.
    if kind == "noise":
        if not (re.fullmatch(_DECIMAL, arg) and 0.0 <= float(arg) <= 1.0):
            raise ValueError("'noise:p' needs a probability p between 0 and 1")
        return ExtraItem(kind, arg, float(arg))
    if not (re.fullmatch(r"[0-9]+", arg) and int(arg) >= 1):
        raise ValueError(f"'{kind}:N' needs a whole number of images N >= 1")
    return ExtraItem(kind, arg, int(arg))


def _parse_synthetic(arg: str) -> ExtraItem:
    match = _SYNTHETIC.fullmatch(arg)
    if not match:
        raise ValueError("'synthetic:PATH:ratio=S:R' needs a file and S synthetic rows per R real rows "
                         "in every minibatch, e.g. ratio=1:4")
    path, synthetic, real = match.group(1), float(match.group(2)), float(match.group(3))
    if not (synthetic > 0 and real > 0 and synthetic / real <= SYNTHETIC_MAX_RATIO):
        raise ValueError(f"'synthetic:PATH:ratio=S:R' needs S > 0, R > 0 and S/R <= {SYNTHETIC_MAX_RATIO:g}")
    return ExtraItem("synthetic", f"{path}:ratio={synthetic:g}:{real:g}", path, (synthetic, real))


def is_synthetic(item: str) -> bool:
    """Whether an extra item is a per-minibatch synthetic mix (without parsing the rest of it)."""
    return str(item).split(":")[0].strip() == "synthetic"


def parse_augmentation(name: str) -> tuple[str, float | None]:
    """(kind, parameter) of one augmentation name; the parameter is None unless written
    ("colorjitter:0.3", "uniform-noise:0.5"; see AUGMENT_PARAMETERS).

    Raises ValueError with a one-line message (the callers name the field). The spec stores
    `canonical_augmentation(name)`, so "colorjitter:0.2" and "colorjitter" hash alike.
    """
    kind, sep, arg = str(name).partition(":")
    kind, arg = kind.strip(), arg.strip()
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation; allowed: {', '.join(AUGMENTATIONS)} (and {_PARAMETER_FORMS})")
    if not sep:
        return kind, None
    if kind not in AUGMENT_PARAMETERS:
        raise ValueError(f"'{kind}' takes no parameter; only {_PARAMETER_FORMS} do")
    largest = AUGMENT_PARAMETERS[kind][1]
    if not (re.fullmatch(_DECIMAL, arg) and 0.0 <= float(arg) <= largest):
        raise ValueError(f"'{kind}:x' needs a value x between 0 and {largest:g}")
    return kind, float(arg)


def augmentation_parameter(name: str) -> float | None:
    """The parameter an augmentation runs with (its default when not written); None if it takes none."""
    kind, value = parse_augmentation(name)
    if kind not in AUGMENT_PARAMETERS:
        return None
    return AUGMENT_PARAMETERS[kind][0] if value is None else value


def canonical_augmentation(name: str) -> str:
    """The name as the spec stores it: a parameter at its default is not written ('colorjitter')."""
    kind, value = parse_augmentation(name)
    if value is None or value == AUGMENT_PARAMETERS[kind][0]:
        return kind
    return f"{kind}:{value:g}"
