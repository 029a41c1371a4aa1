"""The teacher-output cache: the teacher's outputs per (example, view), each computed at most once.

With crop and flip augmentation an image has finitely many views (162 for 32×32 with padding 4 and a
horizontal flip), yet a 300-epoch run draws it 300 times and every sweep point that shares the teacher
draws it again. A fixed teacher's output on a view never changes, so it is computed once and looked up
after that. Everything else about the step (the student, the loss at any τ, the ensemble) is unchanged:
member logits are stored, and the ensemble is formed after the lookup, so one cache serves every τ and
every ensemble that contains the member.

Two tiers, chosen by the memory budget (kernels.teacher_outputs.plan_teacher_cache):
- "members" (preferred): one table per member, as above; shared by every τ and every ensemble.
- "ensemble": one table of the ensemble's output, m times smaller for m members, used when the
  members' tables would not fit. It holds exactly what the training step hands the loss: the log of the
  mean of member probabilities (kernels.ensemble.ensemble_prediction, fp32). The loss applies τ to that
  value itself (log_softmax(z_t/τ)) and takes its argmax for agreement and hard labels, so the table
  does not depend on τ and serves every τ of the same member set; storing softmax(z_t/τ) instead would
  tie it to one τ and could move an argmax on a near-tie. Its key binds the ordered member set (each
  member's key, as below), so another ensemble never reads it.

Storage dtype is the dtype the teacher's output has in the training step: fp32 on CPU; on CUDA the
autocast dtype (bf16, or fp16 on cards without bf16). The cached value is then what the online
teacher would hand the loss, equal up to kernel rounding: a teacher's output on one row may differ in
the last bits with the batch it was computed in (kernels pick their algorithms by shape), so the key
binds the GPU model and the CUDA and cuDNN versions, and a lazy fill runs a member on the whole batch.
On CPU the values have been bit-equal in every test. Fidelity metrics never read the cache: they come
from fp32 clean-set passes.

Persistence: one file per member and view geometry, in a directory the caller names (kdtui: the
teacher's folder in its store); an ensemble table lives beside its first member, under its own name.
The file's key binds it to the member's weights, the distillation data, the view geometry, the device
(kind, GPU model, CUDA and cuDNN versions) and the storage dtype. Its digest is an HMAC under a secret
kept outside the store (`secret_for`: a key file beside the store folder), so a file edited in the
store, even with its digest recomputed, fails the check. A file whose key, shape, dtype or digest does
not match is rebuilt, never trusted. Writers merge what is on disk with what they computed under an
exclusive file lock and replace the file atomically, so concurrent runs filling the same cache lose
nothing and readers never see half a file. A cache is a speed-up only: a file that cannot be opened,
locked or written (a directory, a FIFO, a full disk, no permission) becomes one note and the run goes
on, computing in memory and not saving.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from filelock import FileLock
from torch import nn

from kernels.atomic import check_replaceable
from kernels.ensemble import ensemble_prediction
from kernels.saving import save_atomic

FORMAT = 2  # 2: the digest is an HMAC under the store's secret (1: a plain sha256, trusted nothing)
FILL_CHUNK = 1024  # rows per teacher forward in a full pass (the evaluation batch size)
HASH_CHUNK = 1 << 24  # bytes hashed at a time: a CUDA table is copied to the host in pieces, not whole

# How a missing output is filled. "lazy": in a step whose batch misses any row, each member that misses
# runs on the whole batch (one shape for every step, so cuDNN searches once and nothing recompiles) and
# the missing rows are kept; one host sync per step while filling, none once the table is complete.
# "full": every (example, view) up front in large batches (no per-step sync, but work on views the run
# may never draw). kernels.teacher_outputs.choose_fill picks "full" only when the run is expected to draw
# every view at least once.
FILLS = ("lazy", "full")
TIERS = ("members", "ensemble")  # what a table holds: one member's logits, or the ensemble's output


class CacheUnavailable(Exception):
    """A cache file that cannot be used as a file: the message is the run's one line about it."""


def _hash_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().contiguous()
    h.update(str((t.dtype, tuple(t.shape))).encode())
    flat = t.reshape(-1).view(torch.uint8)  # 0-dim tensors too; views, never copies, on the CPU
    for piece in flat.split(HASH_CHUNK):
        h.update(piece.cpu().numpy())  # the buffer itself: no bytes object of the whole tensor


