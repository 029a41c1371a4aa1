"""`kdtui presets ...`: the paper's experiments as ready-made specs."""
from __future__ import annotations

import shutil
import sys

from typing import Annotated

import typer

from kdtui.cli.common import JsonOption, clip, fail, noun, print_json, show_help_without_command

app = noun(name="presets", help="The paper's experiments as ready-made specs.", invoke_without_command=True,
           callback=show_help_without_command)


@app.command("list")
def presets_list(as_json: JsonOption = False) -> None:
    """Each preset under its figure: id, title, what it varies, its number of runs at each scale."""
    from kdtui.core.presets import SCALES, list_presets

    rows = [{"id": p.id, "figure": p.figure, "title": p.title, "varies": p.header("tiny").get("varies", p.varies),
             "runs": {scale: p.run_count(scale) for scale in SCALES}, "group": p.figure_group}
            for p in list_presets()]
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "group"} for r in rows])
        return
    width = shutil.get_terminal_size((100, 24)).columns
    lines = [f"{'id':<8}{'runs paper/tiny':>16}  title"]
    group = None
    for r in rows:
        if r["group"] != group:   # the parts of a split figure (e4a, e4b) under one heading
            group = r["group"]
            lines.append(clip(group, width))
        lines.append(clip(f"{r['id']:<8}{r['runs']['paper']:>10} / {r['runs']['tiny']:<3}  {r['title']}", width))
        lines.append(clip(f"{'':<8}varies: {r['varies']}", width))
    lines.append("\nkdtui presets show ID [--scale paper|tiny] prints a preset's spec, with its sweep")
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("show")
def presets_show(preset_id: Annotated[str, typer.Argument(metavar="ID")],
                 scale: Annotated[str, typer.Option(help="paper or tiny.")] = "tiny") -> None:
    """Print a preset's spec (TOML, with its [sweep]): copy it, edit it, run it."""
    from kdtui.core.presets import PresetError, preset_text

    try:
        sys.stdout.write(preset_text(preset_id, scale))
    except PresetError as exc:
        raise fail(str(exc))
