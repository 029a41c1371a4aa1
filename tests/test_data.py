"""kernels.data: whole-tensor data sets, splits, subsets and extra distillation data.

No network: data sets are `digits` (shipped inside kdtui) or tiny files written here in the
real on-disk formats and read back through torchvision's real dataset classes.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from kdtui.core.spec import SpecError, spec_from_dict
from kernels import data
from kernels.catalog import DATASETS, EXTRA_KINDS
from kernels.config import DataConfig
from kernels.data import (
    DataError,
    Dataset,
    ImageSet,
    apply_extra,
    build_splits,
    load_dataset,
    split_indices,
    stratified_subset,
)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", "~/unused-by-digits", download=False)


def _fake_set(n: int = 200, channels: int = 1, size: int = 8, classes: int = 10, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    train = ImageSet(images, labels)
    return Dataset("fake", train, train.subset(torch.arange(min(n, 10))), classes,
                   (0.5,) * channels, (0.25,) * channels)


# ----------------------------------------------------------------------------------------------
# On-disk formats, written by hand


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: big-endian magic (0x08 = uint8, then the number of dims), dims, bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_cifar100(root: Path, n_train: int, n_test: int):
    """cifar-100-python/{train,test,meta} as the real pickles (rows of 3072 bytes, CHW order)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, size=n)]
        # The originals are Python 2 pickles; torchvision reads them with encoding="latin1", which
        # turns their keys into str, so str keys here are what torchvision sees from the real files.
        entry = {
            "filenames": [f"img_{i}.png" for i in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[split] = (data.reshape(n, 3, 32, 32), np.array(fine))
    meta = {"fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder, written


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    """A tiny CIFAR-100 folder; torchvision's CIFAR100 checks files against the real md5s, so only
    those md5 entries are pointed at the files written here (the class itself is unchanged)."""
    from torchvision.datasets import CIFAR100

    folder, written = _write_cifar100(tmp_path, n_train=12, n_test=5)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})
    return tmp_path, written


def _write_mnist(root: Path, n_train: int, n_test: int, labels_mod: int = 10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % labels_mod).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (images, labels)
    return written


# ----------------------------------------------------------------------------------------------
# Loading


def test_digits_shapes_and_types(digits):
    assert digits.name == "digits"
    assert digits.train.images.shape == (1437, 1, 28, 28)
    assert digits.test.images.shape == (360, 1, 28, 28)
    for part in (digits.train, digits.test):
        assert part.images.dtype == torch.uint8 and part.images.is_contiguous()
        assert part.labels.dtype == torch.int64
        assert int(part.labels.min()) >= 0 and int(part.labels.max()) < 10
    assert digits.num_classes == 10
    assert set(digits.train.labels.tolist()) == set(range(10))
    assert digits.in_channels == 1 and digits.image_size == 28
    assert int(digits.train.images.max()) > 200        # scaled from 0..16 to the full byte range
    assert len(digits.mean) == len(digits.std) == 1
    assert 0 < digits.mean[0] < 1 and 0 < digits.std[0] < 1


def test_digits_image_size_and_fixed_split(digits):
    small = load_dataset("digits", "unused", download=False, image_size=16)
    assert small.train.images.shape == (1437, 1, 16, 16)
    assert torch.equal(small.train.labels, digits.train.labels)   # same fixed 80/20 split


def test_cifar100_through_torchvision(cifar100_root):
    root, written = cifar100_root
    ds = load_dataset("cifar100", root, download=False)
    assert ds.num_classes == 100
    assert ds.train.images.shape == (12, 3, 32, 32) and ds.test.images.shape == (5, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.is_contiguous()
    for part, key in ((ds.train, "train"), (ds.test, "test")):
        images, labels = written[key]
        assert torch.equal(part.images, torch.from_numpy(images))
        assert part.labels.tolist() == labels.tolist()
    assert len(ds.mean) == 3
    # download = true does not download when the files are already there (no network in tests).
    again = load_dataset("cifar100", root, download=True, image_size=16)
    assert again.train.images.shape == (12, 3, 16, 16)


def test_mnist_idx_through_torchvision(tmp_path):
    written = _write_mnist(tmp_path, n_train=30, n_test=7)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.train.images.shape == (30, 1, 28, 28) and ds.test.images.shape == (7, 1, 28, 28)
    assert torch.equal(ds.train.images[:, 0], torch.from_numpy(written["train"][0]))
    assert ds.test.labels.tolist() == written["t10k"][1].tolist()
    assert ds.num_classes == 10


def test_emnist_orientation_fixed(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[:, 0, 5] = 255               # stored transposed: the true pixel is row 5, column 0
    for split in ("train", "test"):
        _write_idx(raw / f"emnist-balanced-{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"emnist-balanced-{split}-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
    ds = load_dataset("emnist", tmp_path, download=False)
    assert ds.num_classes == 47
    assert int(ds.train.images[0, 0, 5, 0]) == 255 and int(ds.train.images[0, 0, 0, 5]) == 0


def test_missing_dataset_one_line_error(tmp_path):
    root = tmp_path / "nothing-here"
    for name in ("cifar100", "mnist", "svhn"):
        with pytest.raises(DataError) as err:
            load_dataset(name, root, download=False)
        message = str(err.value)
        assert "\n" not in message
        assert str(root) in message and name in message and "download = true" in message


def test_root_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write_mnist(tmp_path / "data", n_train=3, n_test=2)
    assert len(load_dataset("mnist", "~/data", download=False).train) == 3


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise URLError("no network in tests")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path, download=True)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"could not download cifar10 into {tmp_path}")
    assert "no network in tests" in message


def test_imagefolder(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 1)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 12), colour).save(folder / f"{i}.png")
    Image.new("L", (40, 40), 128).save(tmp_path / "train" / "dog" / "grey.png")   # converted to RGB
    ds = load_dataset("imagefolder", tmp_path, download=False)
    assert ds.train.images.shape == (7, 3, 32, 32) and ds.test.images.shape == (2, 3, 32, 32)
    assert ds.num_classes == 2
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert ds.train.images[0, :, 16, 16].tolist() == [255, 0, 0]
    assert ds.test.images[1, :, 16, 16].tolist() == [0, 0, 255]
    with pytest.raises(DataError, match=str(tmp_path / "elsewhere" / "train")):
        load_dataset("imagefolder", tmp_path / "elsewhere", download=False)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", "x", download=False)


