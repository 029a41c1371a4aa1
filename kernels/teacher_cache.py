"""The teacher-output cache: the teacher's outputs per (example, view), each computed at most once.

With crop and flip augmentation an image has finitely many views (162 for 32×32 with padding 4 and a
horizontal flip), yet a 300-epoch run draws it 300 times and every sweep point that shares the teacher
draws it again. A fixed teacher's output on a view never changes, so it is computed once and looked up
after that. Everything else about the step (the student, the loss at any τ, the ensemble) is unchanged:
member logits are stored, and the ensemble is formed after the lookup, so one cache serves every τ and
every ensemble that contains the member.

Two tiers, chosen by the memory budget (kernels.engine.plan_teacher_cache):
- "members" (preferred): one table per member, as above; shared by every τ and every ensemble.
- "ensemble": one table of the ensemble's output, m times smaller for m members, used when the
  members' tables would not fit. It holds exactly what the training step hands the loss: the log of the
  mean of member probabilities (kernels.ensemble.ensemble_prediction, fp32). The loss applies τ to that
  value itself (log_softmax(z_t/τ)) and takes its argmax for agreement and hard labels, so the table
  does not depend on τ and serves every τ of the same member set; storing softmax(z_t/τ) instead would
  tie it to one τ and could move an argmax on a near-tie. Its key binds the ordered member set (each
  member's key, as below), so another ensemble never reads it.

Storage dtype is the dtype the teacher's output has in the training step: fp32 on CPU; on CUDA the
autocast dtype (bf16, or fp16 on cards without bf16). The cached value is then the very value the
online teacher would hand the loss (its output under autocast already has that dtype), so the cache
adds no rounding of its own. Fidelity metrics never read it: they come from fp32 clean-set passes.

Persistence: one file per member and view geometry, in a directory the caller names (kdtui: the
teacher's folder in its store); an ensemble table lives beside its first member, under its own name.
The file's key binds it to the member's weights, the distillation data, the view geometry, the device
kind and the storage dtype; a file whose key, shape, dtype or checksum does not match is
rebuilt, never trusted. Writers merge what is on disk with what they computed under an exclusive file
lock and replace the file atomically, so concurrent runs filling the same cache lose nothing and
readers never see half a file.
"""
from __future__ import annotations

import fcntl
import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from kernels.ensemble import ensemble_prediction
from kernels.saving import save_atomic

FORMAT = 1
FILL_CHUNK = 1024  # rows per teacher forward in a full pass (the evaluation batch size)

# How a missing output is filled. "lazy": the rows of the current batch that miss, in one forward per
# member (never more teacher work than the online step; on CUDA one host sync per step while filling).
# "full": every (example, view) up front in large batches (no per-step sync, but work on views the run
# may never draw). The engine picks "full" only when the run is expected to draw every view at least
# once (kernels.engine.choose_fill; bench/engine.py measured the two).
FILLS = ("lazy", "full")
TIERS = ("members", "ensemble")  # what a table holds: one member's logits, or the ensemble's output


def tensor_digest(tensors: Iterator[torch.Tensor], extra: str = "") -> str:
    """sha256 over the tensors' bytes (moved to the CPU) and a string."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too
    return h.hexdigest()


def weights_digest(state: dict) -> str:
    """Identifies a trained member by its weights (a retrained teacher under the same store key differs)."""
    return tensor_digest((state[k] for k in sorted(state)), ",".join(sorted(state)))


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

    def checksum(self) -> str:
        return tensor_digest((self.logits, self.filled), self.key)


def _file_name(key: str, tier: str) -> str:
    prefix = "views" if tier == "members" else "ensemble"  # tells the two apart in a teacher's folder
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


@contextmanager
def _exclusive(path: Path):
    """An inter-process lock on `path` (flock: released by the kernel if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class CacheFile:
    """A table's file: loaded only when everything about it checks out."""

    def __init__(self, folder: Path, key: str, tier: str = "members"):
        self.path = Path(folder) / _file_name(key, tier)
        self.key = key

    def load(self, like: MemberTable) -> tuple[MemberTable | None, str]:
        """The stored table (on `like`'s device), or None and why it was not usable."""
        if not self.path.exists():
            return None, "no cache file yet"
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            table = MemberTable(data["key"], data["logits"], data["filled"])
            problems = [what for what, ok in (
                ("format", data.get("format") == FORMAT), ("key", table.key == self.key),
                ("shape", tuple(table.logits.shape) == tuple(like.logits.shape)
                 and tuple(table.filled.shape) == tuple(like.filled.shape)),
                ("dtype", table.logits.dtype == like.logits.dtype and table.filled.dtype == torch.bool),
            ) if not ok]
            if not problems and data["checksum"] != table.checksum():
                problems.append("checksum")
        except Exception as e:  # torch.load raises many types (zip, pickle, RuntimeError) on a damaged file
            return None, f"unreadable cache file rebuilt ({type(e).__name__})"
        if problems:
            return None, f"cache file with a wrong {', '.join(problems)} rebuilt"
        device = like.logits.device
        return MemberTable(table.key, table.logits.to(device), table.filled.to(device)), "loaded"

    @contextmanager
    def locked(self):
        with _exclusive(self.path.with_name(self.path.name + ".lock")):
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
                   "checksum": cpu.checksum()}
        save_atomic(payload, self.path)


