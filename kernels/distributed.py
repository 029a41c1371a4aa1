"""Data parallelism under torchrun: which rows this process trains and evaluates, and what it shares.

One run, N processes. Every process draws the same permutation of the training set each epoch and
takes every N-th row of each global batch (`rows`), so an epoch covers the data once between them; DDP
averages their gradients. Evaluation shards the clean sets the same way and sums the metric counts over
the processes, so agreement and accuracy are counted over the whole set exactly once. Augmentation
draws differ per process (their own generator), the permutation does not.

`Shards()` (rank 0 of 1) is the single-process case, where every method is the identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

# Stop requests are agreed on every this many steps (a tiny all-reduce): every rank must leave the
# loop at the same step, or the others would wait forever in the next collective.
STOP_SYNC_STEPS = 10


@dataclass(frozen=True)
class Shards:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes events, checkpoints and the record."""
        return self.rank == 0

    def rows(self, index_or_set: torch.Tensor) -> torch.Tensor:
        """This process's rows: every world-th one, from its rank."""
        return index_or_set if self.world == 1 else index_or_set[self.rank::self.world]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the processes, in place (gloo wants CPU tensors: round-trip if needed)."""
        if self.world > 1:
            _all_reduce_(tensor, torch.distributed.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        _all_reduce_(value, torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def first_bad_step(self, first_bad: torch.Tensor) -> torch.Tensor:
        """The earliest step with a non-finite loss on any process (−1: none)."""
        if self.world == 1:
            return first_bad
        never = torch.iinfo(torch.int64).max
        value = torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad).reshape(1).clone()
        _all_reduce_(value, torch.distributed.ReduceOp.MIN)
        return torch.where(value[0] == never, torch.full_like(first_bad, -1), value[0])

    def augment_generator(self, seed: int, epoch: int, device: torch.device) -> torch.Generator:
        """Per process and epoch: other draws on each rank, reproducible on resume."""
        generator = torch.Generator(device=device)
        generator.manual_seed((seed * 1_000_003 + epoch) * 4099 + self.rank)
        return generator

    def wrap(self, model: nn.Module, sync_batch_norm: bool = False) -> nn.Module:
        """The model to train: DDP over the processes (gradients averaged), or the model itself.

        `sync_batch_norm` swaps BatchNorm layers (in place, same parameters) for SyncBatchNorm, whose
        batch statistics cover the global batch instead of this process's rows (CUDA only in torch).
        """
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if sync_batch_norm:
            for name, child in list(model.named_children()):
                setattr(model, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))

        device_ids = [model_device(model)] if model_device(model).type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def broadcast(self, value):
        """Rank 0's `value` on every process (any picklable object)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _all_reduce_(tensor: torch.Tensor, op) -> None:
    if torch.distributed.get_backend() == "gloo" and tensor.device.type != "cpu":
        staged = tensor.cpu()
        torch.distributed.all_reduce(staged, op=op)
        tensor.copy_(staged)
    else:
        torch.distributed.all_reduce(tensor, op=op)


def init_from_torchrun(spec_device: str) -> tuple[Shards, str | None]:
    """Join the process group torchrun set up: NCCL on CUDA, gloo on CPU. Returns the shards and the
    device this process must use ("cuda:<local rank>", or None to keep `spec_device`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world == 1:
        return Shards(), None
    cuda = spec_device != "cpu" and torch.cuda.is_available()
    device = None
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return Shards(rank, world), device
