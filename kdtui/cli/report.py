"""`kdtui report`: figures and a mean ± std table for a preset's runs, a seed group or chosen runs."""
from __future__ import annotations

from pathlib import Path

import click

from kdtui.cli.common import fail, notice_gone_folders, out, workspace_option


@click.command("report")
@click.argument("run_ids", nargs=-1, metavar="[IDS]...")
@click.option("--preset", default=None, help="The finished runs of a preset.")
@click.option("--scale", default=None, help="With --preset: paper or tiny.")
@click.option("--group", default=None,
              help="A seed group (runs that differ only by seed): a prefix of its hash, or a run id of the group.")
@workspace_option
def command(run_ids: tuple[str, ...], preset: str | None, scale: str | None, group: str | None,
            workspace: Path | None) -> None:
    """Figures (PNG) and a mean ± std table (Markdown) in <workspace>/reports/<name>/.

    Each file there is replaced whole. A symbolic link, FIFO, device or folder in place of one is
    refused (not followed), and so is a report folder that leads into a run folder or the index.
    """
    from kdtui.analysis.report import report_for
    from kdtui.core.registry import RegistryError

    try:
        index = report_for(workspace, preset=preset, scale=scale, group=group, run_ids=list(run_ids) or None,
                           on_records=notice_gone_folders)
    except (ValueError, RegistryError) as exc:
        raise fail(str(exc).splitlines()[0])
    except OSError as exc:  # a read-only workspace, a full disk, a FIFO where a figure goes: say which file
        raise fail(f"cannot write the report: {exc.filename or ''}: {exc.strerror or exc}")
    out.print(f"report: {index}", markup=False)
