"""Labels that tell compared runs apart: what differs between them, in a few characters.

`run_labels(records)` names each run by the spec keys whose values differ between the runs, with
short names (`τ=1, seed=2`); when too many keys differ to read (runs of different experiments), by
the run's name where the names differ. The compare table's column headers, the curve legends and
exports all use these, so a sweep point reads the same everywhere. (A group's mean ± std, counted
by distinct seed, is kdtui.analysis.compare.mean_std, which builds on this module.)
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from kdtui.analysis.flat import flatten_spec
from kdtui.core.names import printable

# Short names of the keys sweeps vary most; any other key is shown by its last path segment.
SHORT_KEYS: dict[str, str] = {
    "distill.temperature": "τ",
    "student.init_lambda": "λ",
    "distill.alpha": "α",
    "distill.loss": "loss",
    "distill.augment": "aug",
    "distill.mixup_alpha": "mixup α",
    "distill.teacher_cache": "cache",
    "teacher.members": "m",
    "teacher.model": "teacher",
    "student.model": "student",
    "student.init": "init",
    "teacher.epochs": "T epochs",
    "student.epochs": "S epochs",
    "teacher.lr": "T lr",
    "student.lr": "S lr",
    "teacher.batch_size": "T batch",
    "student.batch_size": "S batch",
    "teacher.augment": "T aug",
    "data.dataset": "data",
    "data.teacher_subset": "teacher n",
    "data.extra": "extra",
    "data.student_splits": "splits",
    "seed": "seed",
}
MAX_KEYS = 3          # more differing keys than this: the names say it better
MAX_VALUE = 14        # a value longer than this is cut in the middle


def short_id(run_id: str) -> str:
    """The random suffix of an id (`b09d` of `261129-185038-b09d`): what people type and say."""
    return str(run_id).rsplit("-", 1)[-1]


def short_key(key: str) -> str:
    return SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` characters, cutting the middle (the ends tell names apart)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


_SWEEP_SUFFIX = re.compile(r"(.*?)(\[.*\])", re.DOTALL)
_SWEEP_KEY = re.compile(r"([A-Za-z_][\w.]*)=")


def cut_name(name: str, width: int) -> str:
    """A run's name in at most `width` characters, keeping its sweep values: a sweep point's
    `kd-digits-sweep[distill.temperature=4,seed=0]` becomes `kd-di…[τ=4,seed=0]` (short keys, the
    base cut in the middle) before anything of the values is cut."""
    if len(name) <= width:
        return name
    match = _SWEEP_SUFFIX.fullmatch(name)
    if not match:
        return cut_middle(name, width)
    base, suffix = match.group(1), _SWEEP_KEY.sub(lambda m: short_key(m.group(1)) + "=", match.group(2))
    room = width - len(suffix)
    if room >= 3:
        return cut_middle(base, room) + suffix
    return cut_middle(base[:1] + suffix, width)


_SWEEP_TERM = re.compile(r",(?=[A-Za-z_][\w.]*=)")  # a comma that starts the next `key=` (lists keep theirs)


def point_label(name: str, width: int | None = None) -> str:
    """A run's name as the app shows it: a sweep point's `digits-temp[distill.temperature=8.0,seed=1]`
    reads `digits-temp · τ=8.0 seed=1` (short keys, values as the name has them). Given `width`, the
    base is cut in the middle to fit, never the values; any other name is cut in the middle."""
    match = _SWEEP_SUFFIX.fullmatch(name)
    if not match or not match.group(1) or not _SWEEP_KEY.match(match.group(2)[1:]):
        return name if width is None else cut_middle(name, width)
    terms = _SWEEP_TERM.split(match.group(2)[1:-1])
    values = " ".join(_SWEEP_KEY.sub(lambda m: short_key(m.group(1)) + "=", term, count=1) for term in terms)
    base = match.group(1)
    if width is None or len(base) + 3 + len(values) <= width:
        return f"{base} · {values}"
    room = width - 1 - len(values)  # tight: one space between the cut base and the values
    if room >= 3:
        return cut_middle(base, room) + " " + values
    return cut_middle(values, width)  # narrower than the values themselves: nothing else is left


def _value_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return cut_middle(str(value), MAX_VALUE)


def differing_keys(records: Sequence[dict]) -> list[str]:
    """Spec keys (dotted, in spec order) whose values are not the same in every record."""
    flats = [flatten_spec(r.get("spec")) for r in records]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    differing = []
    for key in keys:
        values = [flat.get(key) for flat in flats]
        first = values[0]
        if any(v != first or type(v) is not type(first) for v in values[1:]):
            differing.append(key)
    return differing


def run_labels(records: Sequence[dict]) -> dict[str, str]:
    """run id -> a label saying what sets the run apart from the others given."""
    records = list(records)
    if not records:
        return {}
    ids = [str(r.get("id")) for r in records]
    names = [printable(r.get("name")) for r in records]  # labels are shown: escaped (kdtui.core.names)
    keys = differing_keys(records) if len(records) > 1 else []
    names_differ = len(set(names)) == len(names)
    if keys and (len(keys) <= MAX_KEYS or not names_differ):
        flats = [flatten_spec(r.get("spec")) for r in records]
        labels = [", ".join(f"{short_key(k)}={_value_text(flat.get(k))}" for k in keys) for flat in flats]
    elif names_differ and len(records) > 1:
        labels = names
    else:
        labels = [""] * len(records)
    labels = [label or name or short_id(run_id) for label, name, run_id in zip(labels, names, ids)]
    # Runs that are alike in every key (replicates) keep apart by their short id.
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    labels = [f"{label} #{short_id(run_id)}" if seen[label] > 1 else label for label, run_id in zip(labels, ids)]
    return dict(zip(ids, labels))
