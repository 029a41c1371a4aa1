"""The teacher cache on a GPU's terms, checked on the CPU: no host sync once the table is complete, a
lazy fill at one batch shape, no rewrite when nothing changed, files that can never sink or hang a run,
a digest an edit in the store cannot forge, and a budget and key fit for shared cards."""
import errno
import hashlib
import os
import signal
import tracemalloc
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from cache_helpers import AUGMENT, config, untrained_teachers

from kernels import engine, teacher_outputs
from kernels.augment import Augmenter
from kernels.events import Log
from kernels.teacher_cache import FORMAT, CacheFile, MemberTable, tensor_digest


@pytest.fixture(scope="module")
def prepared():
    return engine.prepare(config(), torch.device("cpu"))


def open_cache(prepared, teachers, fill, augment=AUGMENT, epochs=2):
    cfg = config(members=len(teachers), epochs=epochs, augment=augment)
    ensemble = engine.load_teacher_ensemble(cfg, prepared, [t.final_state for t in teachers])
    events = []
    cache, _ = teacher_outputs.open_teacher_outputs(
        cfg, prepared, ensemble, teachers, Augmenter(augment), events.append,
        lambda model, x: engine.train_forward(model, prepared, x), fill)
    return cache, ensemble, Augmenter(augment), events


SYNCING = ("tolist", "item", "__bool__", "__int__", "__float__", "nonzero")


@contextmanager
def counting_host_syncs():
    """Counts the calls that read a tensor's values on the host (a device sync on CUDA)."""
    count = [0]
    with pytest.MonkeyPatch.context() as mp:
        for name in SYNCING:
            original = getattr(torch.Tensor, name)

            def counted(self, *a, _original=original, **k):
                count[0] += 1
                return _original(self, *a, **k)
            mp.setattr(torch.Tensor, name, counted)
        yield count


def draws(prepared, aug, n=256, batch=64, epochs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch):
            yield idx, prepared.augment(prepared.distill_set.images[idx], aug, g)


def test_a_lazy_step_syncs_at_most_once_and_a_complete_table_never(prepared):
    teachers = untrained_teachers(prepared, 2)
    cache, _, aug, _ = open_cache(prepared, teachers, "lazy", augment=())  # one view: one epoch completes it
    assert not cache.complete
    per_step = []
    for idx, batch in draws(prepared, aug, n=len(prepared.distill_set), batch=128, epochs=3):
        with counting_host_syncs() as syncs:
            cache.outputs(idx, batch.views, batch.images)
        per_step.append(syncs[0])
    assert max(per_step) <= 1
    assert cache.complete and per_step[-1] == 0  # every row held: the steps read the table blind
    assert bool(cache.tables[0].filled.all()) and bool(cache.tables[1].filled.all())


def test_a_table_complete_at_load_or_after_a_full_fill_is_read_without_a_sync(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 2, [tmp_path / "a", tmp_path / "b"])
    full, _, aug, _ = open_cache(prepared, teachers, "full", augment=("hflip",))
    assert full.complete
    full.save()
    loaded, ensemble, _, _ = open_cache(prepared, teachers, "lazy", augment=("hflip",))
    assert loaded.complete and loaded.notes == [] or set(loaded.notes) <= {"loaded"}
    for cache in (full, loaded):
        for idx, batch in draws(prepared, aug):
            with counting_host_syncs() as syncs:
                out = cache.outputs(idx, batch.views, batch.images)
            assert syncs[0] == 0
            torch.testing.assert_close(out, engine.train_forward(ensemble, prepared, batch.images), rtol=0, atol=1e-5)


def test_a_lazy_fill_runs_each_member_on_the_whole_batch(prepared):
    teachers = untrained_teachers(prepared, 2)
    cache, ensemble, aug, _ = open_cache(prepared, teachers, "lazy")
    shapes = []
    for member in cache.members:
        member.register_forward_hook(lambda m, inputs, out: shapes.append(len(inputs[0])))
    for idx, batch in draws(prepared, aug, n=320, batch=64, epochs=3):
        out = cache.outputs(idx, batch.views, batch.images)
        with torch.no_grad():
            online = torch.stack([m(batch.images) for m in ensemble.members]).softmax(-1).mean(0).log()
        torch.testing.assert_close(out, online, rtol=0, atol=1e-5)
    assert shapes and set(shapes) == {64}  # never x[missing], whose size changes every step
    summary = cache.summary()
    assert summary["computed"] == summary["entries"]  # new outputs kept once, whatever ran


def test_a_run_that_computed_nothing_does_not_rewrite_the_file(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 1, [tmp_path])
    cfg = config(members=1, epochs=1, augment=("hflip",))
    engine.distill(cfg, prepared, teachers)
    path = next(tmp_path.glob("views-*.pt"))
    cache, _, aug, _ = open_cache(prepared, teachers, "full", augment=("hflip",))  # completes the table
    cache.save()
    before = os.stat(path)
    warm = engine.distill(cfg, prepared, teachers)
    after = os.stat(path)
    assert warm["teacher_cache"]["computed"] == 0
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _no_temporary_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def _run_logs(prepared, teachers, cfg):
    events = []
    result = engine.distill(cfg, prepared, teachers, on_event=events.append)
    return result, [e.message for e in events if isinstance(e, Log) and e.message.startswith("teacher cache:")]


def test_a_directory_where_the_cache_file_belongs_is_one_line_and_the_run_finishes(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 1, [tmp_path])
    cfg = config(members=1, epochs=2)
    name = CacheFile(tmp_path, teacher_outputs.member_keys(teachers, prepared, Augmenter(AUGMENT))[0]).path.name
    (tmp_path / name).mkdir()
    result, logs = _run_logs(prepared, teachers, cfg)
    assert result["history"][-1]["epoch"] == 2
    problem = [m for m in logs if name in m]
    assert len(problem) == 1 and "not a regular file" in problem[0] and "not saved" in problem[0]
    assert (tmp_path / name).is_dir() and _no_temporary_files(tmp_path)


