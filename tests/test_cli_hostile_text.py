"""Every string a user or a run wrote reaches the terminal as text, through every command.

A workspace whose runs carry hostile names, spec values, errors and log lines (as an older registry
or a forged folder could: new specs refuse control characters) goes through `runs list`, `show`,
`tail`, `compare`, `export` and `report`, and through the error paths (`run`'s failure line, a bad
sweep value, a path in a one-line error). The output (no terminal, NO_COLOR: rich adds no styling)
must hold no ESC, no C1 control and no bidirectional control, must show markup as typed, and its
tables must line up in terminal cells, CJK and emoji included.
"""
from __future__ import annotations

import json
import re
import time

import pytest
from rich.cells import cell_len

from cli_helpers import fake_run, kdtui, tiny_spec, write
from kdtui.core.names import BIDI_CONTROLS

OSC8 = "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07"
HOSTILE = {
    "260101-000000-a001": "[bold]x" + OSC8,
    "260101-000000-a002": "[link=https://example.com]x[/link]\x1b[2J",
    "260101-000000-a003": "[@click=app.quit]x\u202eevil\x9b31m",
    "260101-000000-a004": "蒸留[seed=0,distill.temperature=8.0]",
    "260101-000000-a005": "run 🚀 a[seed=0,x=1]",
}
ERROR = "boom [link=https://evil.example]y[/link] \x1b]0;pwned\x07 \u202eexe.txt"
LOG = "log line \x1b[31mred\x1b[0m [bold]not bold[/bold] \u2066iso"
SWEEP_VALUE = "v[bold]\x1b[2J"


def _safe(text: str) -> None:
    """No byte that starts or is a control sequence, no bidirectional control."""
    bad = sorted({f"U+{ord(c):04X}" for c in text if c == "\x1b" or "\x80" <= c <= "\x9f" or c in BIDI_CONTROLS
                  or c == "\x07"})
    assert not bad, f"raw control characters reached the terminal: {bad}\n{text!r}"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("hostile") / "ws"
    for i, (run_id, name) in enumerate(HOSTILE.items()):
        fields = {"name": name, "spec": {"name": name, "seed": i, "distill": {"loss": "kl", "note": SWEEP_VALUE}}}
        if run_id.endswith("3"):
            fields.update(status="failed", error=ERROR)
        fake_run(ws, run_id, **fields)
        with (ws / run_id / "events.jsonl").open("a") as f:
            f.write(json.dumps({"t": time.time(), "type": "log", "message": LOG}) + "\n")
    return ws


def _run(*args) -> str:
    result = kdtui(*args)
    assert "Traceback" not in result.stderr, result.stderr
    text = result.stdout + result.stderr
    _safe(text)
    return text


def test_runs_list_shows_names_literally_and_aligned(ws):
    text = _run("runs", "list", "-w", str(ws))
    for literal in ("[bold]x", "[link=https://example.com]x[/link]", "[@click=app.quit]x", "蒸留", "🚀",
                    "\\x1b]8;;https://evil.example\\x07", "\\u202e", "\\x9b"):
        assert literal in text, literal
    lines = [line for line in text.splitlines() if re.search(r"\b(done|failed)\b", line)]
    assert len(lines) == len(HOSTILE)
    # The status column starts at the same terminal cell on every row, CJK and emoji included.
    starts = {cell_len(line[: re.search(r"\b(done|failed)\b", line).start()]) for line in lines}
    assert len(starts) == 1, [line for line in lines]


def test_runs_show_escapes_the_error_row_and_the_spec_values(ws):
    text = _run("runs", "show", "a003", "-w", str(ws))
    assert "[link=https://evil.example]y[/link]" in text and "\\x1b]0;pwned\\x07" in text
    assert "[@click=app.quit]x" in text and "\\u202eevil" in text
    assert "v[bold]\\x1b[2J" in text  # a spec value, in the resolved config


def test_runs_tail_escapes_event_text(ws):
    text = _run("runs", "tail", "a001", "-w", str(ws))
    assert "\\x1b[31mred\\x1b[0m [bold]not bold[/bold]" in text and "\\u2066iso" in text


@pytest.mark.parametrize("extra", [[], ["--by-group"], ["--json"]])
def test_runs_compare_shows_names_and_values_literally(ws, extra):
    text = _run("runs", "compare", *HOSTILE, "--all-keys", "-w", str(ws), *extra)  # the sweep value is equal in all
    if "--json" in extra:
        note = next(row for row in json.loads(text)["config"] if row["key"] == "distill.note")
        assert note["values"] == [SWEEP_VALUE] * len(HOSTILE)  # escaped for the terminal, the same value
    else:
        assert "v[bold]\\x1b[2J" in text


@pytest.mark.parametrize("fmt", ["csv", "md", "json"])
def test_runs_export_to_the_terminal_is_escaped(ws, fmt):
    text = _run("runs", "export", "-f", fmt, "-w", str(ws))
    if fmt == "json":
        names = [r["name"] for r in json.loads(text)]
        assert names == list(HOSTILE.values())  # escaped for the terminal, the same strings for a program
    else:
        assert "[bold]x" in text and "蒸留" in text


def test_report_and_its_error_paths_are_escaped(ws, tmp_path):
    text = _run("report", "a001", "a002", "-w", str(ws))
    assert "report:" in text
    missing = tmp_path / "[link=evil.example]y[/link]\x1b]8;;x\x07" / "out.csv"
    text = _run("runs", "export", "-o", str(missing), "-w", str(ws))
    assert "error:" in text and "[link=evil.example]y[/link]\\x1b]8;;x\\x07" in text


def test_a_bad_sweep_value_is_named_without_acting_on_the_terminal(tmp_path):
    spec = write(tmp_path / "bad.toml", tiny_spec("sweep-bad", sweep='"distill.loss" = ["kl", "\\u001b]8;;https://evil.example\\u0007[link=x]y[/link]"]'))
    text = _run("run", str(spec), "-w", str(tmp_path / "ws"))
    assert "error:" in text and "[link=x]y[/link]" in text and "\\x1b]8;;https://evil.example\\x07" in text


def test_the_run_failure_line_is_escaped(tmp_path):
    root = "/nonexistent/[link=evil.example]y[/link]\u001b]8;;x\u0007"
    spec = tiny_spec("fails").replace('dataset = "digits"', 'dataset = "imagefolder"')
    spec = spec.replace("[data]", "[data]\nroot = " + json.dumps(root), 1)
    text = _run("run", str(write(tmp_path / "fails.toml", spec)), "-w", str(tmp_path / "ws"))
    assert "error:" in text and "[link=evil.example]y[/link]\\x1b]8;;x\\x07" in text
