"""Which runs a selection keeps: `key=value` terms on the resolved spec, `status:X`, `tag:X`, and words.

    τ=4 seed=1            distill.temperature is 4 (4.0 too) and seed is 1
    temperature=4 resnet  a key by its last part; a word is looked for in the name, id, status,
                          note and tags
    status:done loss=kl   the status, and distill.loss
    tag:baseline          runs tagged `baseline` (kdtui runs tag ID +baseline)

A key is a flattened spec key (`distill.temperature`), its short name as labels show it (`τ`,
kdtui.analysis.labels.SHORT_KEYS) or its last part(s) (`temperature`); a key that names several
(`lr`: teacher.lr and student.lr) matches when any of them has the value. Values compare as
numbers when both sides are numbers, else as text without regard to case (a list as
`augment=crop,hflip`). Every term must hold. Pure standard library: the notebook API uses it, and
`kdtui runs list --where` and the app's filter can share it.
"""
from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdtui.analysis.flat import flatten_spec
from kdtui.analysis.labels import short_key

if TYPE_CHECKING:
    from kdtui.core.registry import RunStore


class FilterError(ValueError):
    """A selection that cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class Selection:
    """A parsed selection: spec terms (key, value), statuses, words."""
    terms: tuple[tuple[str, str], ...] = ()
    statuses: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def needs_spec(self) -> bool:
        """Whether matching reads the spec (index rows do not hold it: whole records do)."""
        return bool(self.terms)


def parse_selection(text: str | None) -> Selection:
    """`τ=4 status:done resnet` as a Selection; raises FilterError for a term with no key or value."""
    terms, statuses, words, tags = [], [], [], []
    for part in (text or "").split():
        if "=" in part:
            key, _, value = part.partition("=")
            if not key or not value:
                raise FilterError(f"filter term {part!r} needs a key and a value, as in τ=4")
            terms.append((key, value))
        elif part.lower().startswith("status:"):
            status = part.split(":", 1)[1]
            if not status:
                raise FilterError(f"filter term {part!r} needs a status, as in status:done")
            statuses.append(status.lower())
        elif part.lower().startswith("tag:"):
            tag = part.split(":", 1)[1]
            if not tag:
                raise FilterError(f"filter term {part!r} needs a tag, as in tag:baseline")
            tags.append(tag.lower())
        else:
            words.append(part.lower())
    return Selection(tuple(terms), tuple(statuses), tuple(words), tuple(tags))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def value_matches(actual: Any, wanted: str) -> bool:
    """Whether a spec value is the text `wanted` (numbers as numbers: `4` is 4.0)."""
    if isinstance(actual, bool):
        return wanted.lower() == ("true" if actual else "false")
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        return a == w
    return actual is not None and _text(str(actual)) == _text(wanted)


def _text(value: str) -> str:
    # A list's flattened value is `crop, hflip`; a term cannot hold a space, so `crop,hflip` names it.
    return re.sub(r",\s+", ",", value.lower())


@functools.lru_cache(maxsize=4096)
def _names_of(flat_key: str) -> tuple[str, ...]:
    return (flat_key, short_key(flat_key), flat_key.rsplit(".", 1)[-1])


def keys_named(key: str, flat: dict[str, Any]) -> list[str]:
    """The flattened spec keys that `key` names: itself, its short name, its last part, or its
    last parts (`teacher.lr` of a deeper `x.teacher.lr`)."""
    return [k for k in flat if key in _names_of(k) or k.endswith("." + key)]


def matches(record: dict, selection: Selection | str | None) -> bool:
    """Whether a record is kept. Spec terms need the whole record (its `spec`)."""
    if not isinstance(selection, Selection):
        selection = parse_selection(selection)
    if selection.statuses and str(record.get("status", "")).lower() not in selection.statuses:
        return False
    tags = [str(t).lower() for t in record.get("tags") or ()]
    if selection.tags and not all(tag in tags for tag in selection.tags):
        return False
    if selection.words:
        hay = " ".join([str(record.get(k) or "") for k in ("name", "id", "status", "note")] + tags).lower()
        if not all(word in hay for word in selection.words):
            return False
    if selection.terms:
        flat = flatten_spec(record.get("spec"))
        for key, wanted in selection.terms:
            if not any(value_matches(flat[k], wanted) for k in keys_named(key, flat)):
                return False
    return True


def select(store: RunStore, selection: Selection, rows: list[dict], details: bool = False) -> list[dict]:
    """The index `rows` (`store.find`) that `selection` keeps, in order; whole records with
    `details`. Index rows hold no spec: record.json is read only when a spec term needs it (or
    `details` asks), so a list by status, tag or word reads the index alone."""
    if selection == Selection() and not details:
        return list(rows)  # no terms: a list of 10,000 runs pays nothing for the filter
    if not (details or selection.needs_spec):
        return [row for row in rows if matches(row, selection)]
    whole = store.with_details(rows)
    _check_keys(selection, whole)
    return [(whole if details else rows)[i] for i, record in enumerate(whole) if matches(record, selection)]


def _check_keys(selection: Selection, records: list[dict]) -> None:
    """FilterError for a term whose key names no spec key of any of `records` (a misspelt key
    would otherwise select nothing, silently)."""
    if not records:
        return
    names: set[str] = set()
    for record in records:
        for flat_key in flatten_spec(record.get("spec")):
            names.update(_names_of(flat_key))
    for key, _ in selection.terms:
        if key not in names and not any(name.endswith("." + key) for name in names):
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (as in τ, temperature, distill.temperature, seed)"
            raise FilterError(f"no spec key is named {key!r}{hint}")
