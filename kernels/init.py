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
    """Replace BN running statistics by their exact values over all of `batches` (one clean pass).

    Interpolated weights make the old statistics meaningless, so they are rebuilt from the data. Each
    chunk's mean and variance are read back (momentum 1 makes the running values that chunk's own)
    and pooled with weights proportional to the chunk's size, between-chunk spread included: the
    result is the mean and unbiased variance of each BN input over the whole set. (PyTorch's
    momentum=None average would weight a small last chunk like a full one.) num_batches_tracked ends
    as the number of chunks.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = 1.0
    # Per norm: Σ count, Σ count·mean, Σ count·(biased var + mean²), in float64.
    sums = [[0, 0.0, 0.0] for _ in norms]
    counts = [0] * len(norms)  # values per channel that each norm saw in the current chunk

    def count(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            counts[i] = args[0].numel() // args[0].shape[1]
        return hook

    hooks = [m.register_forward_pre_hook(count(i)) for i, m in enumerate(norms)]
    was_training = model.training
    model.train()
    try:
        for x in batches:
            model(x)
            for i, m in enumerate(norms):
                c = counts[i]
                mean = m.running_mean.double()
                var = m.running_var.double() * ((c - 1) / c if c > 1 else 0.0)  # unbiased -> biased
                sums[i][0] += c
                sums[i][1] = sums[i][1] + c * mean
                sums[i][2] = sums[i][2] + c * (var + mean.square())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for m, momentum, (n, s1, s2) in zip(norms, momenta, sums):
        m.momentum = momentum
        if n == 0:
            continue
        mean = s1 / n
        var = (s2 / n - mean.square()).clamp(min=0) * (n / (n - 1) if n > 1 else 1.0)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
