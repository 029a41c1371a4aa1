"""Fidelity and generalisation metrics exactly as the paper defines them (docs/metrics.md).

Every function takes unnormalised log-probabilities ("logits"; ensemble outputs are fine) and
returns a Python float: fractions in [0, 1], or nats for KL and NLL. The accumulators keep sums
and counts on the device, so an epoch evaluated in uneven batches syncs once and gives the exact
whole-set value (not a mean of batch means).
"""
from __future__ import annotations

import torch

ECE_BINS = 10


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 activations are promoted for softmax and KL; fp64 inputs keep their precision."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(at_least_fp32(logits), dim=-1)


def agreement_count(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return (student_logits.argmax(dim=-1) == teacher_logits.argmax(dim=-1)).sum()


def kl_sum(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Σ_i KL(p_t(·|x_i) ‖ p_s(·|x_i)) at temperature 1."""
    log_pt, log_ps = _log_probs(teacher_logits), _log_probs(student_logits)
    p_t = log_pt.exp()
    # xlogy-style: a term with p_t = 0 is 0 even where log p_t = -inf; any other NaN or inf (a NaN or
    # infinite logit) stays in the sum, so broken outputs give a NaN metric, never a perfect score.
    return torch.where(p_t == 0, torch.zeros_like(p_t), p_t * (log_pt - log_ps)).sum()


def nll_sum(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    picked = _log_probs(logits).gather(1, labels.long().clamp(min=0).unsqueeze(1)).squeeze(1)
    return -(picked.sum() if weight is None else (picked * weight).sum())


def correct_count(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    correct = logits.argmax(dim=-1) == labels
    return correct.sum() if weight is None else (correct & weight).sum()


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
    """(3, n_bins) per-bin [count, Σ correct, Σ confidence] over equal-width confidence bins.

    `weight` (bool, per row) leaves rows out without boolean indexing, which would sync the device.
    """
    confidence, predicted = _log_probs(logits).exp().max(dim=-1)
    # Bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 cannot occur.
    bins = (confidence * n_bins).ceil().long().clamp(1, n_bins) - 1
    w = torch.ones_like(confidence, dtype=torch.float64) if weight is None else weight.double()
    stats = torch.zeros(3, n_bins, device=logits.device, dtype=torch.float64)
    stats[0].index_add_(0, bins, w)
    stats[1].index_add_(0, bins, (predicted == labels).double() * w)
    stats[2].index_add_(0, bins, confidence.double() * w)
    return stats


def ece_from_bins(stats: torch.Tensor) -> float:
    count, correct, confidence = stats
    n = count.sum()
    if n == 0:
        return float("nan")
    filled = count > 0
    gap = (correct[filled] - confidence[filled]).abs()  # n_b·|acc_b − conf_b|
    return float(gap.sum() / n)


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Top-1 agreement: the fraction of inputs where student and teacher predict the same class."""
    return float(agreement_count(student_logits, teacher_logits)) / len(student_logits)


def predictive_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Forward KL(p_t ‖ p_s) at τ = 1, averaged over examples, in nats."""
    return float(kl_sum(teacher_logits, student_logits)) / len(student_logits)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(correct_count(logits, labels)) / len(labels)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-example −log p(y_i | x_i), in nats."""
    return float(nll_sum(logits, labels)) / len(labels)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    return ece_from_bins(calibration_bins(logits, labels, n_bins))


class FidelityAccumulator:
    """Sums over an epoch, on the device, everything needed for the test/eval metrics.

    `add` never synchronises; `result` does, once. Labels may be omitted (or −1 for unlabelled
    rows): accuracy, NLL and ECE then count only labelled rows.
    """

    def __init__(self, device: torch.device | str, n_bins: int = ECE_BINS):
        self.device = torch.device(device)
        self.n_bins = n_bins
        # [n, agree, kl, n_labelled, correct, nll, teacher_correct]
        self.sums = torch.zeros(7, dtype=torch.float64, device=self.device)
        self.bins = torch.zeros(3, n_bins, dtype=torch.float64, device=self.device)

    def add(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None = None,
            labels: torch.Tensor | None = None) -> None:
        s = self.sums
        s[0] += len(student_logits)
        if teacher_logits is not None:
            s[1] += agreement_count(student_logits, teacher_logits)
            s[2] += kl_sum(teacher_logits, student_logits).double()
        if labels is not None:
            labelled = labels >= 0
            s[3] += labelled.sum()
            s[4] += correct_count(student_logits, labels, labelled)
            s[5] += nll_sum(student_logits, labels, labelled).double()
            self.bins += calibration_bins(student_logits, labels, self.n_bins, labelled)
            if teacher_logits is not None:
                s[6] += correct_count(teacher_logits, labels, labelled)

    def result(self) -> dict[str, float]:
        n, agree, kl, n_labelled, correct, nll_total, teacher_correct = self.sums.tolist()
        out: dict[str, float] = {}
        if n == 0:
            return out
        out["n"] = n
        out["agreement"] = agree / n
        out["kl"] = kl / n
        if n_labelled > 0:
            out["acc"] = correct / n_labelled
            out["nll"] = nll_total / n_labelled
            out["ece"] = ece_from_bins(self.bins)
            out["teacher_acc"] = teacher_correct / n_labelled
        return out
