"""Number formats: low precision where it is cheap and harmless (training), fp32 where a near-tie decides
a result (fidelity metrics).

Training on CUDA runs under bf16 autocast on cards that support it (same exponent range as fp32, so no
loss scaling), else under fp16 autocast with a gradient scaler; on CPU it is fp32. Evaluation is always
fp32 with TF32 off: agreement is an argmax, and a bf16 logit (8 bits of mantissa) can flip a near-tie.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Precision:
    device_type: str
    dtype: torch.dtype = torch.float32  # the autocast dtype of training forwards; fp32: no autocast
    scaler: torch.amp.GradScaler | None = field(default=None)

    @classmethod
    def for_device(cls, device: torch.device) -> "Precision":
        if device.type != "cuda":
            return cls(device.type)
        if torch.cuda.is_bf16_supported():
            return cls("cuda", torch.bfloat16)
        return cls("cuda", torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def new_scaler(self) -> torch.amp.GradScaler | None:
        """A scaler of its own for each optimiser (fp16 only): its scale adapts to that model's gradients."""
        return torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler | None) -> None:
    """zero_grad, backward, step; with fp16, through the scaler (it skips steps with inf gradients)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _tf32_switches() -> list[tuple[object, str, object, object]]:
    """(owner, attribute, value for TF32 on, value for off) of each switch. torch >= 2.9 has the
    `fp32_precision` settings and deprecates the `allow_tf32` flags; setting both raises, so only one
    API is ever used: the new one where it exists."""
    backends = torch.backends
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        return [(backends.cuda.matmul, "fp32_precision", "tf32", "ieee"),
                (backends.cudnn.conv, "fp32_precision", "tf32", "ieee")]
    return [(backends.cuda.matmul, "allow_tf32", True, False), (backends.cudnn, "allow_tf32", True, False)]


@contextmanager
def fp32_exact():
    """No autocast and no TF32 inside: matmuls and convolutions in full fp32, restored afterwards."""
    switches = _tf32_switches()
    saved = [getattr(owner, name) for owner, name, _, _ in switches]
    for owner, name, _, off in switches:
        setattr(owner, name, off)
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        for (owner, name, _, _), value in zip(switches, saved):
            setattr(owner, name, value)


def cast_for_inference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast a frozen model's conv and linear weights to the autocast dtype once, in place.

    Autocast would otherwise re-cast every weight at every forward (its cast cache lives for one autocast
    region). The values are the ones autocast would make, so outputs do not change. Norm layers keep
    fp32 parameters, which is what autocast feeds them anyway.
    """
    if dtype == torch.float32:
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(dtype)
    return model
