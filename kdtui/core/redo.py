"""A run again with a few changes: `kdtui run --from ID --set distill.temperature=8`.

Starts from the run's resolved spec as its record holds it, sets each `KEY=VALUE` (the value read
as a TOML value, `8`, `true`, `[1, 2]`, `"text"`; anything TOML cannot read is taken as text, so
`loss=reverse-kl` works unquoted), names the new run after the change, and validates the result
with the spec's own rules (kdtui.core.spec): a bad key or value is one line naming it.
"""
from __future__ import annotations

import copy
import re
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from kdtui.core.spec import Spec, SpecError, spec_from_dict

_KEY = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
_SWEEP_LABEL = re.compile(r"(.*)\[((?:[A-Za-z_][\w.]*=.*))\]", re.DOTALL)
_LABEL_ITEM = re.compile(r",(?=[A-Za-z_][\w.]*=)")  # a comma that starts the next `key=`


def parse_set(item: str) -> tuple[str, Any]:
    """`distill.temperature=8` as (key, value); raises SpecError naming the item."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise SpecError(f"--set {item!r}: give KEY=VALUE with a dotted spec key, as in distill.temperature=8")
    if key == "sweep" or key.startswith("sweep."):
        raise SpecError(f"--set {key}: a redo is one run; set the value itself, not a sweep")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key, value


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    return str(value) if isinstance(value, str) else repr(value)


def redo_name(name: str, changes: list[tuple[str, Any]]) -> str:
    """The name of the new run: a sweep point's `base[seed=0,distill.temperature=1.0]` gets its
    changed values in place (`base[seed=0,distill.temperature=8]`), other keys added to its label;
    a plain name gets a label of the changes."""
    match = _SWEEP_LABEL.fullmatch(name)
    base, items = (match.group(1), _LABEL_ITEM.split(match.group(2))) if match else (name, [])
    label = dict(item.split("=", 1) for item in items)
    for key, value in changes:
        if key != "name":
            label[key] = _value_text(value)
    return f"{base}[{','.join(f'{k}={v}' for k, v in label.items())}]" if label else base


def redo_spec(spec: dict, sets: list[str], source: str) -> Spec:
    """`spec` (a record's resolved spec) with each `KEY=VALUE` of `sets` applied, validated, named
    by `redo_name` unless `name` is set. Raises SpecError (one line) for a bad key or value."""
    changes = [parse_set(item) for item in sets]
    data = copy.deepcopy(spec)
    data.pop("sweep", None)
    for key, value in changes:
        *sections, leaf = key.split(".")
        table = data
        for depth, section in enumerate(sections):
            table = table.setdefault(section, {})
            if not isinstance(table, dict):
                raise SpecError(f"--set {key}: {'.'.join(sections[:depth + 1])} is a value, not a table")
        table[leaf] = value
    if not any(key == "name" for key, _ in changes):
        data["name"] = redo_name(str(spec.get("name") or "experiment"), changes)
    return spec_from_dict(data, source=source)
