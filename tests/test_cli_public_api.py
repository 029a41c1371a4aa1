"""The command line is built on typer's public API only: no private typer or click names anywhere in
kdtui/, `kdtui --help` is typer's and lists every public noun, and shell completion (installing it,
showing it, completing a word) works through typer for the lazily loaded commands."""
from __future__ import annotations

import re
from pathlib import Path

import typer

from tests.cli_helpers import kdtui

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_NOUNS = ("run", "runs", "queue", "presets", "teachers", "report", "doctor", "serve")
HIDDEN = ("worker", "ddp-rank", "ray-driver")

# Private names of typer (its vendored click is typer._click) and of click: a leading underscore
# after the package or one of its modules, `from typer... import _x`, or typer's private helpers.
PRIVATE_API = [
    re.compile(r"\b(?:typer|click)(?:\.\w+)*\._\w"),                 # typer.main._x, typer._click, click.core._x
    re.compile(r"\bfrom\s+(?:typer|click)(?:\.\w+)*\s+import\s+(?:\(\s*)?_\w"),  # from typer.main import _x
    re.compile(r"\bfrom\s+(?:typer|click)(?:\.\w+)*\._\w"),          # from typer._click.core import ...
    re.compile(r"(?<![\w.])_typer\w*"),                              # typer's own private helpers
    re.compile(r"\b(?:core|main)\._main\b"),                         # typer.core._main
]


def private_api_uses(text: str) -> list[str]:
    return [match.group(0) for pattern in PRIVATE_API for match in pattern.finditer(text)]


def test_the_patterns_catch_private_names():
    """A guard on the scan below: each pattern finds what it is for, and public names pass."""
    for private in ("typer.main._get_command(app)", "from typer._click import Group", "typer._click.Group",
                    "click.core._verify_python_env()", "from typer.core import _main", "_typer_param_setup()",
                    "typer.core._main(self)", "from click.utils import _detect_program_name"):
        assert private_api_uses(private), private
    for public in ("typer.main.get_command(app)", "from typer.core import TyperGroup", "typer.Exit(2)",
                   "typer.TyperException", "app = noun()", "pilot.click('#runs')", "def on_click(self):"):
        assert not private_api_uses(public), public


def test_kdtui_uses_no_private_typer_or_click_api():
    hits = []
    for path in sorted((ROOT / "kdtui").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{number}: {found}" for found in private_api_uses(line)]
    assert not hits, "\n".join(hits)


def test_the_command_line_is_a_typer_group():
    from kdtui.cli import app

    assert isinstance(app, typer.Typer)
    assert isinstance(typer.main.get_command(app), typer.core.TyperGroup)


def test_help_is_typers_and_lists_every_public_noun():
    result = kdtui("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: kdtui [OPTIONS] COMMAND [ARGS]...")
    listed = [line.split()[0] for line in result.stdout.split("Commands:", 1)[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]  # a name, not a help text's wrapped line
    assert listed == list(PUBLIC_NOUNS)
    for option in ("--install-completion", "--show-completion", "--version", "--workspace", "--no-mouse"):
        assert option in result.stdout
    # Help text is shown as written, not read as markup (`[sweep]` would vanish as a rich tag).
    assert "[sweep]" in result.stdout


def test_help_lists_each_noun_by_the_first_line_of_its_own_help_without_importing_it():
    """`kdtui --help` reads the summaries table (no noun module is imported to list it); the table
    must say what each command's own help says first, or the two drift apart."""
    import subprocess
    import sys

    from kdtui.cli import CommandLine, app

    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    assert set(CommandLine.summaries) == set(PUBLIC_NOUNS)
    for name in PUBLIC_NOUNS:
        own = root.get_command(ctx, name).help.strip().splitlines()[0]
        assert CommandLine.summaries[name] == own, name
    probe = ("import sys; sys.argv = ['kdtui', '--help']\nfrom kdtui.cli import main\ntry: main()\n"
             "except SystemExit: pass\nprint(sorted(m for m in sys.modules if m.startswith('kdtui.cli.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['kdtui.cli.common']"


def test_show_completion_prints_a_script_for_kdtui():
    result = kdtui("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "_kdtui_completion" in result.stdout and "_KDTUI_COMPLETE=complete_bash" in result.stdout


def test_install_completion_writes_the_script_under_home(tmp_path):
    result = kdtui("--install-completion", "bash", env_extra={"HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert result.returncode == 0, result.stderr
    script = tmp_path / ".bash_completions" / "kdtui.sh"
    assert "_kdtui_completion" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def complete(words: str) -> list[str]:
    """What bash completion offers for the last of `words` (the protocol the installed script speaks)."""
    parts = words.split(" ")
    result = kdtui(env_extra={"_KDTUI_COMPLETE": "complete_bash", "COMP_WORDS": words,
                              "COMP_CWORD": str(len(parts) - 1)})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_completion_offers_the_lazy_commands_and_their_options():
    assert complete("kdtui ru") == ["run", "runs"]
    assert complete("kdtui w") == []  # `worker` is hidden
    assert complete("kdtui runs re") == ["reindex", "rename", "resume"]
    assert complete("kdtui runs list --st") == ["--status"]
