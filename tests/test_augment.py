"""Batched augmentation: shapes, ranges, determinism, and each op against a plain per-sample reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kernels.augment import Augmenter, Mix, _IndexMap, _rotate, _sample_beta
from kernels.catalog import AUGMENTATIONS


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def _images(b: int = 16, c: int = 3, h: int = 12, w: int = 10, seed: int = 1) -> torch.Tensor:
    return torch.rand((b, c, h, w), generator=_gen(seed))


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: out[..., i, j] = x[..., i + dy, j + dx], zero outside (a plain slice copy)."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src_ys, src_xs = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    out[..., ys, xs] = x[..., src_ys, src_xs]
    return out


def _matching_shift(sample: torch.Tensor, original: torch.Tensor, pad: int, flips=(False,)):
    for flip in flips:
        src = original.flip(-1) if flip else original
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if torch.equal(sample, _shifted(src, dy, dx)):
                    return dy, dx, flip
    return None


def test_empty_names_is_identity():
    x = _images()
    out, mix = Augmenter([])(x, _gen())
    assert out is x and mix is None


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError) as err:
        Augmenter(["crop", "solarize"])
    message = str(err.value)
    assert "solarize" in message
    assert all(name in message for name in AUGMENTATIONS)


@pytest.mark.parametrize("names", [[n] for n in AUGMENTATIONS] + [list(AUGMENTATIONS)])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_range_preserved(names, channels):
    x = _images(c=channels)
    before = x.clone()
    out, mix = Augmenter(names)(x, _gen())
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before), "the input must not be modified in place"
    if {"mixup", "cutmix"} & set(names):
        assert isinstance(mix, Mix)
        assert mix.perm.shape == (x.shape[0],) and mix.lam.shape == (x.shape[0],)
        assert sorted(mix.perm.tolist()) == list(range(x.shape[0]))
        assert ((mix.lam >= 0) & (mix.lam <= 1)).all()
    else:
        assert mix is None


@pytest.mark.parametrize("names", [[n] for n in AUGMENTATIONS] + [list(AUGMENTATIONS)])
def test_deterministic_under_seed(names):
    x = _images()
    aug = Augmenter(names)
    a, mix_a = aug(x, _gen(7))
    b, mix_b = aug(x, _gen(7))
    c, _ = aug(x, _gen(8))
    assert torch.equal(a, b)
    if mix_a is not None:
        assert torch.equal(mix_a.perm, mix_b.perm) and torch.equal(mix_a.lam, mix_b.lam)
    assert not torch.equal(a, c)


def test_resumes_from_saved_generator_state():
    x = _images()
    aug = Augmenter(["crop", "hflip", "rotate", "mixup"])
    g = _gen(3)
    aug(x, g)
    state = g.get_state()
    expected, _ = aug(x, g)
    g2 = _gen(99)
    g2.set_state(state)
    resumed, _ = aug(x, g2)
    assert torch.equal(expected, resumed)


def test_uses_only_the_given_generator():
    x = _images()
    aug = Augmenter(list(AUGMENTATIONS))
    torch.manual_seed(0)
    expected_global = torch.rand(3)
    torch.manual_seed(0)
    g = _gen(5)
    state = g.get_state()
    out_a, _ = aug(x, g)
    assert not torch.equal(g.get_state(), state), "the generator must advance"
    assert torch.equal(torch.rand(3), expected_global), "the global RNG must not be touched"
    torch.manual_seed(123)  # a different global seed changes nothing
    out_b, _ = aug(x, _gen(5))
    assert torch.equal(out_a, out_b)


def test_crop_is_a_bounded_zero_filled_shift():
    x = _images(b=64, c=2, h=9, w=11) + 0.01  # no zeros in the input, so fill is unambiguous
    x = x.clamp(max=1)
    out, _ = Augmenter(["crop"], crop_padding=3)(x, _gen(2))
    shifts = []
    for sample, original in zip(out, x):
        found = _matching_shift(sample, original, pad=3)
        assert found is not None, "each sample must be the input shifted by at most the padding"
        shifts.append(found[:2])
    assert len(set(shifts)) > 10, "shifts must be spread, not constant"
    assert any(s != (0, 0) for s in shifts)


def test_crop_default_padding_covers_all_offsets():
    x = torch.arange(128, dtype=torch.float32).view(128, 1, 1, 1).expand(128, 1, 32, 32) / 128 + 1 / 256
    aug = Augmenter(["crop"])
    seen_dy, seen_dx = set(), set()
    for seed in range(4):
        out, _ = aug(x, _gen(seed))
        # a constant image shifted by (dy, dx) has |dy| zero rows and |dx| zero columns
        zero_rows = (out[:, 0] == 0).all(dim=2).sum(dim=1)
        zero_cols = (out[:, 0] == 0).all(dim=1).sum(dim=1)
        seen_dy.update(zero_rows.tolist())
        seen_dx.update(zero_cols.tolist())
    assert seen_dy == set(range(5)) and seen_dx == set(range(5))


def test_crop_then_hflip_is_a_shift_of_the_input_or_its_mirror():
    x = _images(b=32, c=1, h=8, w=8) * 0.9 + 0.05
    out, _ = Augmenter(["crop", "hflip"], crop_padding=2)(x, _gen(4))
    flips = []
    for sample, original in zip(out, x):
        found = _matching_shift(sample, original, pad=2, flips=(False, True))
        assert found is not None
        flips.append(found[2])
    assert any(flips) and not all(flips)


def test_index_map_composition_matches_sequential_ops():
    # A crop, a flip, a second crop: lines zeroed by the first crop must stay zero when the second
    # shifts them back into view, as in applying the ops one by one.
    x = _images(b=4, c=2, h=7, w=9) + 0.01
    dy1, dx1 = torch.tensor([3, -2, 0, 1]), torch.tensor([-3, 2, 1, 0])
    flip = torch.tensor([True, False, True, True])
    dy2, dx2 = torch.tensor([-3, 2, -1, 0]), torch.tensor([3, -1, 0, -2])
    index_map = _IndexMap(4, 7, 9, x.device)
    index_map.shift(dy1, dx1)
    index_map.hflip(flip)
    index_map.vflip(~flip)
    index_map.shift(dy2, dx2)
    fused = index_map.apply(x)
    for i in range(4):
        ref = _shifted(x[i], int(dy1[i]), int(dx1[i]))
        ref = ref.flip(-1) if flip[i] else ref.flip(-2)
        ref = _shifted(ref, int(dy2[i]), int(dx2[i]))
        assert torch.equal(fused[i], ref)


@pytest.mark.parametrize("name,dim", [("hflip", -1), ("vflip", -2)])
def test_flip_is_identity_or_mirror_and_both_occur(name, dim):
    x = _images(b=64)
    out, _ = Augmenter([name])(x, _gen(6))
    flipped = []
    for sample, original in zip(out, x):
        is_same, is_flip = torch.equal(sample, original), torch.equal(sample, original.flip(dim))
        assert is_same or is_flip
        flipped.append(is_flip)
    assert 10 < sum(flipped) < 54


def test_rotate_zero_bound_is_identity():
    x = _images()
    out, _ = Augmenter(["rotate"], rotate_degrees=0)(x, _gen())
    assert torch.equal(out, x)


def test_rotate_keeps_centre_of_constant_image_and_changes_corners():
    x = torch.full((32, 3, 15, 15), 0.7)
    out, _ = Augmenter(["rotate"])(x, _gen(3))
    assert torch.allclose(out[:, :, 7, 7], x[:, :, 7, 7], atol=1e-5)
    # within ±20° the inscribed disc stays filled; corners of most samples fall outside and fill zeros
    ys, xs = torch.meshgrid(torch.arange(15.0), torch.arange(15.0), indexing="ij")
    disc = ((ys - 7) ** 2 + (xs - 7) ** 2) <= 5.5**2
    assert torch.allclose(out[:, :, disc], torch.full_like(out[:, :, disc], 0.7), atol=1e-5)
    assert (out[:, :, 0, 0] < 0.7).float().mean() > 0.5


def test_rotate_by_right_angle_matches_rot90():
    x = _images(b=2, h=8, w=8)
    quarter = torch.full((2,), math.pi / 2)
    out = _rotate(x, quarter)
    assert torch.allclose(out, torch.rot90(x, 1, (-2, -1)), atol=1e-5) or \
        torch.allclose(out, torch.rot90(x, -1, (-2, -1)), atol=1e-5)


def test_rotate_non_square_half_turn_is_exact_mirror():
    # a 180° turn needs no aspect correction to be right; a wrong conjugation would shear it
    x = _images(b=2, h=6, w=10)
    out = _rotate(x, torch.full((2,), math.pi))
    assert torch.allclose(out, x.flip(-1).flip(-2), atol=1e-5)


def test_colorjitter_changes_samples_independently_and_keeps_grey_grey():
    x = torch.rand((32, 1, 1, 1), generator=_gen(1)).expand(32, 3, 6, 6).contiguous() * 0.5 + 0.25
    out, _ = Augmenter(["colorjitter"])(x, _gen(2))
    # a grey image stays grey (saturation and hue have nothing to act on) and constant (contrast neither)
    assert torch.allclose(out, out[:, :1, :1, :1].expand_as(out), atol=1e-6)
    ratio = out[:, 0, 0, 0] / x[:, 0, 0, 0]
    assert ratio.std() > 0.05


@pytest.mark.parametrize(("names", "strength"), [(["colorjitter"], 0.2), (["colorjitter:0.35"], 0.35)])
def test_colorjitter_brightness_factor_range_on_a_constant_image(names, strength):
    # On a constant grey image only brightness acts, so out / in is the drawn factor: uniform in
    # [1 - S, 1 + S] (the paper's ColorJitter(0.2, ...) gives [0.8, 1.2]).
    x = torch.full((4000, 3, 2, 2), 0.5)
    out, _ = Augmenter(names)(x, _gen(5))
    factor = out[:, 0, 0, 0] / 0.5
    assert factor.min() >= 1 - strength - 1e-5 and factor.max() <= 1 + strength + 1e-5
    assert factor.min() < 1 - 0.98 * strength and factor.max() > 1 + 0.98 * strength
    assert abs(float(factor.mean()) - 1.0) < 0.01
    assert abs(float(factor.std()) - 2 * strength / math.sqrt(12)) < 0.01   # uniform's std


def _colorsys_hue_shift(image: torch.Tensor, shift: float) -> torch.Tensor:
    """Reference: Python's colorsys, pixel by pixel."""
    import colorsys
    out = torch.empty_like(image)
    c, h, w = image.shape
    for i in range(h):
        for j in range(w):
            hh, ss, vv = colorsys.rgb_to_hsv(*image[:, i, j].tolist())
            out[:, i, j] = torch.tensor(colorsys.hsv_to_rgb((hh + shift) % 1.0, ss, vv))
    return out