def tensor_digest(tensors: Iterable[torch.Tensor], extra: str = "", secret: bytes | None = None) -> str:
    """sha256 (or, with `secret`, HMAC-sha256) over the tensors' bytes and a string."""
    h = hmac.new(secret, digestmod="sha256") if secret is not None else hashlib.sha256()
    h.update(extra.encode())
    for t in tensors:
        _hash_tensor(h, t)
    return h.hexdigest()


def weights_digest(state: dict) -> str:
    """Identifies a trained member by its weights (a retrained teacher under the same store key differs)."""
    return tensor_digest((state[k] for k in sorted(state)), ",".join(sorted(state)))


def secret_for(folder: Path) -> bytes:
    """The secret that authenticates the cache files under `folder`'s store: the file `<store>.key` beside
    the store folder (`folder` is one teacher's folder in it), made on first use, readable by its owner
    only. Whoever can only write inside the store cannot forge a file the runs accept."""
    store = Path(folder).resolve().parent
    path = store.with_name(store.name + ".key")
    if not os.path.lexists(path):
        # Written whole under another name, then linked into place: a concurrent reader never sees
        # a half-written key, and of two runs making one at once, the first link wins for both.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    data = _read_regular(path, 4096)
    if len(data) < 16:
        raise CacheUnavailable(f"{path}: cache secret too short")
    return data


