"""The `kdtui` command line: run specs, and find, compare and export runs from the shell.

One module per noun (run, runs, queue, presets, report, doctor, serve) under one click group, plus
the hidden entry points of the processes kdtui starts (internal); each module is imported only when
its command runs (or `--help` lists it). It is click through its public API: typed options, lazy
subcommands, and usage errors caught in `main` to print one line. Exit codes (as the README says):
0 success, 1 run failed, 2 bad input, 130 interrupted. Nothing here imports torch at module level:
only `run`, `runs resume` and the internal commands pay for it, inside the runner.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from kdtui.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, WORKSPACE_HELP, LazyGroup, err, os_error_text
from kdtui.core.workspace import ENV_VAR


# name -> where its command lives, in the order --help lists them; the last three are hidden: the
# entry points of the processes kdtui starts itself (a queue worker, a torchrun rank, the Ray driver).
COMMANDS = {
    "run": "kdtui.cli.run:command", "runs": "kdtui.cli.runs:command", "queue": "kdtui.cli.queue:command",
    "presets": "kdtui.cli.presets:command", "teachers": "kdtui.cli.teachers:command", "report": "kdtui.cli.report:command",
    "doctor": "kdtui.cli.doctor:command", "serve": "kdtui.cli.serve:command",
    "worker": "kdtui.cli.internal:worker", "ddp-rank": "kdtui.cli.internal:ddp_rank",
    "ray-driver": "kdtui.cli.internal:ray_driver",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kdtui", prog_name="kdtui", message="%(prog)s %(version)s")
@click.option("--workspace", "-w", envvar=ENV_VAR, type=click.Path(file_okay=False, path_type=Path), default=None,
              help=WORKSPACE_HELP)
@click.option("--no-mouse", is_flag=True, help="Keyboard only: leave the mouse to the terminal.")
@click.pass_context
def app(ctx: click.Context, workspace: Path | None, no_mouse: bool) -> None:
    """kdtui: a terminal experiment manager for knowledge distillation.

    With no command: open the terminal app on the workspace.
    """
    if ctx.invoked_subcommand is None:
        from kdtui.tui import run_app

        return run_app(workspace, mouse=not no_mouse)  # the app's exit status (non-zero: it crashed)




def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (a library's, on a full disk or an odd file) as one line, not its source."""
    text = str(message).strip().splitlines()
    err.print(f"warning: {text[0] if text else category.__name__}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    import warnings

    warnings.showwarning = _warning_line
    try:
        code = app.main(prog_name="kdtui", standalone_mode=False)
    except click.UsageError as exc:
        # A mistyped option or argument: one line, like every other bad input.
        where = exc.ctx.command_path if exc.ctx is not None else "kdtui"
        err.print(f"error: {exc.format_message()} (see: {where} --help)", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
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
