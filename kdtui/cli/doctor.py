"""`kdtui doctor`: what kdtui sees on this machine, and hints for the usual SSH / tmux problems.

It is the one place outside a run that imports torch (inside `doctor_report`, so that importing this
module, which every `kdtui` command does, stays cheap).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kdtui.cli.common import WorkspaceOption, noun, out
from kdtui.core.names import printable

app = noun()


@app.command("doctor")
def command(workspace: WorkspaceOption = None) -> None:
    """What matters on a remote box: torch and CUDA, the terminal's colours, the workspace."""
    out.print(render_report(doctor_report(workspace)))


def _torch_lines() -> list[tuple[str, str]]:
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install: say which
        return [("torch", f"not importable ({type(exc).__name__}: {exc})".splitlines()[0])]
    rows = [("torch", str(torch.__version__))]
    try:
        if torch.cuda.is_available():
            names = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
            rows.append(("CUDA devices", "; ".join(names)))
        else:
            rows.append(("CUDA devices", f"none (CUDA build: {torch.version.cuda or 'no'}); runs use the CPU"))
    except Exception as exc:
        rows.append(("CUDA devices", f"could not query ({exc})".splitlines()[0]))
    return rows


def _colour_lines(env: dict) -> tuple[list[tuple[str, str]], list[str]]:
    from rich.console import Console

    term, colorterm = env.get("TERM", ""), env.get("COLORTERM", "")
    try:
        console = Console(force_terminal=True, color_system="auto", _environ=env)
    except TypeError:  # an older rich without _environ
        console = Console(force_terminal=True, color_system="auto")
    system = console.color_system or "none"
    rows = [("TERM", term or "(unset)"), ("COLORTERM", colorterm or "(unset)"),
            ("colour system", f"{system} (what the app will use)")]
    hints = []
    if "NO_COLOR" in env:
        rows.append(("NO_COLOR", "set: the app draws without colour"))
    ssh = bool(env.get("SSH_CONNECTION") or env.get("SSH_TTY"))
    if ssh and not colorterm:
        hints.append("over SSH COLORTERM is not forwarded, so colours drop to 256: if your terminal does "
                     "truecolor, run `export COLORTERM=truecolor` on this machine (or add `SendEnv COLORTERM` "
                     "to ~/.ssh/config and `AcceptEnv COLORTERM` to the server's sshd_config)")
    if term in ("", "dumb"):
        hints.append("TERM is unset or 'dumb': the app needs a real terminal (e.g. TERM=xterm-256color)")
    return rows, hints


def _tmux_lines(env: dict) -> tuple[list[tuple[str, str]], list[str]]:
    if not env.get("TMUX"):
        return [], []
    rows, hints = [], []
    value = None
    if shutil.which("tmux"):
        try:
            out = subprocess.run(["tmux", "show", "-sv", "escape-time"], capture_output=True, text=True,
                                 timeout=3)
            value = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            value = None
    rows.append(("tmux escape-time", f"{value} ms" if value is not None else "unknown"))
    try:
        delay = int(value) if value is not None else None
    except ValueError:
        delay = None
    if delay is None or delay > 50:
        hints.append("tmux waits escape-time ms after Esc, so Esc (back) feels slow: add "
                     "`set -sg escape-time 10` to ~/.tmux.conf and run `tmux source-file ~/.tmux.conf`")
    if "256color" not in env.get("TERM", "") and "tmux" not in env.get("TERM", ""):
        hints.append("inside tmux set `set -g default-terminal \"tmux-256color\"` for 256 colours")
    return rows, hints


def doctor_report(workspace=None, env: dict | None = None) -> list[tuple[str, str]]:
    """(label, value) rows: torch and CUDA devices, terminal and colours, workspace and runs, then
    `hint` rows for what looks wrong (SSH colours, tmux escape delay)."""
    from kdtui.core.registry import RunStore
    from kdtui.core.workspace import Workspace, WorkspaceError

    env = dict(os.environ if env is None else env)
    rows: list[tuple[str, str]] = []
    rows += _torch_lines()
    colour_rows, hints = _colour_lines(env)
    rows += colour_rows
    if env.get("SSH_CONNECTION"):
        rows.append(("SSH", f"yes ({env['SSH_CONNECTION'].split()[0]} ->)"))
    tmux_rows, tmux_hints = _tmux_lines(env)
    rows += tmux_rows
    hints += tmux_hints
    try:
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, create=False)
        rows.append(("workspace", str(ws.root)))
        records = RunStore(ws).all() if Path(ws.registry_path).exists() else []
        by_status: dict[str, int] = {}
        for record in records:
            by_status[record.get("status", "?")] = by_status.get(record.get("status", "?"), 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        rows.append(("runs", f"{len(records)}" + (f" ({detail})" if detail else "")))
    except WorkspaceError as exc:  # a report, not a refusal: doctor says what it found
        rows.append(("workspace", str(exc)))
    except Exception as exc:
        rows.append(("workspace", f"unreadable: {exc}".splitlines()[0]))
    rows += [("hint", hint) for hint in hints]
    return rows


def render_report(rows: list[tuple[str, str]]):
    """The rows as a rich Table (what `kdtui doctor` prints)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(Text(label, style="yellow" if label == "hint" else ""), Text(printable(value)))  # paths: escaped
    return table
