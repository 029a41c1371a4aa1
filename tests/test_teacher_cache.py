"""The teacher-output cache is exact: cached outputs are the online teacher's, runs with and without it
match, each (member, example, view) is computed once across a sweep, and bad files are never trusted."""
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cache_helpers import AUGMENT, config, fill_half_and_save, untrained_teachers

from kernels import engine
from kernels.augment import Augmenter
from kernels.events import Log
from kernels.teacher_cache import CacheFile, MemberTable


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(config(), torch.device("cpu"))


def open_cache(prepared, teachers, fill, augment=AUGMENT):
    cfg = config(members=len(teachers))
    ensemble = engine.load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    aug = Augmenter(augment)
    cache = engine.open_teacher_cache(cfg, prepared, ensemble, teachers, aug, lambda e: None, fill)
    return cache, ensemble, aug


@pytest.mark.parametrize("names", [(), ("crop",), ("hflip",), ("crop", "hflip", "vflip"), ("vflip", "crop")])
def test_the_view_index_renders_the_view_that_was_drawn(names):
    aug = Augmenter(names, crop_padding=3)
    images = torch.rand(64, 3, 12, 12)
    drawn = aug.augment(images, torch.Generator().manual_seed(5))
    assert drawn.views.min() >= 0 and drawn.views.max() < aug.num_views
    assert torch.equal(aug.render(images, drawn.views), drawn.images)
    # The augmentation draws exactly what it drew before views existed: same generator, same pixels.
    again, _ = aug(images, torch.Generator().manual_seed(5))
    assert torch.equal(again, drawn.images)


def test_augmentations_without_finite_views_have_no_view_index():
    for names in (("rotate",), ("crop", "colorjitter"), ("mixup",), ("hflip", "noise"), ("cutmix",)):
        aug = Augmenter(names)
        assert not aug.finite_views
        assert aug.augment(torch.rand(4, 3, 8, 8), torch.Generator().manual_seed(0)).views is None


@pytest.mark.parametrize("fill", ["lazy", "full"])
def test_cached_outputs_equal_the_online_teacher_on_the_same_draws(prepared, fill):
    teachers = untrained_teachers(prepared, 3)
    cache, ensemble, aug = open_cache(prepared, teachers, fill)
    images = prepared.distill_set.images
    n = 384  # a part of the set keeps the test fast; the rest of the table stays empty
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # the second epoch repeats views the first one filled
        for idx in torch.randperm(n, generator=g).split(128):
            batch = prepared.augment(images[idx], aug, g)
            online = engine._forward(ensemble, prepared, batch.images)
            cached = cache.lookup(idx, batch.views, batch.images)
            torch.testing.assert_close(cached, online, rtol=0, atol=1e-5)
    summary = cache.summary()
    assert summary["mode"] == fill and summary["entries"] > 0
    if fill == "lazy":
        # Each member output computed once: fewer than the 2 epochs x 3 members x n lookups.
        assert summary["computed"] == summary["entries"] < 2 * 3 * n
        assert summary["hit_rate"] == pytest.approx(1 - summary["computed"] / (2 * 3 * n), abs=1e-6)
    else:
        assert summary["computed"] == summary["entries"] == 3 * len(images) * aug.num_views


def test_a_run_with_the_cache_matches_one_without(prepared):
    teachers = untrained_teachers(prepared, 2)
    online = engine.distill(config(cache="off"), prepared, teachers)
    cached = engine.distill(config(cache="auto"), prepared, teachers)
    assert online["teacher_cache"]["mode"] == "off" and cached["teacher_cache"]["mode"] == "lazy"
    assert cached["history"][1]["train_loss"] == pytest.approx(online["history"][1]["train_loss"], abs=1e-5)
    for name in ("test_agreement", "test_acc", "test_kl", "train_agreement", "train_agreement_eval"):
        assert cached["metrics"][name] == pytest.approx(online["metrics"][name], abs=0.005), name


def test_a_sweep_computes_each_member_output_once(prepared, tmp_path):
    """Temperatures x ensemble sizes sharing members: every training-step teacher forward is counted."""
    dirs = [tmp_path / f"member-{k}" for k in range(3)]
    teachers = untrained_teachers(prepared, 3, dirs)
    computed = {k: 0 for k in range(3)}

    def counting(cfg, prepared, states):
        ensemble = load(cfg, prepared, states)
        for k, member in enumerate(ensemble.members):
            def hook(module, inputs, output, k=k):
                # Clean-set predictions (evaluation) run under inference_mode; training steps do not.
                if not torch.is_inference_mode_enabled():
                    computed[k] += len(inputs[0])
            member.register_forward_hook(hook)
        return ensemble

    load = engine.load_teacher_ensemble
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "load_teacher_ensemble", counting)
        for members in (1, 3):
            for temperature in (1.0, 4.0):
                cfg = config(members=members, temperature=temperature)
                runs.append(engine.distill(cfg, prepared, teachers[:members])["teacher_cache"])
    stored = [_stored_entries(teachers[k]) for k in range(3)]
    for k in range(3):
        assert computed[k] == stored[k] > 0, (k, computed, stored)
    assert runs[1]["computed"] == 0 and runs[3]["computed"] == 0  # the second temperature only hits
    assert runs[1]["hit_rate"] == 1.0
    assert 0 < runs[2]["hit_rate"] < 1.0  # member 0 was warm, members 1 and 2 were not


