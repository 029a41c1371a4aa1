"""The run's data on its device, and the two ways a model is run on it: a training forward in the run's
precision, and a clean fp32 prediction for the metrics."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kernels import data as data_mod
from kernels import models
from kernels.augment import Augmented, Augmenter
from kernels.config import RunConfig, TrainConfig
from kernels.distributed import Shards
from kernels.ensemble import Ensemble
from kernels.precision import Precision, fp32_exact
from kernels.synthetic import SyntheticPool

EVAL_BATCH = 1024


@dataclass
class Prepared:
    """The run's data, loaded once and moved to its device. Images and models are channels_last:
    bench/engine.py measured it at least as fast on every device tried."""
    dataset: data_mod.Dataset
    teacher_set: data_mod.ImageSet
    distill_set: data_mod.ImageSet
    test_set: data_mod.ImageSet
    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    shards: Shards = field(default_factory=Shards)  # this process's part of a data-parallel run
    precision: Precision | None = None  # None: the device's default (Precision.for_device)
    synthetic: SyntheticPool | None = None  # mixed into each student minibatch (kernels.synthetic)

    def __post_init__(self) -> None:
        self.precision = self.precision or Precision.for_device(self.device)

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
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's rows of a whole clean set (all of them, in a single-process run)."""
        return self.shards.rows(tensor)


def prepare(cfg: RunConfig, device: torch.device, shards: Shards | None = None) -> Prepared:
    dataset, teacher_set, distill_set = data_mod.build_splits(cfg.data)
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    source = data_mod.synthetic_source(cfg.data, dataset)
    pool = None if source is None else SyntheticPool(source[1].to(device), *source[0].ratio)
    return Prepared(dataset, teacher_set.to(device), distill_set.to(device), dataset.test.to(device),
                    device, mean, std, shards or Shards(), synthetic=pool)


def build_model(train: TrainConfig, prepared: Prepared) -> nn.Module:
    ds = prepared.dataset
    model = models.create(train.model, ds.num_classes, ds.in_channels, ds.image_size, norm=train.norm)
    return model.to(prepared.device, memory_format=torch.channels_last)


def load_teacher_ensemble(cfg: RunConfig, prepared: Prepared, states: list[dict]) -> Ensemble:
    members = []
    for state in states:
        model = build_model(cfg.teacher, prepared)
        model.load_state_dict(state)
        members.append(model.eval())
    ensemble = Ensemble(members).eval()
    ensemble.requires_grad_(False)
    return ensemble


def train_forward(model: nn.Module, prepared: Prepared, x: torch.Tensor) -> torch.Tensor:
    """A training-step forward, in the run's training precision."""
    with prepared.precision.autocast():
        return model(x)


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
