"""A phase's checkpoint: model, optimiser, random stream and history after each finished epoch, so a
stopped or killed run resumes and draws exactly what it would have drawn."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kernels.saving import save_atomic


class WrongDevice(Exception):
    """The checkpoint's random stream belongs to another device kind."""


def load_checkpoint(path: Path, device: torch.device) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


def save_phase(path: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, history: list[dict], extra: dict | None = None) -> None:
    save_atomic({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "device": generator.device.type, "generator": generator.get_state(), "history": history,
                 **(extra or {})}, path)


def restore_phase(path: Path | None, model: nn.Module, optimizer: torch.optim.Optimizer,
                  generator: torch.Generator) -> tuple[int, list[dict], dict]:
    """Load the phase checkpoint if there is one; returns (last finished epoch, history, whole state)."""
    device = generator.device
    state = load_checkpoint(path, device) if path else None
    if state is None:
        return 0, [], {}
    saved_on = state.get("device", device.type)
    if saved_on != device.type:
        # CPU and CUDA generators are different algorithms (Mersenne Twister vs Philox): one's state
        # cannot continue the other's stream, and a resume must draw what the run would have.
        raise WrongDevice(f"{path} was written on {saved_on} and cannot resume on {device.type}: their random "
                          f"streams differ; resume with device = '{saved_on}', or delete it to start this "
                          f"phase over")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"].cpu())  # RNG states are CPU byte tensors on every device
    return int(state["epoch"]), list(state["history"]), state
