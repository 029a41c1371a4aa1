"""Per-minibatch synthetic mixing (`data.extra = ["synthetic:PATH:ratio=S:R"]`, kernels.synthetic), checked
against hand counts and an independent numpy loss: the rows per batch, no augmentation on the synthetic
rows, their own τ in the loss only, the exact epoch accounting, the online teacher, and a small run."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from cache_helpers import config

from kdtui.core.spec import SpecError, check_files, parse_spec, spec_hash
from kernels import catalog, engine, teacher_outputs
from kernels.augment import Augmenter
from kernels.config import EngineConfig, TrainConfig
from kernels.losses import distillation_loss, total_loss
from kernels.synthetic import SyntheticMixer, SyntheticPool

POOL_SIZE = 40


def write_pool(path, size=28, n=POOL_SIZE, seed=3):
    """A uint8 (N, 1, H, W) tensor saved with torch.save: the format `tensors:` and `synthetic:` load."""
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    torch.save(images, path)
    return images


def mixed_config(path, ratio="1:4", synthetic_temperature=1.0, augment=("crop", "hflip"), epochs=1):
    cfg = config(members=1, epochs=epochs, augment=augment)
    # digits at 12x12 (LeNet-5's smallest is 10) keep the run fast
    return replace(cfg, data=replace(cfg.data, image_size=12, extra=(f"synthetic:{path}:ratio={ratio}",)),
                   distill=replace(cfg.distill, synthetic_temperature=synthetic_temperature))


def test_the_item_reads_a_path_and_a_ratio_of_synthetic_to_real_rows():
    item = catalog.parse_extra(" synthetic : ~/gan:v2.pt : ratio = 1.0 : 4 ")
    assert (item.kind, item.value, item.ratio) == ("synthetic", "~/gan:v2.pt", (1.0, 4.0))
    assert item.canonical == "synthetic:~/gan:v2.pt:ratio=1:4"
    for bad in ("synthetic:x.pt", "synthetic:x.pt:ratio=0:4", "synthetic:x.pt:ratio=1:0", "synthetic:x.pt:ratio=5:1",
                "synthetic:x.pt:ratio=0.2", "synthetic::ratio=1:4"):
        with pytest.raises(ValueError):
            catalog.parse_extra(bad)


@pytest.mark.parametrize("ratio, real, synthetic", [((1, 4), 128, 32), ((1, 4), 100, 25), ((3, 4), 128, 96),
                                                    ((1, 1), 64, 64), ((1, 4), 1, 0)])
def test_each_batch_gets_s_synthetic_rows_per_r_real_rows(ratio, real, synthetic):
    pool = SyntheticPool(torch.randint(0, 256, (POOL_SIZE, 1, 8, 8), dtype=torch.uint8), *map(float, ratio))
    out = SyntheticMixer(Augmenter(("crop",)), pool).augment(torch.rand(real, 1, 8, 8), torch.Generator().manual_seed(0))
    assert out.images.shape[0] == real + synthetic and out.synthetic == synthetic and out.views is None
    if (ratio, real) == ((1, 4), 128):
        assert synthetic / (real + synthetic) == 0.2   # 1:4 is a fifth of the batch


def test_synthetic_rows_are_pool_images_unaugmented_and_drawn_afresh_each_batch():
    pool_u8 = torch.randint(0, 256, (POOL_SIZE, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mixer = SyntheticMixer(Augmenter(("crop", "hflip", "rotate", "colorjitter")), SyntheticPool(pool_u8, 1.0, 4.0))
    real = torch.rand(64, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(7)
    first, second = mixer.augment(real, g), mixer.augment(real, g)
    flat_pool = (pool_u8.float() / 255.0).flatten(1)
    picked = []
    for out in (first, second):
        rows = out.images[64:].flatten(1)
        # every synthetic row is exactly one pool image, pixel for pixel (no crop, flip, rotation or jitter)
        match = (rows[:, None, :] == flat_pool[None, :, :]).all(-1)
        assert bool((match.sum(1) == 1).all())
        picked.append(match.float().argmax(1))
        assert not torch.equal(out.images[:64], real)   # while the real rows were augmented
    assert not torch.equal(picked[0], picked[1])        # a fresh draw in every batch


def test_mixup_mixes_the_real_rows_only():
    pool = SyntheticPool(torch.randint(0, 256, (POOL_SIZE, 1, 8, 8), dtype=torch.uint8), 1.0, 4.0)
    out = SyntheticMixer(Augmenter(("mixup",)), pool).augment(torch.rand(16, 1, 8, 8), torch.Generator().manual_seed(4))
    assert torch.equal(out.mix.perm[16:], torch.arange(16, 20)) and bool((out.mix.lam[16:] == 1).all())
    assert bool((out.mix.perm[:16] < 16).all())


def _np_kl_rows(student: np.ndarray, teacher: np.ndarray, tau: float) -> np.ndarray:
    """Hinton's −τ² Σ_c p_t^τ log p_s^τ per row, in float64 numpy."""
    def log_softmax(z):
        z = z / tau
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(np.exp(log_softmax(teacher)) * log_softmax(student)).sum(axis=1) * tau ** 2


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_the_synthetic_temperature_applies_to_the_synthetic_rows_only(alpha):
    rng = np.random.default_rng(0)
    real, synthetic, classes = 12, 3, 5
    student = rng.normal(scale=3.0, size=(real + synthetic, classes))
    teacher = rng.normal(scale=3.0, size=(real + synthetic, classes))
    labels = rng.integers(0, classes, size=real)
    labels[:2] = -1                                      # unlabelled real rows, as extra data carries
    rows = np.concatenate([_np_kl_rows(student[:real], teacher[:real], 4.0),
                           _np_kl_rows(student[real:], teacher[real:], 1.0)])
    expected = rows.mean()
    if alpha:
        log_p = student[:real] - np.log(np.exp(student[:real]).sum(axis=1, keepdims=True))
        labelled = labels >= 0
        ce = -log_p[labelled, labels[labelled]].mean()
        expected = (1 - alpha) * expected + alpha * ce
    got = total_loss(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32),
                     torch.tensor(labels), "kl", 4.0, alpha, None, synthetic, 1.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # the same rows all at τ = 4 give another value: the option is not a no-op here
    uniform = total_loss(torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32),
                         torch.tensor(labels), "kl", 4.0, alpha, None, synthetic, 0.0)
    all_at_4 = _np_kl_rows(student, teacher, 4.0).mean()
    assert abs(float(uniform) - float(got)) > 1e-3
    if not alpha:
        assert float(uniform) == pytest.approx(all_at_4, rel=1e-5)
        assert float(uniform) == pytest.approx(float(distillation_loss(
            torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32))), rel=1e-6)