def test_hue_shift_matches_colorsys():
    from kernels.augment import _adjust_hue
    x = _images(b=4, c=3, h=5, w=6, seed=7)
    x[0, :, 0, 0] = 0.0          # black, white and grey pixels keep their colour
    x[0, :, 0, 1] = 1.0
    x[0, :, 0, 2] = 0.4
    shifts = torch.tensor([0.2, -0.2, 0.5, -0.05])
    got = _adjust_hue(x, shifts)
    for k in range(4):
        torch.testing.assert_close(got[k], _colorsys_hue_shift(x[k], float(shifts[k])), atol=1e-5, rtol=1e-5)


def test_colorjitter_hue_shift_range_on_a_constant_colour():
    # Brightness, contrast and saturation scale or blend towards grey, which keeps the hue (no channel
    # clips for this colour at +-20%); so the hue change is the drawn shift, uniform in [-0.2, 0.2].
    import colorsys
    colour = (0.6, 0.3, 0.2)
    x = torch.tensor(colour).view(1, 3, 1, 1).expand(2000, 3, 1, 1).contiguous()
    out, _ = Augmenter(["colorjitter"])(x, _gen(9))
    base = colorsys.rgb_to_hsv(*colour)[0]
    shifts = torch.tensor([((colorsys.rgb_to_hsv(*px.tolist())[0] - base + 0.5) % 1.0) - 0.5
                           for px in out[:, :, 0, 0]])
    assert shifts.abs().max() <= 0.2 + 1e-4
    assert shifts.min() < -0.19 and shifts.max() > 0.19


