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
    log_probs = torch.log_softmax(at_least_fp32(member_logits), dim=-1)
    # The log-sum-exp over members is written out elementwise, in member order, rather than as
    # torch.logsumexp(dim=0): a reduction's rounding depends on the batch's shape, and a teacher cache
    # must hand back, for a row, the bits the online teacher computes for it in any batch.
    top = log_probs[0]
    for member in log_probs[1:]:
        top = torch.maximum(top, member)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # a class no member allows stays -inf
    total = torch.exp(log_probs[0] - shift)
    for member in log_probs[1:]:
        total = total + torch.exp(member - shift)
    return torch.log(total) + shift - math.log(len(log_probs))


def ensemble_prediction(member_logits: list[torch.Tensor]) -> torch.Tensor:
    """The ensemble's output from each member's (n, C) logits: online and cached teachers both end here,
    so they agree to the last bit given the same member logits."""
    if len(member_logits) == 1:
        # log_softmax of one member equals its ensemble prediction; skip the stack.
        return torch.log_softmax(at_least_fp32(member_logits[0]), dim=-1)
    return ensemble_log_probs(torch.stack(member_logits))


class Ensemble(nn.Module):
    """Members evaluated on the same batch; outputs log mean probabilities (valid as logits)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_prediction([member(x) for member in self.members])
