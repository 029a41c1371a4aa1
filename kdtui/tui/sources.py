"""Where a new spec can start from: presets (the shipped specs, plus `kdtui.core.presets` when that
module exists), a spec file, or a past run's resolved spec. Reading happens in worker threads."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from kdtui.core.workspace import Workspace

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"


class SpecSource(NamedTuple):
    id: str       # "preset:<id>" or "run:<run id>"
    title: str    # what the picker shows
    text: str     # TOML; "" until read (past runs are read when picked)


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line:
            break
    return ""


def shipped_presets() -> list[SpecSource]:
    out = []
    for path in sorted(SPECS_DIR.glob("*.toml")):
        text = path.read_text()
        about = _first_comment(text)
        out.append(SpecSource(f"preset:{path.stem}", f"{path.stem}" + (f" — {about}" if about else ""), text))
    return out


def plugged_presets() -> list[SpecSource]:
    """Presets from `kdtui.core.presets`, if that module exists: it may define `app_presets()` (or
    `PRESETS`) giving `(id, title, toml text)` triples."""
    try:
        module = importlib.import_module("kdtui.core.presets")
    except ImportError:
        return []
    provider = getattr(module, "app_presets", None)
    items = provider() if callable(provider) else getattr(module, "PRESETS", None)
    out = []
    for item in items or []:
        try:
            preset_id, title, text = item
        except (TypeError, ValueError):
            continue
        out.append(SpecSource(f"preset:{preset_id}", str(title), str(text)))
    return out


def all_presets() -> list[SpecSource]:
    plugged = plugged_presets()
    seen = {p.id for p in plugged}
    return plugged + [p for p in shipped_presets() if p.id not in seen]


def run_source(record: dict) -> SpecSource:
    return SpecSource(f"run:{record['id']}", f"run {record['id']} — {record.get('name', '')}", "")


def read_run_spec(workspace: Workspace, run_id: str) -> str:
    return (workspace.run_dir(run_id) / "spec.toml").read_text()