def test_colorjitter_strength_is_checked():
    with pytest.raises(ValueError, match="between 0 and 0.5"):
        Augmenter(["colorjitter:0.9"])
    with pytest.raises(ValueError, match="no parameter"):
        Augmenter(["crop:0.2"])
    with pytest.raises(ValueError, match="at most once"):
        Augmenter(["colorjitter", "colorjitter:0.3"])


def test_noise_is_additive_with_std_point_one():
    x = torch.full((64, 3, 16, 16), 0.5)
    out, _ = Augmenter(["noise"])(x, _gen(3))
    delta = out - x
    assert abs(delta.mean()) < 0.005
    assert abs(delta.std() - 0.1) < 0.005


def test_mixup_output_matches_returned_mix_exactly():
    x = _images(b=32)
    out, mix = Augmenter(["mixup"])(x, _gen(9))
    lam = mix.lam.view(-1, 1, 1, 1)
    assert torch.equal(out, (lam * x + (1 - lam) * x[mix.perm]).clamp(0, 1))
    assert torch.equal(mix.lam, mix.lam[:1].expand(32)), "one λ per batch"


def test_mixup_lambda_is_uniform_for_alpha_one():
    aug = Augmenter(["mixup"], mixup_alpha=1.0)
    x = _images(b=2, c=1, h=2, w=2)
    g = _gen(11)
    lams = torch.stack([aug(x, g)[1].lam[0] for _ in range(2000)])
    assert abs(lams.mean() - 0.5) < 0.02
    assert abs(lams.var() - 1 / 12) < 0.01


