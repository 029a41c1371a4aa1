"""`kdtui report`: figures and a mean ± std table for a preset's runs, a seed group or chosen runs."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from kdtui.cli.common import WorkspaceOption, fail, noun, notice_gone_folders, out

app = noun()


@app.command("report")
def command(
    run_ids: Annotated[Optional[list[str]], typer.Argument(help="Chosen runs (ids or unique prefixes).", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option(help="The finished runs of a preset.")] = None,
    scale: Annotated[Optional[str], typer.Option(help="With --preset: paper or tiny.")] = None,
    group: Annotated[Optional[str], typer.Option(
        help="A seed group (runs that differ only by seed): a prefix of its hash, or a run id of the group.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Figures (PNG) and a mean ± std table (Markdown) in <workspace>/reports/<name>/.

    Each file there is replaced whole. A symbolic link, FIFO, device or folder in place of one is
    refused (not followed), and so is a report folder that leads into a run folder or the index.
    """
    from kdtui.analysis.report import report_for
    from kdtui.core.registry import RegistryError

    try:
        index = report_for(workspace, preset=preset, scale=scale, group=group, run_ids=list(run_ids or ()) or None,
                           on_records=notice_gone_folders)
    except (ValueError, RegistryError) as exc:
        raise fail(str(exc).splitlines()[0])
    except OSError as exc:  # a read-only workspace, a full disk, a FIFO where a figure goes: say which file
        raise fail(f"cannot write the report: {exc.filename or ''}: {exc.strerror or exc}")
    out.print(f"report: {index}", markup=False)
