"""Batched image augmentation on the run's device (E3 of docs/experiments.md; docs/architecture.md, "Speed").

Every op works on the whole batch at once with tensor ops, so the data never leaves the device and no
DataLoader workers are needed. All randomness comes from the caller's `torch.Generator` (on the images'
device): a run is reproducible under a seed and resumable from a saved generator state. No op ever
synchronises with the device (no `.item()`, no data-dependent Python branches), so on CUDA augmentation
queues behind the training step instead of stalling it.

Input and output are float batches (B, C, H, W) with pixels in [0, 1]; the engine normalises afterwards.

Views: when every op is a crop or a flip (or there are none), an image can only come out in finitely
many ways. `Augmenter.augment` then also returns each row's *view index*, computed from the very draws
that moved the pixels, and `Augmenter.render` rebuilds any (image, view) from the index alone. The
teacher-output cache (kernels.teacher_cache) keys on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from kernels.catalog import augmentation_parameter, parse_augmentation

# crop and the flips only move pixels: they are folded into one index map per batch and applied as one
# gather, so the paper's baseline (crop + hflip) costs a single pass over the pixels.
_INDEX_OPS = ("crop", "hflip", "vflip")
_MIX_OPS = ("mixup", "cutmix")
NOISE_STD = 0.1
_GAMMA_TRIES = 16


@dataclass
class Augmented:
    images: torch.Tensor
    mix: "Mix | None"
    views: torch.Tensor | None  # (B,) int64 view index of each row; None when the views are not finite
    synthetic: int = 0          # the last rows drawn from a synthetic pool, unaugmented (kernels.synthetic)


@dataclass
class Mix:
    """What mixup/cutmix did to a batch, so true-label losses can be mixed the same way."""

    perm: torch.Tensor  # (B,) the partner row of each row
    lam: torch.Tensor  # (B,) weight of the row's own image (after cutmix: the exact kept-area fraction)


class _IndexMap:
    """Where each output row/column comes from in the original image; −1 marks a zero-filled line.

    Crops and flips are separable, so a (B, H) row map and a (B, W) column map describe any chain of
    them. Composing by gathering the maps (not by adding offsets) keeps a line that one crop zeroed
    zero even if a later crop shifts it back into view, exactly as applying the ops one by one would.
    """

    def __init__(self, batch: int, height: int, width: int, device: torch.device):
        self.rows = torch.arange(height, device=device).expand(batch, height)
        self.cols = torch.arange(width, device=device).expand(batch, width)

    @staticmethod
    def _shift(lines: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        n = lines.shape[1]
        src = torch.arange(n, device=lines.device) + offset[:, None]
        inside = (src >= 0) & (src < n)
        return torch.where(inside, lines.gather(1, src.clamp(0, n - 1)), -1)

    def shift(self, dy: torch.Tensor, dx: torch.Tensor) -> None:
        """Output pixel (i, j) takes input pixel (i + dy, j + dx), zero outside the image."""
        self.rows = self._shift(self.rows, dy)
        self.cols = self._shift(self.cols, dx)

    def hflip(self, flip: torch.Tensor) -> None:
        self.cols = torch.where(flip[:, None], self.cols.flip(1), self.cols)

    def vflip(self, flip: torch.Tensor) -> None:
        self.rows = torch.where(flip[:, None], self.rows.flip(1), self.rows)

    def apply_code(self, name: str, code: torch.Tensor, padding: int) -> None:
        """Apply op `name` as its per-row draw code says (see `_view_radix`). Random draws and view
        indices both go through here, so a rendered view is the drawn view pixel for pixel."""
        if name == "crop":
            side = 2 * padding + 1
            self.shift(code // side - padding, code % side - padding)
        elif name == "hflip":
            self.hflip(code.bool())
        else:
            self.vflip(code.bool())

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        # One zero border makes −1 land on a zero line; then a single gather over flat pixel indices
        # (measured faster on CPU than advanced indexing, masking, or per-sample slicing).
        b, c, h, w = images.shape
        padded = F.pad(images, (1, 1, 1, 1))
        flat = (self.rows + 1)[:, :, None] * (w + 2) + (self.cols + 1)[:, None, :]
        index = flat.reshape(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, index).view(b, c, h, w)


def _sample_gamma_log(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """log of n Gamma(alpha, 1) draws, on the device, from `generator`.

    torch.distributions and torch._standard_gamma take no generator, and a NumPy draw seeded from the
    generator would need a `.item()` (a device sync per batch on CUDA). So: Marsaglia–Tsang (2000) with
    a fixed number of candidates per draw, taking the first accepted one. Its acceptance rate is above
    95% for every shape, so 16 candidates all failing has probability under 1e-20. Shapes below 1 use
    Gamma(a) = Gamma(a + 1)·U^(1/a); the log keeps tiny values (small alpha) from underflowing to 0.
    """
    boosted = alpha < 1.0
    shape = alpha + 1.0 if boosted else alpha
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn((n, _GAMMA_TRIES), generator=generator, device=device)
    u = torch.rand((n, _GAMMA_TRIES), generator=generator, device=device)
    v = (1.0 + c * z) ** 3
    log_v = v.clamp(min=1e-30).log()
    accepted = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * log_v)
    first = accepted.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    log_gamma = math.log(d) + log_v.gather(1, first).squeeze(1)
    if boosted:
        # 1 − U lies in (0, 1], so its log is finite.
        u_boost = 1.0 - torch.rand(n, generator=generator, device=device)
        log_gamma = log_gamma + u_boost.log() / alpha
    return log_gamma


def _sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha), computed from logs."""
    log_x = _sample_gamma_log(alpha, n, generator, device)
    log_y = _sample_gamma_log(alpha, n, generator, device)
    return torch.sigmoid(log_x - log_y)


