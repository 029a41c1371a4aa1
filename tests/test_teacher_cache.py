"""The teacher-output cache is exact: cached outputs are the online teacher's, runs with and without it
match (in either tier), each (member, example, view) is computed once across a sweep, and bad files are
never trusted."""
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cache_helpers import AUGMENT, config, counting_training_forwards, fill_half_and_save, untrained_teachers

from kernels import engine
from kernels.augment import Augmenter
from kernels.events import Log
from kernels import teacher_outputs
from kernels.teacher_cache import CacheFile, MemberTable


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(config(), torch.device("cpu"))


ENSEMBLE_ONLY_MB = 20  # admits one 9.1 MiB table: the ensemble tier for 2+ members (cache_helpers.config)


def open_cache(prepared, teachers, fill, augment=AUGMENT, budget_mb=0):
    cfg = config(members=len(teachers), budget_mb=budget_mb)
    ensemble = engine.load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    aug = Augmenter(augment)
    cache, _ = teacher_outputs.open_teacher_outputs(cfg, prepared, ensemble, teachers, aug, lambda e: None,
                                                    lambda model, x: engine.train_forward(model, prepared, x), fill)
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
    teachers = untrained_teachers(prepared, 5)  # 5: torch.logsumexp over members rounded by batch shape
    cache, ensemble, aug = open_cache(prepared, teachers, fill)
    images = prepared.distill_set.images
    n = 384  # a part of the set keeps the test fast; the rest of the table stays empty
    g = torch.Generator().manual_seed(0)
    drawn = torch.empty(n, dtype=torch.long)
    for idx in torch.randperm(n, generator=g).split(100):  # 100, 100, 100, 84: two shapes
        batch = prepared.augment(images[idx], aug, g)
        drawn[idx] = batch.views
        online = engine.train_forward(ensemble, prepared, batch.images)
        assert torch.equal(cache.outputs(idx, batch.views, batch.images), online)
    # The same views again, in other batches of another size: every row is served from the table, with
    # the bits the online teacher computes in this batch, not only close to them.
    for idx in torch.randperm(n, generator=g).split(72):
        x = prepared.render(images[idx], aug, drawn[idx])
        online = engine.train_forward(ensemble, prepared, x)
        assert torch.equal(cache.outputs(idx, drawn[idx], x), online)
    summary = cache.summary()
    assert summary["mode"] == fill and summary["entries"] > 0
    if fill == "lazy":
        # Each member output computed once, in the first pass; the second pass hits every row.
        assert summary["computed"] == summary["entries"] == 5 * n
        assert summary["hit_rate"] == pytest.approx(0.5, abs=1e-6)
    else:
        assert summary["computed"] == summary["entries"] == 5 * len(images) * aug.num_views


def test_a_run_with_the_cache_matches_one_without(prepared):
    teachers = untrained_teachers(prepared, 2)
    online = engine.distill(config(cache="off"), prepared, teachers)
    cached = engine.distill(config(cache="auto"), prepared, teachers)
    assert online["teacher_cache"]["mode"] == "off" and cached["teacher_cache"]["mode"] == "lazy"
    assert online["teacher_cache"]["tier"] == "online" and cached["teacher_cache"]["tier"] == "members"
    assert "teacher_cache = 'off'" in online["teacher_cache"]["reason"]
    assert cached["history"][1]["train_loss"] == pytest.approx(online["history"][1]["train_loss"], abs=1e-5)
    for name in ("test_agreement", "test_acc", "test_kl", "train_agreement", "train_agreement_eval"):
        assert cached["metrics"][name] == pytest.approx(online["metrics"][name], abs=0.005), name