def _stored_entries(teacher) -> int:
    files = list(Path(teacher.cache_dir).glob("views-*.pt"))
    assert len(files) == 1
    return int(torch.load(files[0], weights_only=True)["filled"].sum())


def test_a_damaged_or_mismatched_file_is_rebuilt_not_trusted(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 1, [tmp_path])
    engine.distill(config(members=1, epochs=2), prepared, teachers)
    path = next(tmp_path.glob("views-*.pt"))
    good = torch.load(path, weights_only=True)
    table = MemberTable(good["key"], good["logits"], good["filled"])
    file = CacheFile(tmp_path, good["key"])
    assert file.load(table)[1] == "loaded"

    tampered = {**good, "logits": good["logits"].clone()}
    tampered["logits"][int(good["filled"].nonzero()[0])] += 1.0
    torch.save(tampered, path)
    assert file.load(table) == (None, "cache file with a wrong checksum rebuilt")
    torch.save({**good, "key": good["key"] + "x"}, path)
    assert file.load(table) == (None, "cache file with a wrong key rebuilt")
    torch.save({**good, "logits": good["logits"][:-1]}, path)
    assert file.load(table)[0] is None and "shape" in file.load(table)[1]
    path.write_bytes(path.read_bytes()[:1000])
    assert file.load(table)[0] is None and "unreadable" in file.load(table)[1]

    # A run over the damaged file says so, computes afresh, matches the online teacher and repairs it.
    events = []
    cached = engine.distill(config(members=1, epochs=2), prepared, teachers, on_event=events.append)
    online = engine.distill(config(members=1, epochs=2, cache="off"), prepared, teachers)
    assert any(isinstance(e, Log) and "unreadable" in e.message for e in events)
    assert cached["history"][1]["train_loss"] == pytest.approx(online["history"][1]["train_loss"], abs=1e-5)
    assert file.load(table)[1] == "loaded"


def test_concurrent_fillers_merge_and_never_corrupt_the_file(tmp_path):
    key, rows, classes = "k", 4000, 10
    ctx = multiprocessing.get_context("spawn")  # fork would inherit a busy OpenMP pool and hang
    procs = [ctx.Process(target=fill_half_and_save, args=(tmp_path, key, rows, classes, h, 5)) for h in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    table, note = CacheFile(tmp_path, key).load(MemberTable.empty(key, rows, classes, torch.float32,
                                                                  torch.device("cpu")))
    assert note == "loaded" and bool(table.filled.all())
    assert bool((table.logits[: rows // 2] == 1).all()) and bool((table.logits[rows // 2:] == 2).all())


def test_auto_says_why_the_teacher_stays_online(prepared):
    fp32 = torch.float32
    plan = engine.plan_teacher_cache
    gib = 2 ** 30
    assert plan(config(cache="off"), Augmenter(AUGMENT), 100, 10, fp32, True, gib)[0] is None
    fill, why = plan(config(), Augmenter(("crop", "rotate")), 100, 10, fp32, True, gib)
    assert fill is None and "rotate" in why
    fill, why = plan(config(), Augmenter(("mixup",)), 100, 10, fp32, True, gib)
    assert fill is None and "mixup" in why
    noisy = replace(config(), data=replace(config().data, extra=("noise:0.2",)))
    assert "noise:p" in plan(noisy, Augmenter(AUGMENT), 100, 10, fp32, True, gib)[1]
    fill, why = plan(config(members=5), Augmenter(AUGMENT), 50_000, 100, fp32, True, gib)
    assert fill is None and "over the budget" in why  # 5 x 50k x 162 x 100 x 4 bytes > 1 GiB
    assert plan(config(epochs=1), Augmenter(AUGMENT), 100, 10, fp32, False, gib)[0] is None
    assert plan(config(epochs=1), Augmenter(AUGMENT), 100, 10, fp32, True, gib)[0] == "lazy"
    assert plan(config(epochs=200), Augmenter(AUGMENT), 100, 10, fp32, True, gib)[0] == "full"
    assert plan(config(), Augmenter(()), 100, 10, fp32, True, gib)[0] == "full"  # one view, drawn every epoch