def test_every_catalog_dataset_has_a_loader():
    from kernels import data

    assert set(DATASETS) == set(data._TORCHVISION) | {"digits", "imagefolder"}
    assert set(EXTRA_KINDS) - {"noise", "tensors", "synthetic"} <= set(data._TORCHVISION)


# ----------------------------------------------------------------------------------------------
# Containers


def test_imageset_subset_concat_to():
    a = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4))
    b = ImageSet(torch.ones(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([-1, -1]))
    both = ImageSet.concat([a, b])
    assert len(both) == 6 and both.labels.tolist() == [0, 1, 2, 3, -1, -1]
    assert both.subset(torch.tensor([5, 0])).labels.tolist() == [-1, 0]
    assert both.to("cpu").images.device.type == "cpu"
    with pytest.raises(ValueError):
        ImageSet.concat([a, ImageSet(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1))])
    with pytest.raises(ValueError):
        ImageSet(torch.zeros(2, 1, 2, 2), torch.zeros(2))       # float images are not allowed


# ----------------------------------------------------------------------------------------------
# Subsets and splits


def test_stratified_subset(digits):
    labels = digits.train.labels
    index = stratified_subset(labels, 200, seed=0)
    assert len(index) == 200 and len(set(index.tolist())) == 200
    assert torch.equal(index, index.sort().values)
    counts = torch.bincount(labels[index], minlength=10)
    expected = torch.bincount(labels, minlength=10).double() * 200 / len(labels)
    assert (counts.double() - expected).abs().max() < 1.0
    assert torch.equal(index, stratified_subset(labels, 200, seed=0))
    assert not torch.equal(index, stratified_subset(labels, 200, seed=1))


def test_stratified_subset_small_and_skewed():
    labels = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)
    index = stratified_subset(labels, 10, seed=3)
    counts = torch.bincount(labels[index], minlength=3).tolist()
    assert sum(counts) == 10 and min(counts) >= 1 and counts[0] >= 7
    assert len(stratified_subset(labels, 2, seed=0)) == 2
    assert torch.equal(stratified_subset(labels, 500, seed=0), torch.arange(100))
    with_unlabelled = torch.cat([labels, torch.full((50,), -1)])
    assert int(with_unlabelled[stratified_subset(with_unlabelled, 20, seed=0)].min()) >= 0


def test_split_indices():
    d0, d1 = split_indices(101, 0.5, seed=7)
    assert len(d0) == round(101 * 0.5) and len(d0) + len(d1) == 101
    assert torch.equal(torch.cat([d0, d1]).sort().values, torch.arange(101))
    assert torch.equal(d0, d0.sort().values)
    again = split_indices(101, 0.5, seed=7)
    assert torch.equal(d0, again[0]) and torch.equal(d1, again[1])
    assert not torch.equal(d0, split_indices(101, 0.5, seed=8)[0])
    assert len(split_indices(10, 0.3, seed=0)[0]) == 3
    with pytest.raises(ValueError):
        split_indices(10, 1.5, seed=0)


