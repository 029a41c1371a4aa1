"""The optimiser and the learning-rate schedule of both phases (change the schedule here)."""
from __future__ import annotations

import math

import torch
from torch import nn

from kernels.config import TrainConfig
from kernels.distributed import model_device


def make_optimizer(train: TrainConfig, model: nn.Module, static: bool = False) -> torch.optim.Optimizer:
    """`static`: for compiled steps, a tensor lr (a new value is written into it, so a compiled or
    graph-captured step never sees a changed Python constant) and SGD's fused kernel."""
    if train.optimizer == "sgd":
        lr = torch.tensor(train.lr, device=model_device(model)) if static else train.lr
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=train.momentum,
                               nesterov=train.nesterov and train.momentum > 0, weight_decay=train.weight_decay,
                               fused=static or None)
    if train.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    raise ValueError(f"unknown optimizer {train.optimizer!r}; allowed: sgd, adam")


def learning_rate(train: TrainConfig, step: int, total_steps: int) -> float:
    """Per-step cosine from lr to final_lr, or constant."""
    if train.schedule == "constant":
        return train.lr
    progress = min(step / max(total_steps, 1), 1.0)
    return train.final_lr + (train.lr - train.final_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # in place: the tensor a compiled step reads
        else:
            group["lr"] = lr