def test_a_full_disk_at_save_is_one_line_and_leaves_no_temporary_file(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 1, [tmp_path])

    def full_disk(obj, f, *a, **k):  # writes part of the file, then the disk is full
        with open(f, "wb") as out:
            out.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("kernels.saving.torch.save", full_disk)
        result, logs = _run_logs(prepared, teachers, config(members=1, epochs=2))
    assert result["history"][-1]["epoch"] == 2
    assert len([m for m in logs if "No space left on device" in m]) == 1
    assert list(tmp_path.glob("views-*.pt")) == [] and _no_temporary_files(tmp_path)


@pytest.mark.parametrize("what", ["cache", "lock"])
def test_a_fifo_never_blocks_a_run(prepared, tmp_path, what):
    teachers = untrained_teachers(prepared, 1, [tmp_path])
    path = CacheFile(tmp_path, teacher_outputs.member_keys(teachers, prepared, Augmenter(AUGMENT))[0]).path
    os.mkfifo(path if what == "cache" else path.with_name(path.name + ".lock"))

    def hung(*_):
        raise AssertionError("the run blocked on a FIFO")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        result, logs = _run_logs(prepared, teachers, config(members=1, epochs=2))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert result["history"][-1]["epoch"] == 2
    assert len([m for m in logs if "not a regular file" in m]) == 1


def test_a_permission_error_is_one_line(prepared, tmp_path):
    teachers = untrained_teachers(prepared, 1, [tmp_path])
    real_open = os.open

    def refusing(path, flags, *a, **k):
        if "views-" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *a, **k)
    engine.distill(config(members=1, epochs=2), prepared, teachers)  # a file to be refused
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", refusing)
        result, logs = _run_logs(prepared, teachers, config(members=1, epochs=2))
    assert result["history"][-1]["epoch"] == 2
    assert len([m for m in logs if "Permission denied" in m]) == 1


def test_an_edited_file_with_its_digest_recomputed_is_rebuilt(prepared, tmp_path):
    """An attacker who can write the store edits the logits and recomputes every digest they can: the
    plain sha256 the file used to carry, and an HMAC under a key of their own."""
    store = tmp_path / "teachers"
    teachers = untrained_teachers(prepared, 1, [store / "member-0"])
    cfg = config(members=1, epochs=2)
    engine.distill(cfg, prepared, teachers)
    path = next((store / "member-0").glob("views-*.pt"))
    good = torch.load(path, weights_only=True)
    table = MemberTable(good["key"], good["logits"].clone(), good["filled"])
    table.logits[table.filled] = -table.logits[table.filled]  # wrong targets
    for forged in (tensor_digest((table.logits, table.filled), table.key),
                   table.digest(b"attacker's own key of 32 bytes.."),
                   table.digest(b"")):
        torch.save({**good, "format": FORMAT, "logits": table.logits, "digest": forged}, path)
        fresh = MemberTable.empty(good["key"], len(good["filled"]), 10, torch.float32, torch.device("cpu"))
        assert CacheFile(path.parent, good["key"]).load(fresh) == (None, "cache file with a wrong digest rebuilt")
    result, logs = _run_logs(prepared, teachers, cfg)
    assert any("wrong digest rebuilt" in m for m in logs)
    assert result["teacher_cache"]["computed"] == result["teacher_cache"]["entries"] > 0  # nothing trusted
    assert (tmp_path / "teachers.key").exists()  # the secret lives beside the store, not in it
    assert not list(store.rglob("*.key"))


def test_the_digest_hashes_without_a_whole_copy():
    t = torch.arange(8 * 2 ** 20, dtype=torch.float32)  # 32 MiB
    expected = hashlib.sha256(b"x")
    expected.update(str((t.dtype, tuple(t.shape))).encode())
    expected.update(t.numpy().tobytes())
    tracemalloc.start()
    try:
        digest = tensor_digest([t], "x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == expected.hexdigest()
    assert peak < 2 ** 20  # the old .tobytes() made a 32 MiB bytes object


def test_the_default_budget_shares_the_card_between_its_slots(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * gib))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: pytest.fail("free memory changes as runs start"))
    cuda = torch.device("cuda", 0)
    monkeypatch.delenv(teacher_outputs.SLOTS_ENV, raising=False)
    assert teacher_outputs.default_cache_budget(cuda) == 40 * gib
    monkeypatch.setenv(teacher_outputs.SLOTS_ENV, "4")
    assert teacher_outputs.default_cache_budget(cuda) == 10 * gib
    assert teacher_outputs.default_cache_budget(cuda, slots=2) == 20 * gib
    cpu_one = teacher_outputs.default_cache_budget(torch.device("cpu"), slots=1)
    assert teacher_outputs.default_cache_budget(torch.device("cpu")) == cpu_one // 4


def test_the_key_names_the_card_and_its_cuda_and_cudnn(prepared, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    teachers = untrained_teachers(prepared, 1)
    on_card = replace(prepared, device=torch.device("cuda", 0), precision=prepared.precision)
    [key] = teacher_outputs.member_keys(teachers, on_card, Augmenter(AUGMENT))
    assert "NVIDIA H200" in key and "cuda 13.0" in key and "cudnn 91002" in key
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100")
    assert teacher_outputs.member_keys(teachers, on_card, Augmenter(AUGMENT)) != [key]
    [cpu_key] = teacher_outputs.member_keys(teachers, prepared, Augmenter(AUGMENT))
    assert cpu_key.split("|")[-2] == "cpu"