@dataclass
class CacheStats:
    lookups: int = 0   # table outputs the training steps asked for (a member's, or the ensemble's)
    computed: int = 0  # table outputs this run computed (lazy misses, or a full pass)


class TeacherCache:
    """Serves the ensemble's output on (example, view) rows, computing each table output at most once.

    `members` are the frozen teacher nets (eval mode); `tables` their tables (tier "members"), or the one
    table of the ensemble's output (tier "ensemble"); `files` where each table is kept (None entries:
    memory only); `render(example_index, views)` builds the normalised input batch of those views,
    exactly as the training step builds it; `forward(model, x)` runs a member the way the training step
    runs the online teacher (same autocast).
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
        self.members, self.tables, self.files = members, tables, files
        self.num_views, self.fill, self.tier = num_views, fill, tier
        self.render, self.forward = render, forward
        self.stats = CacheStats()
        self.load_notes: list[str] = []
        self._ensemble: MemberTable | None = None  # made by load()

    @property
    def nbytes(self) -> int:
        derived = 0 if self._ensemble is None or self.tier == "ensemble" else self._ensemble.nbytes
        return sum(t.nbytes for t in self.tables) + derived

    @property
    def entries(self) -> int:
        return int(sum(int(t.filled.sum()) for t in self.tables))

    def load(self) -> None:
        """Take over what earlier runs stored; with fill = "full", complete the tables now (under the
        file lock, so concurrent runs wait for one pass instead of each making their own)."""
        for k, file in enumerate(self.files):
            if file is None:
                if self.fill == "full":
                    self._fill_all(k)
                continue
            stored, note = file.load(self.tables[k])
            self.load_notes.append(note)
            if stored is not None:
                self.tables[k] = stored
            if self.fill == "full" and not bool(self.tables[k].filled.all()):
                with file.locked():
                    stored, _ = file.load(self.tables[k])  # another run may have filled it meanwhile
                    if stored is not None:
                        self.tables[k] = stored
                    if not bool(self.tables[k].filled.all()):
                        self._fill_all(k)
                        file.merge_and_save(self.tables[k])
        # In the ensemble tier the stored table already is the ensemble's output.
        self._ensemble = self.tables[0] if self.tier == "ensemble" else self._ensemble_of_filled_rows()

    @torch.no_grad()
    def _ensemble_of_filled_rows(self) -> MemberTable:
        """The ensemble's output for every row all members hold. A step whose rows are all here gathers
        once instead of once per member and skips the log-mean-exp, which for a small student is most of
        what a warm teacher still costs. It is derived, never stored: the member tables are what other
        ensembles and later runs share. The output is row-wise, so chunking changes no value."""
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
            self.stats.computed += len(rows)

    def _held(self, k: int, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Table k's output on `rows` (of batch x), computing the missing ones first (lazy fill)."""
        table = self.tables[k]
        if self.fill == "lazy":
            missing = (~table.filled[rows]).nonzero().squeeze(1)  # a host sync on CUDA
            if len(missing):
                table.logits[rows[missing]] = self._compute(k, x[missing]).to(table.logits.dtype)
                table.filled[rows[missing]] = True
                self.stats.computed += len(missing)
        return table.logits[rows]

    @torch.no_grad()
    def lookup(self, examples: torch.Tensor, views: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's output (B, C) on batch `x`, whose row i is view views[i] of example examples[i].
        Rows of a batch are distinct examples (a slice of a permutation), so no row is filled twice."""
        rows = examples * self.num_views + views
        self.stats.lookups += len(rows) * len(self.tables)
        ensemble = self._ensemble
        if ensemble is not None and bool(ensemble.filled[rows].all()):  # one host sync on CUDA
            return ensemble.logits[rows]
        if self.tier == "ensemble":
            return self._held(0, rows, x)
        output = ensemble_prediction([self._held(k, rows, x) for k in range(len(self.tables))])
        if ensemble is not None:
            ensemble.logits[rows] = output
            ensemble.filled[rows] = True
        return output

    def save(self) -> None:
        for table, file in zip(self.tables, self.files):
            if file is not None:
                with file.locked():
                    file.merge_and_save(table)

    def summary(self) -> dict:
        """What the run's record keeps: the tier, hit rate over this run's lookups, entries held (table
        rows: member outputs, or ensemble outputs in the ensemble tier), bytes in memory."""
        s = self.stats
        computed_in_steps = s.computed if self.fill == "lazy" else 0
        hit_rate = 1.0 - computed_in_steps / s.lookups if s.lookups else 0.0
        return {"mode": self.fill, "tier": self.tier, "hit_rate": round(hit_rate, 6), "entries": self.entries,
                "bytes": self.nbytes, "computed": s.computed}
