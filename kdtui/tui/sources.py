"""Where a new spec can start from: the paper's presets (`kdtui.core.presets`, each at paper and
tiny scale), the shipped starter specs, the spec files in the workspace, or a past run's resolved
spec. Everything here reads files: the editor calls it from worker threads. The presets and the
starter specs ship with kdtui and do not change while it runs: they are read once."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

from kdtui.core.workspace import Workspace

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
WORKSPACE_SPECS = "specs"   # <workspace>/specs/*.toml, beside the workspace's own *.toml files


class SpecSource(NamedTuple):
    id: str       # "preset:<id>:<scale>", "spec:<path>" or "run:<run id>"
    title: str    # what the picker shows
    text: str     # TOML; "" for sources read when picked (files, past runs)
    about: str = ""  # more words to search (the palette matches these too)


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line:
            break
    return ""


@functools.cache
def paper_presets() -> tuple[SpecSource, ...]:
    """Every preset of the paper (E1 ... E12), at each scale, titled `E7 tiny — <title>`; each
    described by what its own scale's file varies: the tiny runs are not the paper's (`x 3 seeds`
    at paper scale is one or two seeds at tiny scale)."""
    from kdtui.core.presets import SCALES, list_presets

    out = []
    for preset in list_presets():
        for scale in SCALES:
            if scale in preset.scales:
                title = f"{preset.id.upper()} {scale} — {preset.title}"
                varies = preset.header(scale).get("varies") or preset.varies
                about = f"{scale} scale: varies {varies} (preset {preset.id}, {preset.stem})"
                out.append(SpecSource(f"preset:{preset.id}:{scale}", title, "", about))
    return tuple(out)


@functools.cache
def shipped_specs() -> tuple[SpecSource, ...]:
    out = []
    for path in sorted(SPECS_DIR.glob("*.toml")):
        text = path.read_text()
        about = _first_comment(text)
        out.append(SpecSource(f"preset:{path.stem}", path.stem + (f" — {about}" if about else ""), text, about))
    return tuple(out)


def workspace_specs(workspace: Workspace) -> list[SpecSource]:
    """The spec files a user keeps in the workspace (its top folder and `specs/`)."""
    paths = sorted(workspace.root.glob("*.toml")) + sorted((workspace.root / WORKSPACE_SPECS).glob("*.toml"))
    return [SpecSource(f"spec:{path}", f"file {path.relative_to(workspace.root)}", "", str(path)) for path in paths]


def all_presets() -> list[SpecSource]:
    return [*paper_presets(), *shipped_specs()]


def read_source(workspace: Workspace, source_id: str) -> tuple[str, str, str]:
    """(TOML text, what messages call it, the file it came from or "") for a source id; raises
    OSError when the file is unreadable, KeyError for an unknown id."""
    kind, _, rest = source_id.partition(":")
    if kind == "run":
        return (workspace.run_dir(rest) / "spec.toml").read_text(), f"run {rest}", ""
    if kind == "spec":
        path = Path(rest)
        return path.read_text(), path.name, str(path)
    if kind == "preset" and rest.count(":") == 1:
        from kdtui.core.presets import PresetError, get_preset

        preset_id, scale = rest.split(":")
        try:
            preset = get_preset(preset_id)
            return preset.text(scale), preset.path(scale).name, ""
        except PresetError as exc:
            raise KeyError(str(exc)) from None
    for source in shipped_specs():
        if source.id == source_id:
            return source.text, f"{rest}.toml", ""
    raise KeyError(f"no such preset: {rest}")