def _rotate(images: torch.Tensor, radians: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle (bilinear, zero fill).

    affine_grid works in [-1, 1] coordinates on both axes, so the rotation is conjugated by the aspect
    ratio; otherwise a non-square image would be sheared instead of rotated.
    """
    b, c, h, w = images.shape
    cos, sin = radians.cos(), radians.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([
        torch.stack([cos, -sin * (h / w), zero], dim=1),
        torch.stack([sin * (w / h), cos, zero], dim=1),
    ], dim=1).to(images.dtype)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)  # bilinear weights can sum to 1 + ulp


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma (ITU-R 601, as torchvision), or the channel mean when there are not 3 channels."""
    if images.shape[1] == 3:
        r, g, b = images.unbind(1)
        return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)
    return images.mean(dim=1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * images + (1.0 - factor) * other).clamp_(0.0, 1.0)


def _rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hue in [0, 1), saturation, value), each (B, H, W), of an RGB batch in [0, 1]."""
    r, g, b = images.unbind(1)
    value, _ = images.max(dim=1)
    delta = value - images.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(value == r, ((g - b) / safe) % 6.0,
                      torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return hue, saturation, value


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) from HSV, branch-free: channel n is V - V*S*clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6*hue) mod 6 and n = 5, 3, 1 for red, green, blue."""
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + 6.0 * hue) % 6.0
        channels.append(value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1)


def _adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each RGB image's hue by its `shift` (B,), in turns (torchvision's hue_factor)."""
    hue, saturation, value = _rgb_to_hsv(images)
    hue = (hue + shift.view(-1, 1, 1).to(images.dtype)) % 1.0
    return _hsv_to_rgb(hue, saturation, value).clamp_(0.0, 1.0)


def _color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, hue in that fixed order (torchvision shuffles the order per
    call; a fixed order keeps it one code path). `factors` is (4, B): three blend factors and the hue
    shift in turns. Saturation and hue only apply to RGB."""
    brightness, contrast, saturation = (f.view(-1, 1, 1, 1).to(images.dtype) for f in factors[:3])
    out = (images * brightness).clamp_(0.0, 1.0)
    mean = _grayscale(out).mean(dim=(-3, -2, -1), keepdim=True)
    out = _blend(out, mean, contrast)
    if out.shape[1] == 3:
        out = _blend(out, _grayscale(out), saturation)
        out = _adjust_hue(out, factors[3])
    return out