# ----------------------------------------------------------------------------------------------
# Extra distillation data


def test_noise_replaces_about_p():
    like = _fake_set(n=2000)
    out = apply_extra(like.train, "noise:0.3", like, "unused", download=False, seed=5)
    assert len(out) == len(like.train)
    replaced = out.labels == -1
    assert 0.25 < replaced.float().mean().item() < 0.35
    changed = (out.images != like.train.images).flatten(1).any(1)
    assert torch.equal(changed, replaced)            # random 8x8 noise never equals the original
    assert torch.equal(out.labels[~replaced], like.train.labels[~replaced])
    again = apply_extra(like.train, "noise:0.3", like, "unused", download=False, seed=5)
    assert torch.equal(again.images, out.images) and torch.equal(again.labels, out.labels)
    other = apply_extra(like.train, "noise:0.3", like, "unused", download=False, seed=6)
    assert not torch.equal(other.labels, out.labels)
    assert torch.equal(apply_extra(like.train, "noise:0", like, "x", False, 0).labels, like.train.labels)
    assert (apply_extra(like.train, "noise:1", like, "x", False, 0).labels == -1).all()
    assert torch.equal(like.train.labels, torch.arange(2000) % 10)    # the input is not modified


def test_tensors_appended_and_converted(tmp_path):
    like = _fake_set(n=20, channels=1, size=8)
    rgb = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)
    rgb[:, 1] = 255                                          # pure green
    path = tmp_path / "gan.pt"
    torch.save(rgb, path)
    out = apply_extra(like.train, f"tensors:{path}", like, "unused", download=False, seed=0)
    assert out.images.shape == (25, 1, 8, 8)
    assert out.labels[20:].tolist() == [-1] * 5 and torch.equal(out.labels[:20], like.train.labels)
    assert torch.equal(out.images[:20], like.train.images)
    assert int(out.images[20:].float().mean().round()) == round(0.587 * 255)   # luminance

    torch.save({"images": torch.full((2, 1, 4, 4), 9, dtype=torch.uint8)}, tmp_path / "d.pt")
    rgb_like = _fake_set(n=3, channels=3, size=8)
    out = apply_extra(rgb_like.train, f"tensors:{tmp_path / 'd.pt'}", rgb_like, "x", False, 0)
    assert out.images.shape == (5, 3, 8, 8) and (out.images[3:] == 9).all()