def test_a_sweep_computes_each_member_output_once(prepared, tmp_path):
    """Temperatures x ensemble sizes sharing members: every training-step teacher forward is counted."""
    dirs = [tmp_path / f"member-{k}" for k in range(3)]
    teachers = untrained_teachers(prepared, 3, dirs)
    runs = []
    with counting_training_forwards() as computed:
        for members in (1, 3):
            for temperature in (1.0, 4.0):
                cfg = config(members=members, temperature=temperature)
                runs.append(engine.distill(cfg, prepared, teachers[:members])["teacher_cache"])
    stored = [_stored_entries(teachers[k]) for k in range(3)]
    # A lazy fill runs a member on a whole batch when any of its rows misses (one shape for every
    # step), so the forwards cover at least the stored outputs; each output is kept once.
    for k in range(3):
        assert computed[k] >= stored[k] > 0, (k, computed, stored)
    assert runs[0]["computed"] == stored[0] and runs[2]["computed"] == stored[1] + stored[2]
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
    assert file.load(table) == (None, "cache file with a wrong digest rebuilt")
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
        p.join(600)  # a hang guard: importing torch in a spawned child can take a minute on a busy machine
        assert p.exitcode == 0
    table, note = CacheFile(tmp_path, key).load(MemberTable.empty(key, rows, classes, torch.float32,
                                                                  torch.device("cpu")))
    assert note == "loaded" and bool(table.filled.all())
    assert bool((table.logits[: rows // 2] == 1).all()) and bool((table.logits[rows // 2:] == 2).all())


def test_auto_says_why_the_teacher_stays_online(prepared):
    fp32 = torch.float32
    plan = teacher_outputs.plan_teacher_cache
    gib = 2 ** 30
    assert plan(config(cache="off"), Augmenter(AUGMENT), 100, 10, fp32, True, gib).tier is None
    rotate = plan(config(), Augmenter(("crop", "rotate")), 100, 10, fp32, True, gib)
    assert rotate.tier is None and rotate.fill is None and "rotate" in rotate.reason
    mixup = plan(config(), Augmenter(("mixup",)), 100, 10, fp32, True, gib)
    assert mixup.tier is None and "mixup" in mixup.reason
    noisy = replace(config(), data=replace(config().data, extra=("noise:0.2",)))
    assert "noise:p" in plan(noisy, Augmenter(AUGMENT), 100, 10, fp32, True, gib).reason
    huge = plan(config(members=5), Augmenter(AUGMENT), 50_000, 100, fp32, True, gib)
    assert huge.tier is None and "over the budget" in huge.reason  # even 50k x 162 x 100 x 4 bytes > 1 GiB
    assert plan(config(epochs=1), Augmenter(AUGMENT), 100, 10, fp32, False, gib).tier is None
    assert plan(config(epochs=1), Augmenter(AUGMENT), 100, 10, fp32, True, gib).fill == "lazy"
    assert plan(config(epochs=200), Augmenter(AUGMENT), 100, 10, fp32, True, gib).fill == "full"
    assert plan(config(), Augmenter(()), 100, 10, fp32, True, gib).fill == "full"  # one view, drawn every epoch


@pytest.mark.parametrize("storage, members_mib", [(torch.float32, 54.6), (torch.bfloat16, 32.4)])
def test_the_budget_picks_the_members_tier_then_the_ensemble_tier_then_online(storage, members_mib):
    """Digits with crop+hflip: 1437 x 162 rows. The ensemble's table holds fp32 outputs and a flag, 41 bytes
    a row; each member's table (classes x storage bytes + a flag) comes on top of it in the members tier."""
    plan = teacher_outputs.plan_teacher_cache
    aug, mib = Augmenter(AUGMENT), 2 ** 20
    rows = 1437 * 162
    ensemble_bytes = rows * (10 * 4 + 1)
    members_bytes = 5 * rows * (10 * storage.itemsize + 1) + ensemble_bytes
    assert members_bytes / mib == pytest.approx(members_mib, abs=0.05)

    members = plan(config(members=5), aug, 1437, 10, storage, True, members_bytes)
    assert members.tier == "members" and "members tier" in members.reason
    ensemble = plan(config(members=5), aug, 1437, 10, storage, True, members_bytes - 1)
    assert ensemble.tier == "ensemble" and ensemble.fill == "lazy"
    assert "ensemble tier" in ensemble.reason and "over the budget" in ensemble.reason
    assert f"members tier would take {members_mib:.1f} MB" in ensemble.reason
    assert plan(config(members=5), aug, 1437, 10, storage, True, ensemble_bytes).tier == "ensemble"
    online = plan(config(members=5), aug, 1437, 10, storage, True, ensemble_bytes - 1)
    assert online.tier is None and "9.1 MB for the ensemble alone, over the budget" in online.reason


@pytest.fixture(scope="module")
def online_losses(prepared):
    """First-epoch losses of one-epoch runs from 5 untrained members with the teacher online, per τ."""
    teachers = untrained_teachers(prepared, 5)
    return {tau: engine.distill(config(members=5, epochs=1, temperature=tau, cache="off"), prepared,
                                teachers)["history"][1]["train_loss"] for tau in (1.0, 4.0)}


def _ensemble_files(folder) -> list[Path]:
    return sorted(Path(folder).glob("ensemble-*.pt"))


@pytest.mark.parametrize("fill, augment", [("lazy", AUGMENT), ("full", ("hflip",))])
def test_the_ensemble_tier_serves_the_ensemble_the_loss_reads_at_every_temperature(prepared, fill, augment):
    teachers = untrained_teachers(prepared, 5)
    if fill == "full":
        # A full pass over 1437 x 162 views of 5 members takes minutes on a CPU; 2 views do not, but their
        # tables fit any whole-MiB budget, so the plan (tested above) is told the tier here.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(teacher_outputs, "plan_teacher_cache",
                       lambda *a: teacher_outputs.CachePlan("ensemble", "full", "forced"))
            cache, ensemble, aug = open_cache(prepared, teachers, fill, augment)
    else:
        cache, ensemble, aug = open_cache(prepared, teachers, fill, augment, budget_mb=ENSEMBLE_ONLY_MB)
    assert cache.tier == "ensemble" and len(cache.tables) == 1
    images = prepared.distill_set.images
    n = 384
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        for idx in torch.randperm(n, generator=g).split(128):
            batch = prepared.augment(images[idx], aug, g)
            online = engine.train_forward(ensemble, prepared, batch.images)
            with torch.no_grad():
                # Independent of kernels.ensemble: the log of the mean of member probabilities (docs/metrics.md, "Conventions").
                reference = torch.stack([m(batch.images).softmax(-1) for m in ensemble.members]).mean(0).log()
            cached = cache.outputs(idx, batch.views, batch.images)
            torch.testing.assert_close(cached, online, rtol=0, atol=1e-5)
            for tau in (1.0, 4.0, 16.0):  # what the loss makes of it: log_softmax(z_t / τ)
                torch.testing.assert_close(torch.log_softmax(cached / tau, -1), torch.log_softmax(reference / tau, -1),
                                           rtol=0, atol=1e-5)
    summary = cache.summary()
    assert summary["tier"] == "ensemble" and summary["mode"] == fill
    if fill == "lazy":  # one ensemble output per (example, view): fewer than the 2 epochs x n lookups
        assert summary["computed"] == summary["entries"] < 2 * n
    else:
        assert summary["computed"] == summary["entries"] == len(images) * aug.num_views
    assert summary["bytes"] == len(images) * aug.num_views * (10 * 4 + 1)  # one table, not 5 (nor 6)


def test_a_run_whose_budget_admits_only_the_ensemble_matches_the_other_tiers(prepared, online_losses, tmp_path):
    teachers = untrained_teachers(prepared, 5, [tmp_path / f"member-{k}" for k in range(5)])
    events = []
    members = engine.distill(config(members=5, epochs=1), prepared, teachers)
    cold = engine.distill(config(members=5, epochs=1, budget_mb=ENSEMBLE_ONLY_MB), prepared, teachers,
                          on_event=events.append)
    warm = engine.distill(config(members=5, epochs=1, budget_mb=ENSEMBLE_ONLY_MB), prepared, teachers)
    assert members["teacher_cache"]["tier"] == "members"
    assert cold["teacher_cache"]["tier"] == warm["teacher_cache"]["tier"] == "ensemble"
    assert warm["teacher_cache"]["computed"] == 0 and warm["teacher_cache"]["hit_rate"] == 1.0
    for run in (members, cold, warm):
        assert run["history"][1]["train_loss"] == pytest.approx(online_losses[4.0], abs=1e-5)
    reason = cold["teacher_cache"]["reason"]
    assert "ensemble tier" in reason and "over the budget" in reason
    assert any(isinstance(e, Log) and e.message == reason for e in events)
    assert len(_ensemble_files(tmp_path / "member-0")) == 1  # beside the first member, next to its views file


def test_the_ensemble_table_serves_every_temperature_of_its_member_set_only(prepared, online_losses, tmp_path):
    """Each (member, example, view) is computed at most once over a τ sweep; another member set (here
    four of the five, whose table lives beside the same first member) neither reads it nor writes into it."""
    dirs = [tmp_path / f"member-{k}" for k in range(5)]
    teachers = untrained_teachers(prepared, 5, dirs)
    with counting_training_forwards() as first_forwards:
        first = engine.distill(config(members=5, epochs=2, temperature=4.0, budget_mb=ENSEMBLE_ONLY_MB),
                               prepared, teachers)["teacher_cache"]
    with counting_training_forwards() as second_forwards:
        second = engine.distill(config(members=5, epochs=1, temperature=1.0, budget_mb=ENSEMBLE_ONLY_MB),
                                prepared, teachers)
    [file] = _ensemble_files(dirs[0])
    stored = int(torch.load(file, weights_only=True)["filled"].sum())
    assert first["tier"] == "ensemble" and first["computed"] == stored > 0
    # Every member ran on the same whole batches (those with a miss), covering each stored output.
    assert len(set(first_forwards.values())) == 1 and min(first_forwards.values()) >= stored
    assert set(second_forwards.values()) == {0}
    assert second["teacher_cache"]["computed"] == 0 and second["teacher_cache"]["hit_rate"] == 1.0
    assert second["history"][1]["train_loss"] == pytest.approx(online_losses[1.0], abs=1e-5)

    other = engine.distill(config(members=4, epochs=1, budget_mb=ENSEMBLE_ONLY_MB), prepared,
                           teachers[:4])["teacher_cache"]
    assert other["tier"] == "ensemble" and other["computed"] == other["entries"] > 0  # read nothing
    assert len(_ensemble_files(dirs[0])) == 2
    assert int(torch.load(file, weights_only=True)["filled"].sum()) == stored


def test_a_damaged_ensemble_file_is_rebuilt(prepared, online_losses, tmp_path):
    teachers = untrained_teachers(prepared, 5, [tmp_path / f"member-{k}" for k in range(5)])
    cfg = config(members=5, epochs=1, budget_mb=ENSEMBLE_ONLY_MB)
    engine.distill(cfg, prepared, teachers)
    [path] = _ensemble_files(tmp_path / "member-0")
    good = torch.load(path, weights_only=True)
    row = int(good["filled"].nonzero()[0])
    tampered = {**good, "logits": good["logits"].clone()}
    tampered["logits"][row] += 1.0
    torch.save(tampered, path)

    events = []
    rebuilt = engine.distill(cfg, prepared, teachers, on_event=events.append)
    assert any(isinstance(e, Log) and "wrong digest rebuilt" in e.message for e in events)
    assert rebuilt["teacher_cache"]["computed"] == rebuilt["teacher_cache"]["entries"] > 0  # nothing trusted
    assert rebuilt["history"][1]["train_loss"] == pytest.approx(online_losses[4.0], abs=1e-5)
    table = MemberTable.empty(good["key"], len(good["filled"]), 10, torch.float32, torch.device("cpu"))
    repaired, note = CacheFile(path.parent, good["key"], "ensemble").load(table)
    assert note == "loaded"
    torch.testing.assert_close(repaired.logits[row], good["logits"][row], rtol=0, atol=1e-5)