def _cutmix_mask(lam: torch.Tensor, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(H, W) bool box of area ≈ (1 − lam)·H·W at a uniform centre, clipped at the borders (Yun et al.)."""
    device = lam.device
    ratio = (1.0 - lam).clamp(0.0, 1.0).sqrt()
    cut_h = (height * ratio).long()
    cut_w = (width * ratio).long()
    cy = torch.randint(0, height, (1,), generator=generator, device=device)
    cx = torch.randint(0, width, (1,), generator=generator, device=device)
    y0, x0 = cy - cut_h // 2, cx - cut_w // 2
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    in_rows = (ys >= y0) & (ys < y0 + cut_h)
    in_cols = (xs >= x0) & (xs < x0 + cut_w)
    return in_rows[:, None] & in_cols[None, :]


class Augmenter:
    """Applies the named augmentations to float batches in [0, 1].

    Geometric and colour ops run in the order given; mixup/cutmix always run last. When both mixup and
    cutmix are named, each batch gets one of the two with probability 1/2 (as timm does), chosen on the
    device without a sync. Empty names: the identity.

    - crop: shift by (dy, dx) uniform in [−crop_padding, crop_padding]², zero fill (RandomCrop with
      zero padding, the paper's baseline).
    - hflip / vflip: each sample flipped with p = 0.5.
    - rotate: angle uniform in [−rotate_degrees, rotate_degrees] (the paper's 20°), zero fill.
    - colorjitter: the paper's ColorJitter(0.2, 0.2, 0.2, 0.2): brightness, contrast and saturation
      factors uniform in [0.8, 1.2] and a hue shift uniform in [-0.2, 0.2] turns, per sample;
      "colorjitter:S" uses [1 - S, 1 + S] and [-S, S].
    - mixup: x ← λx + (1 − λ)x[perm], λ ~ Beta(α, α) per batch (α = 1: the paper's λ ~ U[0, 1]).
    - cutmix: a box of area 1 − λ pasted from x[perm]; Mix.lam is the exact kept fraction.
    - noise: additive Gaussian pixel noise, std 0.1 (≈ 25/255: visible but keeps the class), then clamp.
    - uniform-noise: each image replaced by uniform pixel noise with probability p (default 0.2),
      drawn anew in every batch: the paper's noise arm (App. A.1). The `noise:p` extra-data kind
      instead replaces images once, at load.
    """

    def __init__(self, names: Sequence[str], *, mixup_alpha: float = 1.0, rotate_degrees: float = 20.0,
                 crop_padding: int = 4):
        names = tuple(names)
        parsed = []
        for name in names:
            try:
                parsed.append(parse_augmentation(name))
            except ValueError as e:
                raise ValueError(f"augmentation {name!r}: {e}") from None
        kinds = [kind for kind, _ in parsed]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each augmentation at most once, got {list(names)!r}")
        parameters = {kind: augmentation_parameter(name) for (kind, _), name in zip(parsed, names)}
        self.jitter = parameters.get("colorjitter")
        self.noise_p = parameters.get("uniform-noise")
        if mixup_alpha <= 0:
            raise ValueError(f"mixup_alpha must be > 0, got {mixup_alpha}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.names = names
        self.mixup_alpha = float(mixup_alpha)
        self.rotate_degrees = abs(float(rotate_degrees))
        self.crop_padding = int(crop_padding)
        self._views = tuple(n for n in kinds if n not in _MIX_OPS)
        self._mixes = tuple(n for n in _MIX_OPS if n in kinds)

    def __repr__(self) -> str:
        return f"Augmenter({list(self.names)!r})"

    @property
    def finite_views(self) -> bool:
        """Only crops and flips (or nothing): every output is one of `num_views` views of its input."""
        return all(n in _INDEX_OPS for n in self.names)

    def _view_radix(self, name: str) -> int:
        # A crop's code is (dy + p)·(2p + 1) + (dx + p); a flip's is 1 when flipped.
        return (2 * self.crop_padding + 1) ** 2 if name == "crop" else 2

    @property
    def num_views(self) -> int:
        if not self.finite_views:
            raise ValueError(f"{self!r} has no finite set of views")
        return math.prod(self._view_radix(n) for n in self.names)

    @property
    def geometry(self) -> str:
        """What fixes the meaning of a view index (part of a teacher-cache key)."""
        return f"{'+'.join(self.names) or 'none'}/pad{self.crop_padding}"

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Mix | None]:
        out = self.augment(images, generator)
        return out.images, out.mix

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> Augmented:
        """The augmented batch, the mixing applied (if any) and, for finite views, each row's view index."""
        b = images.shape[0]
        if not self.names:
            return Augmented(images, None, torch.zeros(b, dtype=torch.long, device=images.device))
        if images.dim() != 4 or not images.is_floating_point():
            raise TypeError(f"expected a float (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        _, _, h, w = images.shape
        device = images.device
        out = images
        index_map: _IndexMap | None = None
        views, stride = torch.zeros(b, dtype=torch.long, device=device), 1
        for name in self._views:
            if name in _INDEX_OPS:
                index_map = index_map or _IndexMap(b, h, w, device)
                if name == "crop":
                    p = self.crop_padding
                    dy, dx = torch.randint(-p, p + 1, (2, b), generator=generator, device=device)
                    code = (dy + p) * (2 * p + 1) + (dx + p)
                else:
                    code = (torch.rand(b, generator=generator, device=device) < 0.5).long()
                index_map.apply_code(name, code, self.crop_padding)
                views += code * stride
                stride *= self._view_radix(name)
                continue
            if index_map is not None:
                out, index_map = index_map.apply(out), None
            if name == "rotate":
                u = torch.rand(b, generator=generator, device=device)
                if self.rotate_degrees > 0:  # a 0° bound is exactly the identity, not a resample
                    out = _rotate(out, (2.0 * u - 1.0) * math.radians(self.rotate_degrees))
            elif name == "colorjitter":
                # U[-1, 1] draws scaled: factors 1 + S*u (brightness, contrast, saturation), hue S*u.
                u = 2.0 * torch.rand((4, b), generator=generator, device=device) - 1.0
                factors = u * self.jitter + torch.tensor([1.0, 1.0, 1.0, 0.0], device=device).view(4, 1)
                out = _color_jitter(out, factors)
            elif name == "noise":
                noise = torch.randn(out.shape, generator=generator, device=device, dtype=out.dtype)
                out = (out + NOISE_STD * noise).clamp_(0.0, 1.0)
            elif name == "uniform-noise":
                replace = torch.rand(b, generator=generator, device=device) < self.noise_p
                noise = torch.rand(out.shape, generator=generator, device=device, dtype=out.dtype)
                out = torch.where(replace.view(-1, 1, 1, 1), noise, out)
        if index_map is not None:
            out = index_map.apply(out)
        views = views if self.finite_views else None
        if not self._mixes:
            return Augmented(out, None, views)
        return Augmented(*self._mix(out, generator), None)

    def render(self, images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Each row of `images` as its view `views[i]`: the pixels `augment` gives when it draws that view."""
        if not self.finite_views:
            raise ValueError(f"{self!r} has no finite set of views")
        b, _, h, w = images.shape
        index_map, stride = _IndexMap(b, h, w, images.device), 1
        for name in self.names:
            radix = self._view_radix(name)
            index_map.apply_code(name, (views // stride) % radix, self.crop_padding)
            stride *= radix
        return index_map.apply(images) if self.names else images

    def _mix(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Mix]:
        b, _, h, w = images.shape
        device = images.device
        perm = torch.randperm(b, generator=generator, device=device)
        lam = _sample_beta(self.mixup_alpha, 1, generator, device)  # (1,), float32
        partner = images[perm]
        results = []
        if "mixup" in self._mixes:
            weight = lam.to(images.dtype).view(1, 1, 1, 1)
            mixed = (weight * images + (1.0 - weight) * partner).clamp_(0.0, 1.0)
            results.append((mixed, lam))
        if "cutmix" in self._mixes:
            box = _cutmix_mask(lam, h, w, generator)
            kept = 1.0 - box.sum(dtype=torch.float32).view(1) / (h * w)
            results.append((torch.where(box, partner, images), kept))
        if len(results) == 1:
            out, lam_out = results[0]
        else:
            use_cutmix = torch.rand(1, generator=generator, device=device) < 0.5
            out = torch.where(use_cutmix.view(1, 1, 1, 1), results[1][0], results[0][0])
            lam_out = torch.where(use_cutmix, results[1][1], results[0][1])
        return out, Mix(perm=perm, lam=lam_out.expand(b).contiguous())