def test_an_epoch_counts_the_synthetic_rows_it_trained(tmp_path):
    """train_loss and train_agreement divide by every row trained, synthetic rows included: a step whose
    count is its synthetic rows must report their share of all rows, computed here from the batch sizes."""
    write_pool(tmp_path / "pool.pt")
    prepared = engine.prepare(mixed_config(tmp_path / "pool.pt"), torch.device("cpu"))
    n, batch = 300, 64
    train = TrainConfig(model="lenet5", epochs=1, batch_size=batch, lr=0.01)
    model = engine.build_model(train, prepared)
    phase = engine.Phase(name="student", train=train, prepared=prepared, images=prepared.distill_set.images[:n],
                         model=model, engine=EngineConfig(), seed=5,
                         augment=SyntheticMixer(Augmenter(()), prepared.synthetic))

    def step(idx, batch_):
        zero = sum(p.sum() for p in model.parameters()) * 0.0
        return zero + 1.0, torch.tensor(batch_.synthetic)
    record, per_row = engine.train_epoch(phase, 1, step)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    synthetic = [round(b / 4) for b in sizes]
    assert per_row == pytest.approx(sum(synthetic) / (n + sum(synthetic)), rel=1e-9)
    assert record["train_loss"] == pytest.approx(1.0, rel=1e-6)


def test_the_cache_plan_is_online_for_synthetic_mixing(tmp_path):
    fp32, gib = torch.float32, 2 ** 30
    plan = teacher_outputs.plan_teacher_cache(mixed_config(tmp_path / "pool.pt", epochs=50), Augmenter(("crop", "hflip")),
                                              100, 10, fp32, True, gib)
    assert plan.tier is None and plan.fill is None and "synthetic" in plan.reason
    # the same run without the item is cached: the item alone decides
    assert teacher_outputs.plan_teacher_cache(config(members=1, epochs=50), Augmenter(("crop", "hflip")),
                                              100, 10, fp32, True, gib).tier == "members"


def _spec_text(extra: str, synthetic_temperature: str = "synthetic_temperature = 1.0") -> str:
    return f"""
name = "mix"
device = "cpu"
[data]
dataset = "digits"
image_size = 12
extra = [{extra}]
[teacher]
model = "lenet5"
epochs = 1
[student]
epochs = 1
batch_size = 128
[distill]
temperature = 4.0
{synthetic_temperature}
augment = ["crop", "hflip"]
"""


def test_the_spec_takes_one_synthetic_item_and_keeps_the_temperature_out_of_unmixed_identities(tmp_path):
    path = tmp_path / "pool.pt"
    spec = parse_spec(_spec_text(f'"synthetic: {path} :ratio=1:4"'))
    assert spec.data.extra == [f"synthetic:{path}:ratio=1:4"]
    cfg = spec.to_run_config()
    assert cfg.distill.synthetic_temperature == 1.0 and cfg.distill.temperature == 4.0
    with pytest.raises(SpecError, match="no file"):
        check_files([spec])
    write_pool(path)
    check_files([spec])
    with pytest.raises(SpecError, match="at most one"):
        parse_spec(_spec_text(f'"synthetic:{path}:ratio=1:4", "synthetic:{path}:ratio=1:2"'))
    # without a synthetic item the option changes nothing, so it does not split run identities
    plain = [parse_spec(_spec_text('"noise:0.1"', line)) for line in ("synthetic_temperature = 1.0", "")]
    assert spec_hash(plain[0]) == spec_hash(plain[1])
    mixed = [parse_spec(_spec_text(f'"synthetic:{path}:ratio=1:4"', line)) for line in ("synthetic_temperature = 1.0", "")]
    assert spec_hash(mixed[0]) != spec_hash(mixed[1])


def test_a_mixed_run_on_digits_end_to_end(tmp_path):
    path = tmp_path / "pool.pt"
    pool = write_pool(path, size=8)                 # 8x8 like digits' own images: resized to 12 at load
    cfg = parse_spec(_spec_text(f'"synthetic:{path}:ratio=1:4"')).to_run_config()
    prepared = engine.prepare(cfg, torch.device("cpu"))
    assert len(prepared.distill_set) == 1437        # the pool is not appended to the distillation set
    assert prepared.synthetic.images.shape == (len(pool), 1, 12, 12)
    events = []
    result = engine.run(cfg, on_event=events.append)
    assert result["teacher_cache"]["tier"] == "online" and "synthetic" in result["teacher_cache"]["reason"]
    last = result["history"][-1]
    assert last["epoch"] == 1 and 0.0 <= last["train_agreement"] <= 1.0 and np.isfinite(last["train_loss"])
    assert last["test_examples"] == 360
