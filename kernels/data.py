"""Data sets as whole uint8 tensors, loaded once.

Every data set is read into one (N, C, H, W) uint8 tensor per split plus an int64 label vector, on
the CPU; the engine moves them to the run's device and slices batches out of a permutation (see
docs/architecture.md, "Speed"). PIL is only touched while loading an image folder.

The torchvision data sets go through torchvision's own classes (so their on-disk layout, checksums
and downloads are torchvision's), but we read the classes' `.data` / `.targets` arrays directly
instead of indexing them sample by sample.

Resizing (`image_size`) and channel conversion happen once here, never per batch.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .catalog import DATASETS, ExtraItem, is_synthetic, parse_extra
from .config import DataConfig

DIGITS_SIZE = 28           # digits are 8x8; LeNet-5 and friends expect 28x28
DIGITS_FILE = Path(__file__).with_name("datasets") / "digits.npz"
IMAGEFOLDER_SIZE = 32      # default size for a user's image folder
_CHUNK = 4096              # images per float chunk when resizing / converting / measuring
_LUMA = (0.299, 0.587, 0.114)   # ITU-R BT.601 weights for RGB -> grey


class DataError(Exception):
    """User-facing, one line: names the folder looked in and how to provide the data."""


# ----------------------------------------------------------------------------------------------
# Containers


@dataclass(eq=False)
class ImageSet:
    images: torch.Tensor   # uint8, (N, C, H, W), contiguous
    labels: torch.Tensor   # int64 (N,), -1 for unlabelled rows (distillation-only extra data)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.int64, device=self.images.device)
        return ImageSet(self.images[index], self.labels[index])

    def to(self, device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    @staticmethod
    def concat(sets: Iterable["ImageSet"]) -> "ImageSet":
        sets = list(sets)
        if not sets:
            raise ValueError("ImageSet.concat needs at least one set")
        shape = tuple(sets[0].images.shape[1:])
        for s in sets[1:]:
            if tuple(s.images.shape[1:]) != shape:
                raise ValueError(f"cannot concatenate images of shape {tuple(s.images.shape[1:])} "
                                 f"with {shape}")
        if len(sets) == 1:
            return ImageSet(sets[0].images, sets[0].labels)
        return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]))


@dataclass(eq=False)
class Dataset:
    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    mean: tuple[float, ...]   # per channel, in [0,1] pixel units, for normalising x/255
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[2])


# ----------------------------------------------------------------------------------------------
# Tensor helpers (whole-set, chunked so a big resize never holds the whole set in float)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for i in range(0, n, _CHUNK):
        x = images[i:i + _CHUNK].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i:i + _CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    c = images.shape[1]
    if c == 4:                      # RGBA: the alpha channel carries no class information
        images, c = images[:, :3], 3
    if c == channels:
        return images.contiguous()
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for i in range(0, images.shape[0], _CHUNK):
            grey = (images[i:i + _CHUNK].float() * weights).sum(dim=1, keepdim=True)
            out[i:i + _CHUNK] = grey.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")


def _conform(images: torch.Tensor, like: "Dataset") -> torch.Tensor:
    return _resize(_to_channels(images, like.in_channels), like.image_size)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, images.shape[0], _CHUNK):
        x = images[i:i + _CHUNK].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp(min=0).sqrt().clamp(min=1e-3)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _root(root: str | Path) -> Path:
    return Path(root).expanduser()


# ----------------------------------------------------------------------------------------------
# Loading


# name -> (torchvision class name, what torchvision looks for under root)
_TORCHVISION = {
    "mnist": ("MNIST", "MNIST/raw/"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/"),
    "emnist": ("EMNIST", "EMNIST/raw/"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/"),
    "cifar100": ("CIFAR100", "cifar-100-python/"),
    "svhn": ("SVHN", "train_32x32.mat"),
}
# `emnist` as the data set is the class-balanced split (47 classes, 112,800 training images); as extra
# distillation data it is `byclass`, the whole of EMNIST (697,932 training images), which the paper's
# E1 distils on in 25 / 50 / 100% parts.
_EMNIST_SPLIT = "balanced"
_EMNIST_EXTRA_SPLIT = "byclass"


def _torchvision_split(name: str, root: Path, download: bool, train: bool, emnist_split: str = _EMNIST_SPLIT):
    """(images uint8 NCHW, labels int64, num_classes) of one split, through torchvision's class.

    EMNIST images come upright, the way MNIST's are: the files store each image transposed and
    torchvision hands them over as stored, so they are transposed back here (the paper's code feeds
    them as stored, transposed; a LeNet-5 teacher trained on MNIST sees upright digits here)."""
    import torchvision.datasets as tvd

    cls_name, looks_for = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    try:
        if name == "emnist":
            ds = cls(str(root), split=emnist_split, train=train, download=download)
        elif name == "svhn":
            ds = cls(str(root), split="train" if train else "test", download=download)
        else:
            ds = cls(str(root), train=train, download=download)
    except ImportError as e:
        raise DataError(f"{name} needs {e.name or 'an optional package'} to read its files; "
                        f"install it (pip install {e.name or 'scipy'})") from None
    except (RuntimeError, OSError) as e:
        if download:
            reason = _one_line(getattr(e, "reason", None) or e)
            raise DataError(f"could not download {name} into {root}: {reason}; "
                            f"copy the files there or check the network") from None
        where = root / looks_for
        if where.exists():
            raise DataError(f"{name} files in {where} are incomplete or corrupted (download = false); "
                            f"replace them, or delete them and set [data] download = true") from None
        raise DataError(f"{name} not found in {root} (download = false); set [data] download = true, "
                        f"or put the files torchvision's {cls_name} expects there ({looks_for})") from None
    except (ValueError, TypeError, KeyError, IndexError, EOFError, AssertionError,
            pickle.UnpicklingError) as e:
        raise DataError(f"could not read {name} from {root}: {_one_line(e)}; "
                        f"replace the files with torchvision's {cls_name} originals") from None

    if name == "svhn":
        images = torch.from_numpy(np.ascontiguousarray(ds.data))            # already (N, 3, 32, 32)
        labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
        num_classes = 10
    elif name in ("cifar10", "cifar100"):
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        num_classes = len(ds.classes)
    else:
        data = ds.data
        if name == "emnist":          # EMNIST's idx files hold each image transposed
            data = data.transpose(1, 2)
        images = data.unsqueeze(1).contiguous()
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        num_classes = len(ds.classes)
    return images.to(torch.uint8), labels, num_classes


def _digits(image_size: int) -> tuple[ImageSet, ImageSet, int]:
    """The 1,797 8x8 UCI digits shipped in the package (kernels/datasets/digits.npz, see
    docs/data.md): pixel values 0..16, labels, and the indices of the fixed 20 % test split."""
    with np.load(DIGITS_FILE) as stored:
        pixels = torch.from_numpy(stored["images"].astype(np.float32))       # (1797, 8, 8), 0..16
        labels = torch.from_numpy(stored["labels"].astype(np.int64))
        test_idx = torch.from_numpy(stored["test_index"].astype(np.int64))  # sorted
    images = (pixels * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    images = _resize(images, image_size or DIGITS_SIZE)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_idx] = True
    train_idx = torch.nonzero(~is_test).squeeze(1)
    return (ImageSet(images[train_idx], labels[train_idx]),
            ImageSet(images[test_idx], labels[test_idx]), 10)


def _read_folder(folder: Path, size: int, class_to_idx: dict[str, int] | None):
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"no images found in {folder}: {_one_line(e)}; put one sub-folder of images "
                        f"per class there") from None
    mapping = class_to_idx or ds.class_to_idx
    missing = [c for c in ds.classes if c not in mapping]
    if missing:
        raise DataError(f"class folder(s) {', '.join(missing[:5])} in {folder} have no counterpart "
                        f"in the train folder; use the same class sub-folders in train/ and test/")
    images = np.empty((len(ds.samples), size, size, 3), dtype=np.uint8)
    labels = np.empty(len(ds.samples), dtype=np.int64)
    from PIL import Image

    for i, (path, target) in enumerate(ds.samples):
        try:
            img = ds.loader(path).convert("RGB")
        except OSError as e:
            raise DataError(f"could not read image {path}: {_one_line(e)}") from None
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        images[i] = np.asarray(img, dtype=np.uint8)
        labels[i] = mapping[ds.classes[target]]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return ImageSet(tensor, torch.from_numpy(labels)), mapping


def _imagefolder(root: Path, image_size: int) -> tuple[ImageSet, ImageSet, int]:
    size = image_size or IMAGEFOLDER_SIZE
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(f"imagefolder needs {train_dir} and {root / 'test'} (or {root / 'val'}), "
                        f"each with one sub-folder of images per class; set [data] root to that folder")
    train, mapping = _read_folder(train_dir, size, None)
    test, _ = _read_folder(test_dir, size, mapping)
    return train, test, len(mapping)


def load_dataset(name: str, root: str | Path, download: bool, image_size: int = 0) -> Dataset:
    """Load a data set's train and test splits as uint8 tensors, resized once to `image_size`.

    `image_size` 0 keeps the native size (digits are served at 28x28).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if image_size < 0:
        raise DataError(f"image_size must be 0 (native) or a positive size, got {image_size}")
    path = _root(root)
    if name == "digits":
        train, test, num_classes = _digits(image_size)
    elif name == "imagefolder":
        train, test, num_classes = _imagefolder(path, image_size)
    else:
        tr_images, tr_labels, num_classes = _torchvision_split(name, path, download, train=True)
        te_images, te_labels, _ = _torchvision_split(name, path, download, train=False)
        if image_size:
            tr_images, te_images = _resize(tr_images, image_size), _resize(te_images, image_size)
        train, test = ImageSet(tr_images, tr_labels), ImageSet(te_images, te_labels)
    mean, std = _channel_stats(train.images)
    return Dataset(name, train, test, num_classes, mean, std)


