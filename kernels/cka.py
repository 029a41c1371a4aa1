"""Linear CKA between two networks' stage outputs (the paper's Table 1, E8).

Centred kernel alignment with linear kernels (Kornblith et al., 2019): for representations X (n x p)
and Y (n x q) of the same n examples, with columns centred over the examples,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F).

Each example's stage output (C x H x W) is flattened into one row, so the centring is over examples,
for each feature. (The paper's released code averaged over the wrong axis; this follows the
definition.) The sums run through the n x n Gram matrices, so a 65,536-wide stage costs n^2 memory,
not p^2: callers pick n (a few thousand test images).
"""
from __future__ import annotations

import torch
from torch import nn

from kernels import models

STAGES = ("stage1", "stage2", "stage3")
CKA_EXAMPLES = 2000   # test images a run's CKA uses: two 2000 x 2000 float64 Gram matrices a stage


def _centred_gram(features: torch.Tensor) -> torch.Tensor:
    x = features.reshape(features.shape[0], -1).to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same examples (first dimension), in [0, 1]."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same examples: {x.shape[0]} rows vs {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 examples")
    kx, ky = _centred_gram(x), _centred_gram(y)
    # <Kx, Ky>_F = ||Y^T X||_F^2 for centred X, Y; likewise ||Kx||_F = ||X^T X||_F.
    denominator = kx.norm() * ky.norm()
    if denominator == 0:
        raise ValueError("CKA is undefined for a representation that is constant over the examples")
    return float((kx * ky).sum() / denominator)


@torch.no_grad()
def stage_outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 500) -> list[torch.Tensor]:
    """The outputs of `model.stage1..3` (a kdtui pre-activation ResNet) on `images`, in eval mode,
    each (n, C, H, W) on the CPU."""
    missing = [name for name in STAGES if not hasattr(model, name)]
    if missing:
        raise ValueError(f"{type(model).__name__} has no {', '.join(missing)}: CKA by stage needs a ResNet")
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in STAGES}
    handles = [getattr(model, name).register_forward_hook(
        lambda _module, _inputs, output, name=name: captured[name].append(output.detach().float().cpu()))
        for name in STAGES]
    was_training = model.training
    model.eval()
    try:
        for chunk in images.split(batch_size):
            model(chunk)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [torch.cat(captured[name]) for name in STAGES]


def stage_cka(teacher: nn.Module, student: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """{"cka_stage1": ..., "cka_stage2": ..., "cka_stage3": ...} between two ResNets on `images`."""
    pairs = zip(stage_outputs(teacher, images), stage_outputs(student, images))
    return {f"cka_{name}": linear_cka(t, s) for name, (t, s) in zip(STAGES, pairs)}


def teacher_student_cka(cfg, prepared, student: nn.Module, teacher_state: dict) -> dict[str, float]:
    """Table 1's CKA columns for a run: the trained teacher (one member, rebuilt from its weights)
    against the trained student, stage by stage, on the first CKA_EXAMPLES test images, clean and
    normalised as for evaluation. `cfg` is the run's RunConfig, `prepared` its loaded data."""
    ds = prepared.dataset
    teacher = models.create(cfg.teacher.model, ds.num_classes, ds.in_channels, ds.image_size, norm=cfg.teacher.norm)
    teacher.load_state_dict(teacher_state)
    teacher.to(prepared.device)
    with torch.no_grad():
        inputs = torch.cat([prepared.to_input(chunk)[0]
                            for chunk in prepared.test_set.images[:CKA_EXAMPLES].split(500)])
    return stage_cka(teacher, getattr(student, "_orig_mod", student), inputs)   # _orig_mod: torch.compile