def _open_regular(path: Path, flags: int) -> int:
    """A descriptor of `path`, refused unless it is a regular file: O_NONBLOCK so that a FIFO never
    blocks the open, and the type checked on the descriptor, not on a name that may change."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise CacheUnavailable(f"{path}: {e.strerror or type(e).__name__}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheUnavailable(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_regular(path: Path, limit: int) -> bytes:
    with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as f:
        return f.read(limit)


@dataclass
class MemberTable:
    """One member's logits (or, in the ensemble tier, the ensemble's output) for every (example, view),
    and which of them are filled."""
    key: str
    logits: torch.Tensor  # (n·views, C) in the storage dtype
    filled: torch.Tensor  # (n·views,) bool

    @classmethod
    def empty(cls, key: str, rows: int, classes: int, dtype: torch.dtype, device: torch.device) -> "MemberTable":
        return cls(key, torch.zeros(rows, classes, dtype=dtype, device=device),
                   torch.zeros(rows, dtype=torch.bool, device=device))

    @property
    def nbytes(self) -> int:
        return self.logits.numel() * self.logits.element_size() + self.filled.numel()

    def digest(self, secret: bytes) -> str:
        return tensor_digest((self.logits, self.filled), self.key, secret)


def _file_name(key: str, tier: str) -> str:
    prefix = "views" if tier == "members" else "ensemble"  # tells the two apart in a teacher's folder
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


class CacheFile:
    """A table's file: loaded only when everything about it checks out."""

    def __init__(self, folder: Path, key: str, tier: str = "members", secret: bytes | None = None):
        self.path = Path(folder) / _file_name(key, tier)
        self.key = key
        self.secret = secret if secret is not None else secret_for(folder)

    def load(self, like: MemberTable) -> tuple[MemberTable | None, str]:
        """The stored table (on `like`'s device), or None and why it was not usable. Raises
        CacheUnavailable when the path cannot be read as a file at all."""
        if not os.path.lexists(self.path):
            return None, "no cache file yet"
        fd = _open_regular(self.path, os.O_RDONLY)
        try:
            with os.fdopen(fd, "rb") as f:
                data = torch.load(f, map_location="cpu", weights_only=True)
            table = MemberTable(data["key"], data["logits"], data["filled"])
            problems = [what for what, ok in (
                ("format", data.get("format") == FORMAT), ("key", table.key == self.key),
                ("shape", tuple(table.logits.shape) == tuple(like.logits.shape)
                 and tuple(table.filled.shape) == tuple(like.filled.shape)),
                ("dtype", table.logits.dtype == like.logits.dtype and table.filled.dtype == torch.bool),
            ) if not ok]
            if not problems and not hmac.compare_digest(str(data["digest"]), table.digest(self.secret)):
                problems.append("digest")
        except Exception as e:  # torch.load raises many types (zip, pickle, RuntimeError) on a damaged file
            return None, f"unreadable cache file rebuilt ({type(e).__name__})"
        if problems:
            return None, f"cache file with a wrong {', '.join(problems)} rebuilt"
        device = like.logits.device
        return MemberTable(table.key, table.logits.to(device), table.filled.to(device)), "loaded"

    @contextmanager
    def locked(self):
        """An inter-process lock beside the file: filelock's, as every lock of the project's but the
        queue's slots (flock underneath, so the kernel releases it if the holder dies; a link or a
        folder at the lock's path is an OSError, which callers turn into a note)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        check_replaceable(lock)  # a FIFO, device or link there is refused before anything opens it
        with FileLock(str(lock)):
            yield

    def merge_and_save(self, table: MemberTable) -> None:
        """Add what is on disk to `table` (theirs where ours is empty), then write the union atomically.
        Call under `locked()`."""
        stored, _ = self.load(table)
        if stored is not None:
            theirs = stored.filled & ~table.filled
            table.logits[theirs] = stored.logits[theirs]
            table.filled |= theirs
        cpu = MemberTable(table.key, table.logits.cpu(), table.filled.cpu())
        payload = {"format": FORMAT, "key": table.key, "logits": cpu.logits, "filled": cpu.filled,
                   "digest": cpu.digest(self.secret)}
        save_atomic(payload, self.path)


def _failure(file: CacheFile, error: BaseException) -> str:
    """One line about a cache file the run could not use (no traceback: a cache is only a speed-up)."""
    if isinstance(error, CacheUnavailable):
        return str(error)
    text = getattr(error, "strerror", None) or (str(error).splitlines() or [type(error).__name__])[0]
    return f"{file.path}: {text}"


class TeacherCache:
    """Serves the ensemble's output on (example, view) rows, computing each table output at most once.

    `members` are the frozen teacher nets (eval mode); `tables` their tables (tier "members"), or the one
    table of the ensemble's output (tier "ensemble"); `files` where each table is kept (None entries:
    memory only); `render(example_index, views)` builds the normalised input batch of those views,
    exactly as the training step builds it; `forward(model, x)` runs a member the way the training step
    runs the online teacher (same autocast). `notes` collects one line per file problem for the run.
    """

    def __init__(self, members: list[nn.Module], tables: list[MemberTable], files: list[CacheFile | None],
                 num_views: int, fill: str, render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 forward: Callable[[nn.Module, torch.Tensor], torch.Tensor], tier: str = "members"):
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; allowed: {', '.join(FILLS)}")
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; allowed: {', '.join(TIERS)}")
        if tier == "ensemble" and len(tables) != 1:
            raise ValueError(f"the ensemble tier keeps one table, got {len(tables)}")
        self.members, self.tables, self.files = members, tables, list(files)
        self.num_views, self.fill, self.tier = num_views, fill, tier
        self.render, self.forward = render, forward
        self.lookups = 0
        self.notes: list[str] = []       # "loaded", "no cache file yet", or why a file was not used
        self.complete = False            # every row of every table known filled: steps never sync
        self.dirty = [False] * len(tables)  # a table holds outputs its file lacks
        device = tables[0].filled.device
        self._computed = torch.zeros((), dtype=torch.long, device=device)  # read once, in summary()
        self._ensemble: MemberTable | None = None  # made by load()
        self._unfilled = torch.zeros((), dtype=torch.long, device=device)  # rows the ensemble lacks

    @property
    def nbytes(self) -> int:
        derived = 0 if self._ensemble is None or self.tier == "ensemble" else self._ensemble.nbytes
        return sum(t.nbytes for t in self.tables) + derived

    @property
    def entries(self) -> int:
        return int(sum(int(t.filled.sum()) for t in self.tables))

    def _drop_file(self, k: int, error: BaseException) -> None:
        self.notes.append(f"{_failure(self.files[k], error)}; kept in memory, not saved")
        self.files[k] = None

    def _load_file(self, k: int) -> None:
        file = self.files[k]
        try:
            stored, note = file.load(self.tables[k])
        except CacheUnavailable as e:
            return self._drop_file(k, e)
        self.notes.append(note)
        if stored is not None:
            self.tables[k] = stored

    def load(self) -> None:
        """Take over what earlier runs stored; with fill = "full", complete the tables now (under the
        file lock, so concurrent runs wait for one pass instead of each making their own)."""
        for k in range(len(self.tables)):
            if self.files[k] is not None:
                self._load_file(k)
            if self.fill != "full" or bool(self.tables[k].filled.all()):
                continue
            if self.files[k] is None:
                self._fill_all(k)
                continue
            try:
                with self.files[k].locked():
                    self._load_file(k)  # another run may have filled it meanwhile
                    if not bool(self.tables[k].filled.all()):
                        self._fill_all(k)
                        self._save(k)
            except (OSError, CacheUnavailable) as e:
                self._drop_file(k, e)
                self._fill_all(k)
        # In the ensemble tier the stored table already is the ensemble's output.
        self._ensemble = self.tables[0] if self.tier == "ensemble" else self._ensemble_of_filled_rows()
        self._unfilled = (~self._ensemble.filled).sum()
        self.complete = int(self._unfilled) == 0

    @torch.no_grad()
    def _ensemble_of_filled_rows(self) -> MemberTable:
        """The ensemble's output for every row all members hold. A step whose rows are all here gathers
        once instead of once per member and skips the log-mean-exp. It is derived, never stored: the
        member tables are what other ensembles and later runs share. Row-wise, so chunking changes nothing."""
        first = self.tables[0]
        held = first.filled.clone()
        for table in self.tables[1:]:
            held &= table.filled
        ensemble = MemberTable.empty("ensemble", len(held), first.logits.shape[1], torch.float32, held.device)
        for rows in held.nonzero().squeeze(1).split(FILL_CHUNK):
            ensemble.logits[rows] = ensemble_prediction([table.logits[rows] for table in self.tables])
        ensemble.filled = held
        return ensemble

    def _compute(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Table k's output on batch x: its member's logits, or the ensemble's output (every member once)."""
        if self.tier == "members":
            return self.forward(self.members[k], x)
        return ensemble_prediction([self.forward(model, x) for model in self.members])

    @torch.no_grad()
    def _fill_all(self, k: int) -> None:
        table = self.tables[k]
        missing = (~table.filled).nonzero().squeeze(1)
        for rows in missing.split(FILL_CHUNK):
            x = self.render(rows // self.num_views, rows % self.num_views)
            table.logits[rows] = self._compute(k, x).to(table.logits.dtype)
            table.filled[rows] = True
            self._computed += len(rows)
        self.dirty[k] = self.dirty[k] or len(missing) > 0

    @torch.no_grad()
    def outputs(self, examples: torch.Tensor, views: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's output (B, C) on batch `x`, whose row i is view views[i] of example examples[i].
        Rows of a batch are distinct examples (a slice of a permutation), so no row is filled twice."""
        rows = examples * self.num_views + views
        self.lookups += len(rows) * len(self.tables)
        ensemble = self._ensemble
        if self.complete:
            return ensemble.logits[rows]
        # One host sync decides the whole step: is the table now complete, does the ensemble hold every
        # row, and which tables miss any.
        misses = [~table.filled[rows] for table in self.tables]
        ens_miss = misses[0] if self.tier == "ensemble" else ~ensemble.filled[rows]
        flags = torch.stack([self._unfilled == 0, ens_miss.any(), *(m.any() for m in misses)]).tolist()
        if flags[0]:
            self.complete = True
        if not flags[1]:
            return ensemble.logits[rows]
        for k, (table, miss) in enumerate(zip(self.tables, misses)):
            if flags[2 + k]:
                kept = miss.unsqueeze(1)
                table.logits[rows] = torch.where(kept, self._compute(k, x).to(table.logits.dtype), table.logits[rows])
                table.filled[rows] = True
                self._computed += miss.sum()
                self.dirty[k] = True
        if self.tier == "ensemble":
            output = self.tables[0].logits[rows]
        else:
            output = ensemble_prediction([table.logits[rows] for table in self.tables])
            ensemble.logits[rows] = output
            ensemble.filled[rows] = True
        self._unfilled -= ens_miss.sum()
        return output

    def _save(self, k: int) -> None:
        self.files[k].merge_and_save(self.tables[k])
        self.dirty[k] = False

    def save(self) -> None:
        """Write the tables that gained outputs; a file that cannot be locked or written becomes one note
        (and no temporary file is left: save_atomic removes its own)."""
        for k, file in enumerate(self.files):
            if file is None or not self.dirty[k]:
                continue
            try:
                with file.locked():
                    self._save(k)
            except (OSError, RuntimeError, CacheUnavailable) as e:  # torch.save wraps write errors
                self._drop_file(k, e)

    def summary(self) -> dict:
        """What the run's record keeps: the tier, hit rate over this run's lookups, entries held (table
        rows: member outputs, or ensemble outputs in the ensemble tier), bytes in memory."""
        computed = int(self._computed)
        computed_in_steps = computed if self.fill == "lazy" else 0
        hit_rate = 1.0 - computed_in_steps / self.lookups if self.lookups else 0.0
        return {"mode": self.fill, "tier": self.tier, "hit_rate": round(hit_rate, 6), "entries": self.entries,
                "bytes": self.nbytes, "computed": computed}
