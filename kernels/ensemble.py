"""Ensembles predict the log of the mean of member probabilities (not the mean of logits)."""
from __future__ import annotations

import math

import torch
from torch import nn

from kernels.metrics import at_least_fp32


def ensemble_log_probs(member_logits: torch.Tensor) -> torch.Tensor:
    """(m, n, C) member logits -> (n, C) log of the mean of member probabilities."""
    if member_logits.dim() != 3:
        raise ValueError(f"member_logits must have shape (m, n, C), got {tuple(member_logits.shape)}")
    m = member_logits.shape[0]
    log_probs = torch.log_softmax(at_least_fp32(member_logits), dim=-1)
    return torch.logsumexp(log_probs, dim=0) - math.log(m)


class Ensemble(nn.Module):
    """Members evaluated on the same batch; outputs log mean probabilities (valid as logits)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            # log_softmax of one member equals its ensemble prediction; skip the stack.
            return torch.log_softmax(at_least_fp32(self.members[0](x)), dim=-1)
        return ensemble_log_probs(torch.stack([member(x) for member in self.members]))
