"""Per-minibatch synthetic mixing: the paper's GAN arm (App. A.1, and its Fig. 1 amounts).

`data.extra = ["synthetic:PATH:ratio=S:R"]` keeps the images of PATH apart from the distillation set,
as a pool. Every student minibatch of B real rows (augmented as usual) then gets round(B·S/R) rows
drawn at random from the pool, with replacement and anew in every minibatch, appended after the real
rows *without* augmentation (the released code gave its GAN samples no crop or flip). At 1:4 a fifth
of each batch is synthetic and an epoch over 50k real images draws 12.5k synthetic rows.

The draws come from the phase's augmentation generator, so a run is reproducible under its seed, a
resume continues the same stream, and data-parallel processes draw different rows. The rows count for
the loss, `train_loss` and `train_agreement` like the real rows (docs/metrics.md); they carry the label
-1, and `distill.synthetic_temperature` can give them their own τ (kernels.losses.total_loss). A pool
makes the teacher's inputs an open set, so such a run's teacher is online (kernels.teacher_outputs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.augment import Augmented, Augmenter, Mix


@dataclass(eq=False)
class SyntheticPool:
    images: torch.Tensor   # uint8 (P, C, H, W) on the run's device, in the data set's channels and size
    synthetic: float       # S synthetic rows ...
    real: float            # ... per R real rows

    def rows_for(self, real_rows: int) -> int:
        """How many synthetic rows join a minibatch of `real_rows` real rows (a Python int: no sync)."""
        return round(real_rows * self.synthetic / self.real)


class SyntheticMixer:
    """The student's augmentation with the pool's rows appended: what `Prepared.augment` calls instead of
    the Augmenter when the run mixes synthetic rows. The real rows come first, in batch order."""
    finite_views = False   # an open set of inputs: the teacher cannot be cached

    def __init__(self, augment: Augmenter, pool: SyntheticPool):
        self.inner, self.pool, self.names = augment, pool, augment.names

    def __repr__(self) -> str:
        return f"SyntheticMixer({self.inner!r}, ratio={self.pool.synthetic:g}:{self.pool.real:g})"

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> Augmented:
        out = self.inner.augment(images, generator)
        b, k = images.shape[0], self.pool.rows_for(images.shape[0])
        pick = torch.randint(len(self.pool.images), (k,), generator=generator, device=images.device)
        rows = self.pool.images[pick].to(images.dtype).div_(255.0)
        mix = out.mix
        if mix is not None:  # mixup/cutmix mixed the real rows only: each synthetic row is its own partner
            own = torch.arange(b, b + k, device=images.device)
            mix = Mix(perm=torch.cat([mix.perm, own]), lam=torch.cat([mix.lam, mix.lam.new_ones(k)]))
        return Augmented(torch.cat([out.images, rows]), mix, None, synthetic=k)


def with_synthetic(augment: Augmenter, pool: SyntheticPool | None) -> Augmenter | SyntheticMixer:
    """The student's augmentation: the Augmenter itself unless the run has a synthetic pool."""
    return augment if pool is None else SyntheticMixer(augment, pool)