# ----------------------------------------------------------------------------------------------
# Subsets and splits


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` examples keeping class proportions (largest-remainder rounding).

    Every class gets at least one example when n >= number of classes. Rows labelled -1 are never
    picked. Deterministic in `seed`.
    """
    labels = torch.as_tensor(labels).cpu().to(torch.int64)
    valid = (labels >= 0).nonzero().squeeze(1)
    if n >= len(valid):
        return valid.clone()
    if n <= 0:
        return torch.empty(0, dtype=torch.int64)
    g = torch.Generator().manual_seed(int(seed))
    classes, counts = torch.unique(labels[valid], return_counts=True)
    quota = counts.double() * n / len(valid)
    alloc = quota.floor().long()
    if n >= len(classes):
        alloc = alloc.clamp(min=1)
    alloc = torch.minimum(alloc, counts)
    # Ties between equal remainders are broken at random (seeded), not by class order.
    jitter = torch.rand(len(classes), generator=g, dtype=torch.float64) * 1e-9
    while int(alloc.sum()) < n:
        room = (alloc < counts)
        key = torch.where(room, quota - alloc + jitter, torch.full_like(quota, -math.inf))
        alloc[int(key.argmax())] += 1
    while int(alloc.sum()) > n:       # only after the at-least-one clamp
        spare = alloc > 1
        key = torch.where(spare, alloc - quota + jitter, torch.full_like(quota, -math.inf))
        alloc[int(key.argmax())] -= 1
    picked = []
    for cls, k in zip(classes.tolist(), alloc.tolist()):
        if k == 0:
            continue
        members = valid[labels[valid] == cls]
        picked.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(picked).sort().values


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of range(n) into D0 (round(n * fraction) indices) and D1 (the rest), each sorted."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    k = int(round(n * fraction))
    return perm[:k].sort().values, perm[k:].sort().values


# ----------------------------------------------------------------------------------------------
# Extra distillation data


def _extra_error(item: str, why: str) -> DataError:
    return DataError(f"extra {item!r}: {why}")


def _parse_extra(item: str) -> ExtraItem:
    # The spec validated the item with the same rule; parsing again serves callers that skip the spec.
    try:
        return parse_extra(str(item))
    except ValueError as e:
        raise _extra_error(item, str(e)) from None


def _extra_noise(distill: ImageSet, p: float, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(int(seed))
    images, labels = distill.images.cpu().clone(), distill.labels.cpu().clone()
    replace = torch.rand(len(images), generator=g) < p
    count = int(replace.sum())
    if count:
        images[replace] = torch.randint(0, 256, (count, *images.shape[1:]), generator=g, dtype=torch.uint8)
        labels[replace] = -1
    return ImageSet(images, labels).to(distill.images.device)


def _extra_dataset(kind: str, item: str, n: int, like: Dataset, root, download: bool,
                   seed: int) -> torch.Tensor:
    images, _, _ = _torchvision_split(kind, _root(root), download, train=True, emnist_split=_EMNIST_EXTRA_SPLIT)
    if n > len(images):
        raise _extra_error(item, f"{kind} has only {len(images)} training images")
    g = torch.Generator().manual_seed(int(seed))
    index = torch.randperm(len(images), generator=g)[:n].sort().values
    return _conform(images[index], like)


def _extra_tensors(item: str, arg: str, like: Dataset) -> torch.Tensor:
    path = Path(arg).expanduser()
    expected = "expected a uint8 tensor (N, C, H, W) saved with torch.save, or a dict with key 'images'"
    if not path.is_file():
        raise DataError(f"extra {item!r}: no file at {path}; {expected}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (pickle, zip, RuntimeError) for bad files
        raise DataError(f"extra {item!r}: could not load {path} ({_one_line(e, 120)}); {expected}") from None
    if isinstance(obj, dict):
        obj = obj.get("images")
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"extra {item!r}: {path} holds no tensor; {expected}")
    if obj.dim() == 3:                 # (N, H, W): single-channel images
        obj = obj.unsqueeze(1)
    if obj.dtype != torch.uint8 or obj.dim() != 4 or obj.shape[1] not in (1, 3, 4):
        raise DataError(f"extra {item!r}: {path} holds a {obj.dtype} tensor of shape {tuple(obj.shape)}; "
                        f"{expected} with C = 1 or 3")
    return _conform(obj, like)


def apply_extra(distill: ImageSet, item: str, like: Dataset, root, download: bool, seed: int) -> ImageSet:
    """Apply one `[data] extra` item to the distillation set.

    "<dataset>:N" appends N random training images of another data set, "tensors:PATH" appends a
    saved uint8 tensor; both are converted to `like`'s channels and size and labelled -1.
    "noise:p" replaces each image by uniform noise with probability p (label -1 where replaced).
    """
    parsed = _parse_extra(item)
    if parsed.kind == "synthetic":
        raise _extra_error(item, "a synthetic pool is mixed into each minibatch, not appended (synthetic_source)")
    if parsed.kind == "noise":
        return _extra_noise(distill, parsed.value, seed)
    if parsed.kind == "tensors":
        images = _extra_tensors(item, parsed.value, like)
    else:
        images = _extra_dataset(parsed.kind, item, parsed.value, like, root, download, seed)
    extra = ImageSet(images, torch.full((len(images),), -1, dtype=torch.int64))
    return ImageSet.concat([distill, extra.to(distill.images.device)])


def synthetic_source(cfg: DataConfig, like: Dataset) -> tuple[ExtraItem, torch.Tensor] | None:
    """The run's `synthetic:PATH:ratio=S:R` item (at most one) and its images, conformed to `like`;
    None without one. These images never join the distillation set: kernels.synthetic draws them
    into each student minibatch."""
    items = [item for item in cfg.extra if is_synthetic(item)]
    if not items:
        return None
    if len(items) > 1:
        raise _extra_error(items[1], "a run mixes one synthetic pool at most; merge the files into one")
    parsed = _parse_extra(items[0])
    return parsed, _extra_tensors(items[0], parsed.value, like)


# ----------------------------------------------------------------------------------------------
# The splits a run uses


def build_splits(cfg: DataConfig, seed: int = 0) -> tuple[Dataset, ImageSet, ImageSet]:
    """(dataset, teacher training set, distillation set) as `cfg` describes them.

    `seed` is the data seed, separate from the run seed, so that every run of a sweep trains and
    distils on the same examples unless a caller asks otherwise.
    """
    dataset = load_dataset(cfg.dataset, cfg.root, cfg.download, cfg.image_size)
    train = dataset.train
    if cfg.split > 0:
        parts = split_indices(len(train), cfg.split, seed)
        wanted = (cfg.teacher_split, *cfg.student_splits)
        bad = [s for s in wanted if s not in (0, 1)]
        if bad:
            raise DataError(f"split {cfg.split} makes splits 0 and 1 only; teacher_split and "
                            f"student_splits must name them, got {bad[0]}")
        if not cfg.student_splits:
            raise DataError("student_splits is empty; name at least one split, e.g. [1] or [0, 1]")
        teacher = train.subset(parts[cfg.teacher_split])
        students = list(dict.fromkeys(cfg.student_splits))   # [0, 0] means D0 once
        distill = ImageSet.concat(train.subset(parts[s]) for s in students)
    else:
        # Without a split the student distils on the whole training set, also when the teacher
        # only saw a subset of it (the paper's E1: teacher on 200 MNIST images, student on 60k).
        teacher, distill = train, train
    if cfg.teacher_subset > 0:
        # subset_seed > 0 (the run seed, for per-seed subsets) draws another subset per run seed.
        teacher = teacher.subset(stratified_subset(teacher.labels, cfg.teacher_subset, seed + cfg.subset_seed))
    if cfg.extra_only:
        # The student distils on the extra data alone (E1's EMNIST arms): start from no rows.
        distill = distill.subset(torch.empty(0, dtype=torch.int64))
    for i, item in enumerate(cfg.extra):
        # Each item draws from its own seeded stream (by position): appending an item leaves the
        # earlier ones' draws unchanged. A synthetic pool is mixed per minibatch (synthetic_source).
        if not is_synthetic(item):
            distill = apply_extra(distill, item, dataset, cfg.root, cfg.download, seed=seed * 1000 + 17 + i)
    if not len(distill):
        raise DataError("the distillation set is empty (data.extra_only with only noise or synthetic "
                        "items); add an extra data set or set extra_only = false")
    return dataset, teacher, distill