@pytest.mark.parametrize("alpha", [0.1, 0.4, 1.0, 2.0, 8.0])
def test_beta_sampler_matches_numpy(alpha):
    n = 20000
    ours = _sample_beta(alpha, n, _gen(12), torch.device("cpu")).double().numpy()
    assert np.isfinite(ours).all() and (ours >= 0).all() and (ours <= 1).all()
    assert abs(ours.mean() - 0.5) < 0.01
    assert abs(ours.var() - 1 / (4 * (2 * alpha + 1))) < 0.01
    reference = np.sort(np.random.default_rng(0).beta(alpha, alpha, n))
    grid = np.linspace(0.01, 0.99, 99)
    ks = np.abs(np.searchsorted(np.sort(ours), grid) - np.searchsorted(reference, grid)).max() / n
    assert ks < 0.03


def test_cutmix_lambda_is_the_kept_fraction():
    b, h, w = 16, 12, 10
    # every image has its own value everywhere, so a pixel's origin is readable from its value
    x = (torch.arange(b, dtype=torch.float32) + 1).div(b + 1).view(b, 1, 1, 1).expand(b, 3, h, w).contiguous()
    aug = Augmenter(["cutmix"])
    g = _gen(13)
    saw_partial = False
    for _ in range(20):
        out, mix = aug(x, g)
        own = (out == x).all(dim=1).float().mean(dim=(1, 2))
        from_partner = (out == x[mix.perm]).all(dim=1)
        kept = (out == x).all(dim=1)
        fixed = mix.perm == torch.arange(b)
        assert (kept | from_partner).all()
        assert torch.allclose(mix.lam[~fixed], own[~fixed], atol=1e-6)
        assert torch.equal(mix.lam, mix.lam[:1].expand(b))
        saw_partial |= bool(((own > 0) & (own < 1)).any())
    assert saw_partial