@pytest.mark.parametrize("content", [b"not a tensor", None, "float"])
def test_tensors_bad_file(tmp_path, content):
    like = _fake_set(n=4)
    path = tmp_path / "bad.pt"
    if content is None:
        pass                                      # missing file
    elif content == "float":
        torch.save(torch.rand(2, 1, 8, 8), path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        apply_extra(like.train, f"tensors:{path}", like, "x", download=False, seed=0)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_dataset_extra_appends_unlabelled(cifar100_root, digits):
    root, _ = cifar100_root
    out = apply_extra(digits.train, "cifar100:5", digits, root, download=False, seed=0)
    assert out.images.shape == (1437 + 5, 1, 28, 28)
    assert (out.labels[1437:] == -1).all()
    again = apply_extra(digits.train, "cifar100:5", digits, root, download=False, seed=0)
    assert torch.equal(again.images, out.images)
    with pytest.raises(DataError, match="only 12"):
        apply_extra(digits.train, "cifar100:13", digits, root, download=False, seed=0)


# One table for both places that apply the extra-item rule: spec validation and data loading.
# Good items map to the form the spec stores; bad ones to words their one-line message must hold.
GOOD_EXTRA_ITEMS = [
    ("svhn:100", "svhn:100"),
    ("svhn: 100", "svhn:100"),
    (" cifar100 :1 ", "cifar100:1"),
    ("emnist:020", "emnist:020"),
    ("noise:0", "noise:0"),
    ("noise:1", "noise:1"),
    ("noise: .25", "noise:.25"),
    ("noise:5e-1", "noise:5e-1"),
    ("tensors:gan.pt", "tensors:gan.pt"),
    ("tensors: ~/my samples.pt ", "tensors:~/my samples.pt"),
    ("tensors:C:/x.pt", "tensors:C:/x.pt"),            # only the first colon separates
]
BAD_EXTRA_ITEMS = [
    ("noise", "must look like"),
    ("noise:", "must look like"),
    ("svhn:  ", "must look like"),
    (":100", "must look like"),
    ("tensors: ", "must look like"),
    ("imagenet:100", "unknown extra data kind 'imagenet'"),
    ("digits:100", "unknown extra data kind 'digits'"),
    ("SVHN:100", "unknown extra data kind 'SVHN'"),
    ("noise:1.5", "between 0 and 1"),
    ("noise:-0.1", "between 0 and 1"),
    ("noise:abc", "between 0 and 1"),
    ("noise:nan", "between 0 and 1"),
    ("noise:0.5:1", "between 0 and 1"),
    ("svhn:0", "N >= 1"),
    ("svhn:-3", "N >= 1"),
    ("svhn:lots", "N >= 1"),
    ("svhn:1.5", "N >= 1"),
    ("svhn:+5", "N >= 1"),
    ("svhn:1_000", "N >= 1"),
]


def _spec_verdict(item: str) -> str:
    """The stored item, or the reason after the field path, from spec validation."""
    try:
        spec = spec_from_dict({"data": {"extra": [item]}}, "s")
    except SpecError as e:
        head = f"s: data.extra[0] = {item!r}: "
        assert str(e).startswith(head) and "\n" not in str(e), str(e)
        return "bad: " + str(e)[len(head):]
    return spec.data.extra[0]


def _data_verdict(item: str) -> str:
    """The canonical item, or the reason after the item, from kernels.data's parsing."""
    try:
        parsed = data._parse_extra(item)
    except DataError as e:
        head = f"extra {item!r}: "
        assert str(e).startswith(head) and "\n" not in str(e), str(e)
        return "bad: " + str(e)[len(head):]
    return parsed.canonical


@pytest.mark.parametrize("item, canonical", GOOD_EXTRA_ITEMS)
def test_good_extra_item_same_verdict_in_spec_and_data(item, canonical):
    assert _spec_verdict(item) == canonical
    assert _data_verdict(item) == canonical


@pytest.mark.parametrize("item, words", BAD_EXTRA_ITEMS)
def test_bad_extra_item_same_verdict_in_spec_and_data(item, words):
    verdict = _spec_verdict(item)
    assert verdict.startswith("bad: ") and words in verdict
    assert _data_verdict(item) == verdict                  # the same message, not only the same words


@pytest.mark.parametrize("item, words", BAD_EXTRA_ITEMS)
def test_bad_extra_items_fail_before_any_data(item, words):
    like = _fake_set(n=4)
    with pytest.raises(DataError) as err:
        apply_extra(like.train, item, like, "unused", download=False, seed=0)
    message = str(err.value)
    assert repr(item) in message and words in message and "\n" not in message


def test_spaced_extra_items_load_like_tight_ones(tmp_path):
    like = _fake_set(n=200)
    tight = apply_extra(like.train, "noise:0.3", like, "unused", download=False, seed=5)
    spaced = apply_extra(like.train, " noise : 0.3 ", like, "unused", download=False, seed=5)
    assert torch.equal(spaced.images, tight.images) and torch.equal(spaced.labels, tight.labels)
    torch.save(torch.zeros(3, 1, 8, 8, dtype=torch.uint8), tmp_path / "z.pt")
    assert len(apply_extra(like.train, f"tensors: {tmp_path / 'z.pt'} ", like, "x", False, 0)) == 203
    # Past the parser: "svhn: 100" is looked for on disk, as "svhn:100" is.
    with pytest.raises(DataError, match=f"svhn not found in {tmp_path}"):
        apply_extra(like.train, "svhn: 100", like, tmp_path, download=False, seed=0)


def test_missing_extra_dataset(tmp_path):
    like = _fake_set(n=4)
    with pytest.raises(DataError, match=f"svhn not found in {tmp_path}"):
        apply_extra(like.train, "svhn:10", like, tmp_path, download=False, seed=0)


# ----------------------------------------------------------------------------------------------
# build_splits


def test_build_splits_teacher_subset_is_e1_shape(digits):
    cfg = DataConfig(dataset="digits", root="unused", teacher_subset=200)
    dataset, teacher, distill = build_splits(cfg)
    assert len(teacher) == 200
    assert torch.bincount(teacher.labels, minlength=10).min() >= 1
    assert torch.equal(distill.images, dataset.train.images)      # the student sees all of train
    again = build_splits(cfg)[1]
    assert torch.equal(again.images, teacher.images)               # fixed data seed
    assert not torch.equal(build_splits(cfg, seed=1)[1].images, teacher.images)


def test_build_splits_half_split(digits):
    n = len(digits.train)
    cfg = DataConfig(dataset="digits", root="unused", split=0.5, teacher_split=0, student_splits=(1,))
    _, teacher, distill = build_splits(cfg)
    assert len(teacher) == round(n * 0.5) and len(distill) == n - len(teacher)
    d0, d1 = split_indices(n, 0.5, seed=0)
    assert torch.equal(teacher.images, digits.train.images[d0])
    assert torch.equal(distill.images, digits.train.images[d1])

    both = DataConfig(dataset="digits", root="unused", split=0.5, student_splits=(0, 1))
    _, teacher, distill = build_splits(both)
    assert len(teacher) == len(d0) and len(distill) == n
    assert torch.equal(distill.labels.sort().values, digits.train.labels.sort().values)

    with pytest.raises(DataError, match="splits 0 and 1"):
        build_splits(DataConfig(dataset="digits", root="unused", split=0.5, student_splits=(2,)))


def test_build_splits_applies_extras_in_order(tmp_path):
    torch.save(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), tmp_path / "z.pt")
    cfg = DataConfig(dataset="digits", root="unused", split=0.5, student_splits=(1,),
                     extra=(f"tensors:{tmp_path / 'z.pt'}", "noise:0.5"))
    dataset, teacher, distill = build_splits(cfg)
    assert len(distill) == len(dataset.train) - len(teacher) + 10
    unlabelled = int((distill.labels == -1).sum())
    assert 10 <= unlabelled < len(distill)
    assert (teacher.labels >= 0).all()


