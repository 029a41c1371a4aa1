"""`kdtui serve`: the terminal app in a browser, through textual-serve (an optional extra).

It binds 127.0.0.1 unless told otherwise: reach it from another machine through an SSH tunnel.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from kdtui.cli.common import WorkspaceOption, err, fail, noun

INSTALL_HINT = "install kdtui[serve] (pip install 'kdtui[serve]') to use kdtui serve"


class ServeUnavailable(RuntimeError):
    pass


def serve_command(workspace) -> str:
    """The command textual-serve runs for each browser session."""
    from kdtui.core.workspace import Workspace

    root = workspace.root if isinstance(workspace, Workspace) else Workspace(workspace).root
    script = Path(sys.executable).with_name("kdtui")
    if script.exists():
        launcher = shlex.quote(str(script))
    else:  # not installed as a console script: the same entry point through this interpreter
        launcher = f"{shlex.quote(sys.executable)} -m kdtui.cli"
    return f"{launcher} --workspace {shlex.quote(str(root))}"


def serve(workspace=None, host: str = "127.0.0.1", port: int = 8000, *, echo=print) -> None:
    """Serve `kdtui --workspace W` at http://host:port until interrupted.

    Raises ServeUnavailable (message: one line, "install kdtui[serve] ...") if textual-serve is
    missing.
    """
    try:
        from textual_serve.server import Server
    except ImportError:
        raise ServeUnavailable(INSTALL_HINT) from None
    command = serve_command(workspace)
    echo(f"serving kdtui on http://{host}:{port}  (Ctrl-C stops serving; runs keep going)")
    if host in ("127.0.0.1", "localhost", "::1"):
        echo(f"from your own machine: ssh -L {port}:127.0.0.1:{port} user@box   then open http://localhost:{port}")
    server = Server(command, host=host, port=port, title="kdtui")
    server.serve()


app = noun()


@app.command("serve")
def command(workspace: WorkspaceOption = None,
            host: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = "127.0.0.1",
            port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000) -> None:
    """Serve the terminal app to a browser (textual-serve); reach it through `ssh -L`."""
    try:
        serve(workspace, host=host, port=port, echo=lambda line: err.print(line, markup=False))
    except ServeUnavailable as exc:
        raise fail(str(exc))
