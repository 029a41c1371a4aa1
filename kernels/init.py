"""Student initialisation: random, the teacher's initial weights, or an interpolation (paper E7/E8)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def interpolate_state(teacher_state: dict, random_state: dict, lam: float) -> dict:
    """θ = λ·θ_teacher + (1 − λ)·θ_random for floating tensors; the rest is taken from the teacher.

    Unlike the paper's code, λ is the weight on the *teacher* and the learning rate is untouched.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"init_lambda must be between 0 and 1, got {lam}")
    mixed = {}
    for key, theta_t in teacher_state.items():
        theta_r = random_state[key]
        mixed[key] = lam * theta_t + (1 - lam) * theta_r if theta_t.is_floating_point() else theta_t.clone()
    return mixed


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace BN running statistics by their exact average over `batches` (one clean pass).

    Interpolated weights make the old statistics meaningless, so they are rebuilt from the data.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over all batches seen
    was_training = model.training
    model.train()
    for x in batches:
        model(x)
    model.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