# ----------------------------------------------------------------------------------------------
# E1's data: EMNIST byclass as the distillation set, per-seed teacher subsets


def _write_emnist(root: Path, split: str, n_train: int, n_test: int = 3) -> np.ndarray:
    """EMNIST/raw/emnist-<split>-* idx files; the images are stored transposed, as EMNIST's are."""
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    upright = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    for part, n, images in (("train", n_train, upright), ("test", n_test, upright[:n_test])):
        _write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", images.transpose(0, 2, 1))
        _write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", (np.arange(n) % 62).astype(np.uint8))
    return upright


def test_emnist_extra_reads_byclass_upright_and_unlabelled(tmp_path):
    upright = _write_emnist(tmp_path, "byclass", n_train=40)
    _write_mnist(tmp_path, n_train=30, n_test=5)
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), teacher_subset=10, extra=("emnist:25",))
    dataset, teacher, distill = build_splits(cfg)
    assert len(distill) == 30 + 25 and len(teacher) == 10
    extra = distill.images[30:, 0].numpy()
    assert (distill.labels[30:] == -1).all()
    # each appended image is one of the byclass images, upright (MNIST's orientation), none twice
    rows = {upright[i].tobytes(): i for i in range(len(upright))}
    picked = [rows.get(img.tobytes()) for img in extra]
    assert None not in picked and len(set(picked)) == 25
    with pytest.raises(DataError, match="only 40"):
        build_splits(DataConfig(dataset="mnist", root=str(tmp_path), extra=("emnist:41",)))


def test_extra_only_distils_on_the_extra_data_alone(tmp_path):
    _write_emnist(tmp_path, "byclass", n_train=40)
    _write_mnist(tmp_path, n_train=30, n_test=5)
    cfg = DataConfig(dataset="mnist", root=str(tmp_path), teacher_subset=10, extra=("emnist:40",), extra_only=True)
    dataset, teacher, distill = build_splits(cfg)
    assert len(distill) == 40 and (distill.labels == -1).all()
    assert len(teacher) == 10 and (teacher.labels >= 0).all()
    with pytest.raises(DataError, match="empty"):
        build_splits(DataConfig(dataset="digits", root="unused", extra=("noise:0.5",), extra_only=True))


def test_per_seed_teacher_subset_differs_by_run_seed_only_when_asked(digits):
    def teacher_rows(seed: int, per_seed: bool) -> torch.Tensor:
        spec = spec_from_dict({"seed": seed, "data": {"dataset": "digits", "teacher_subset": 50,
                                                      "teacher_subset_per_seed": per_seed}})
        return build_splits(spec.to_run_config().data)[1].images

    shared = [teacher_rows(seed, False) for seed in (0, 1, 2)]
    assert all(torch.equal(shared[0], other) for other in shared[1:])
    own = [teacher_rows(seed, True) for seed in (1, 2)]
    assert not torch.equal(own[0], own[1]) and not torch.equal(own[0], shared[0])
    assert torch.equal(teacher_rows(2, True), own[1])           # still deterministic
    with pytest.raises(SpecError, match="teacher_subset"):
        spec_from_dict({"data": {"dataset": "digits", "teacher_subset_per_seed": True}})
    with pytest.raises(SpecError, match="data.extra"):
        spec_from_dict({"data": {"dataset": "digits", "extra_only": True}})