def test_cutmix_box_is_one_rectangle_shared_by_the_batch():
    # half the rows are 0 and half 1, so every row whose partner is in the other half shows the box
    b, h, w = 8, 16, 16
    x = torch.cat([torch.zeros(b // 2, 1, h, w), torch.ones(b // 2, 1, h, w)])
    aug = Augmenter(["cutmix"])
    g = _gen(14)
    for _ in range(10):
        out, _ = aug(x, g)
        pasted = (out != x).any(dim=0)[0]
        if pasted.any():
            ys, xs = pasted.nonzero(as_tuple=True)
            box = torch.zeros_like(pasted)
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            assert torch.equal(pasted, box)
            per_row = (out != x)[:, 0]
            for changed in per_row:  # each row shows the whole box (partner in the other half) or nothing
                assert torch.equal(changed, pasted) or not changed.any()


def test_mixup_and_cutmix_together_pick_one_per_batch():
    b = 8
    x = (torch.arange(b, dtype=torch.float32) + 1).div(b + 1).view(b, 1, 1, 1).expand(b, 1, 8, 8).contiguous()
    aug = Augmenter(["mixup", "cutmix"])
    g = _gen(15)
    kinds = set()
    for _ in range(20):
        out, mix = aug(x, g)
        lam = mix.lam.view(-1, 1, 1, 1)
        if torch.equal(out, (lam * x + (1 - lam) * x[mix.perm]).clamp(0, 1)):
            kinds.add("mixup")
        elif ((out == x) | (out == x[mix.perm])).all():
            kinds.add("cutmix")
        else:
            pytest.fail("output is neither a mixup nor a cutmix of the batch")
    assert kinds == {"mixup", "cutmix"}


def test_mix_comes_after_view_ops_regardless_of_order():
    x = _images(b=8)
    a, mix_a = Augmenter(["mixup", "hflip"])(x, _gen(16))
    b, mix_b = Augmenter(["hflip", "mixup"])(x, _gen(16))
    assert torch.equal(a, b) and torch.equal(mix_a.perm, mix_b.perm)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Augmenter(["mixup"], mixup_alpha=0)
    with pytest.raises(ValueError):
        Augmenter(["crop"], crop_padding=-1)
    with pytest.raises(TypeError):
        Augmenter(["crop"])(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), _gen())


def test_uniform_noise_replaces_about_p_of_each_batch_anew():
    # The paper's noise arm: each image of every batch is uniform noise with probability p.
    x = torch.full((4000, 3, 4, 4), 0.5)
    g = _gen(11)
    first, _ = Augmenter(["uniform-noise"])(x, g)
    second, _ = Augmenter(["uniform-noise"])(x, g)
    kept = [(out == 0.5).flatten(1).all(dim=1) for out in (first, second)]
    for out, k in zip((first, second), kept):
        assert abs(1 - float(k.float().mean()) - 0.2) < 0.02          # default p = 0.2
        noise = out[~k]
        assert abs(float(noise.mean()) - 0.5) < 0.01 and abs(float(noise.std()) - 12 ** -0.5) < 0.01
        assert noise.min() >= 0 and noise.max() <= 1
    assert not torch.equal(kept[0], kept[1])                           # redrawn each batch
    strong, _ = Augmenter(["uniform-noise:0.5"])(x, _gen(3))
    assert abs(1 - float((strong == 0.5).flatten(1).all(dim=1).float().mean()) - 0.5) < 0.03
    none, _ = Augmenter(["uniform-noise:0"])(x, _gen(3))
    assert torch.equal(none, x)
    # not a finite set of views: a teacher-output cache cannot hold it, the teacher runs online
    assert not Augmenter(["crop", "uniform-noise"]).finite_views
