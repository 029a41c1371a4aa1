"""Distillation losses. Teacher "logits" may be any log-probabilities (ensemble outputs included)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.augment import Mix
from kernels.catalog import LOSSES
from kernels.metrics import at_least_fp32


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p ‖ q) from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str = "kl",
                      temperature: float = 4.0) -> torch.Tensor:
    """Batch-mean distillation loss.

    `kl` is Hinton's forward form −τ² Σ_c p_t^τ log p_s^τ; its gradient equals τ²·∇KL(p_t^τ ‖ p_s^τ).
    The KL variants carry τ² too, so their gradient scale does not shrink as τ grows.
    """
    tau = float(temperature)
    log_ps = torch.log_softmax(at_least_fp32(student_logits) / tau, dim=-1)
    log_pt = torch.log_softmax(at_least_fp32(teacher_logits) / tau, dim=-1)
    if kind == "kl":
        per_row = -(log_pt.exp() * log_ps).sum(dim=-1) * tau**2
    elif kind == "reverse-kl":
        per_row = _kl_rows(log_ps, log_pt) * tau**2
    elif kind == "symmetric-kl":
        per_row = 0.5 * (_kl_rows(log_pt, log_ps) + _kl_rows(log_ps, log_pt)) * tau**2
    elif kind == "brier":
        per_row = (log_ps.exp() - log_pt.exp()).pow(2).sum(dim=-1)
    elif kind == "hard":
        per_row = F.cross_entropy(at_least_fp32(student_logits), teacher_logits.argmax(dim=-1), reduction="none")
    else:
        raise ValueError(f"unknown distillation loss {kind!r}; allowed: {', '.join(LOSSES)}")
    return per_row.mean()


def label_loss(student_logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None = None) -> torch.Tensor:
    """Cross-entropy with true labels over labelled rows only (label −1 marks extra data).

    After mixup/cutmix a row's target is its two sources' labels, weighted like the images were;
    a row counts only when both sources are labelled. Masks instead of indexing: no device sync.
    """
    log_ps = torch.log_softmax(at_least_fp32(student_logits), dim=-1)

    def ce(y: torch.Tensor) -> torch.Tensor:
        return -log_ps.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)

    if mix is None:
        weight = (labels >= 0).float()
        per_row = ce(labels)
    else:
        partner = labels[mix.perm]
        weight = ((labels >= 0) & (partner >= 0)).float()
        per_row = mix.lam * ce(labels) + (1 - mix.lam) * ce(partner)
    return (per_row * weight).sum() / weight.sum().clamp(min=1.0)


def total_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               kind: str, temperature: float, alpha: float, mix: Mix | None = None,
               synthetic: int = 0, synthetic_temperature: float = 0.0) -> torch.Tensor:
    """(1 − α)·distillation + α·cross-entropy with true labels.

    `synthetic` > 0: the batch's last rows came from a synthetic pool (kernels.synthetic); `labels`
    covers only the real rows before them. The distillation loss is then the mean over every row,
    each synthetic row at `synthetic_temperature` (0: `temperature`), τ² factor included; the
    synthetic rows have no label."""
    if synthetic:
        real = student_logits.shape[0] - synthetic
        tau = synthetic_temperature or temperature
        loss = (distillation_loss(student_logits[:real], teacher_logits[:real], kind, temperature) * real
                + distillation_loss(student_logits[real:], teacher_logits[real:], kind, tau) * synthetic
                ) / (real + synthetic)
        labels = torch.cat([labels, labels.new_full((synthetic,), -1)])
    else:
        loss = distillation_loss(student_logits, teacher_logits, kind, temperature)
    if alpha > 0:
        loss = (1 - alpha) * loss + alpha * label_loss(student_logits, labels, mix)
    return loss
