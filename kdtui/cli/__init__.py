"""The `kdtui` command line: run specs, and find, compare and export runs from the shell.

One module per noun (run, runs, queue, presets, teachers, report, doctor, serve), each a typer app,
under one root group, plus the hidden entry points of the processes kdtui starts (internal); each
module is imported only when its command runs (`--help` lists them from a table of summaries). It is typer through its public
API: typed options, a lazy TyperGroup, shell completion (`kdtui --install-completion`), and usage
errors caught in `main` to print one line. Exit codes (as the README says): 0 success, 1 run failed,
2 bad input, 130 interrupted. Nothing here imports torch at module level: only `run`, `runs resume`
and the internal commands pay for it, inside the runner.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdtui.cli.common import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, HELP_CONTEXT, WORKSPACE_HELP, LazyGroup,
                              err, os_error_text)
from kdtui.core.workspace import ENV_VAR


class CommandLine(LazyGroup):
    # name -> the typer app of its module, in the order --help lists them; the last three are hidden:
    # the entry points of the processes kdtui starts itself (a queue worker, a torchrun rank, the Ray driver).
    lazy = {
        "run": "kdtui.cli.run:app", "runs": "kdtui.cli.runs:app", "queue": "kdtui.cli.queue:app",
        "presets": "kdtui.cli.presets:app", "teachers": "kdtui.cli.teachers:app", "report": "kdtui.cli.report:app",
        "doctor": "kdtui.cli.doctor:app", "serve": "kdtui.cli.serve:app",
        "worker": "kdtui.cli.internal:worker", "ddp-rank": "kdtui.cli.internal:ddp_rank",
        "ray-driver": "kdtui.cli.internal:ray_driver",
    }
    summaries = {
        "run": "Run an experiment spec (every point of its [sweep] grid).",
        "runs": "Find, follow, compare and export runs.",
        "queue": "The device slots (who holds each) and the runs waiting for one, first in line first.",
        "presets": "The paper's experiments as ready-made specs.",
        "teachers": "The teacher store: trained teachers and their output caches, shared by every run.",
        "report": "Figures (PNG) and a mean ± std table (Markdown) in <workspace>/reports/<name>/.",
        "doctor": "What matters on a remote box: torch and CUDA, the terminal's colours, the workspace.",
        "serve": "Serve the terminal app to a browser (textual-serve); reach it through `ssh -L`.",
    }


app = typer.Typer(cls=CommandLine, name="kdtui", rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings=HELP_CONTEXT)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"kdtui {version('kdtui')}")
        raise typer.Exit(EXIT_OK)


@app.callback(invoke_without_command=True)
def open_app(
    ctx: typer.Context,
    workspace: Annotated[Optional[Path], typer.Option("--workspace", "-w", envvar=ENV_VAR, file_okay=False,
                                                      help=WORKSPACE_HELP)] = None,
    no_mouse: Annotated[bool, typer.Option("--no-mouse", help="Keyboard only: leave the mouse to the terminal.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, expose_value=False,
                                          help="Show the version and exit.")] = False,
) -> int | None:
    """kdtui: a terminal experiment manager for knowledge distillation.

    With no command: open the terminal app on the workspace.
    """
    if ctx.invoked_subcommand is None:
        from kdtui.tui import run_app

        return run_app(workspace, mouse=not no_mouse)  # the app's exit status (non-zero: it crashed)
    return None


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (a library's, on a full disk or an odd file) as one line, not its source."""
    text = str(message).strip().splitlines()
    err.print(f"warning: {text[0] if text else category.__name__}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    import warnings

    warnings.showwarning = _warning_line
    try:
        code = typer.main.get_command(app).main(prog_name="kdtui", standalone_mode=False)
    except typer.TyperException as exc:
        # typer's own errors. A usage error (a mistyped option or argument, exit status 2) is one line
        # naming the command whose help explains it, like every other bad input.
        message = f"error: {exc.format_message()}"
        if exc.exit_code == EXIT_BAD_INPUT:
            context = getattr(exc, "ctx", None)
            message += f" (see: {context.command_path if context is not None else 'kdtui'} --help)"
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # A registry that any command may meet broken (missing, emptied or damaged while run folders
        # exist: RegistryNeedsReindex, naming `kdtui runs reindex`), or a workspace the app cannot
        # create, gets one line wherever it is met.
        # A disk that refuses a write or a read (read-only, full, no permission) is one line naming
        # the file, wherever it is met.
        from kdtui.core.registry import RegistryError
        from kdtui.core.workspace import WorkspaceError
        if isinstance(exc, OSError) and exc.errno is not None:
            err.print(f"error: {os_error_text(exc)}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(EXIT_BAD_INPUT)
        if not isinstance(exc, (RegistryError, WorkspaceError)):
            raise
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
