"""Run names are free text typed by people; some characters in them act on the terminal instead of
being shown. This module says which, and shows a name safely.

The same holds for every string that comes from a user or a run (paths, sweep values, error
messages, event text): `printable` is the one helper that makes such text safe to print, and the
command line's consoles pass every string through it (kdtui.cli.common).

Control characters (C0, DEL, C1) can move the cursor, recolour or retitle a terminal (ESC starts
every such sequence), and bidirectional controls reorder what is shown after them, so a name can
pretend to be another. New names with them are refused by spec validation (`unsafe_characters`);
names already in a registry are shown through `printable` on every screen and in every command.
"""
from __future__ import annotations

import re

# The bidirectional formatting characters: LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI; the
# implicit marks LRM, RLM and the Arabic letter mark.
BIDI_CONTROLS = frozenset(map(chr, (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)))


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f" + "".join(sorted(BIDI_CONTROLS)) + "]")


def is_unsafe(char: str) -> bool:
    """A control character (C0, DEL, C1) or a bidirectional control."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in BIDI_CONTROLS


def unsafe_characters(text: str) -> list[str]:
    """The unsafe characters in `text`, in order, each once."""
    return list(dict.fromkeys(char for char in text if is_unsafe(char)))


def escape_char(char: str) -> str:
    """`\\x1b` for a control character below U+0100, `\\u202e` above."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def is_printable(text: str) -> bool:
    """Whether `text` holds no unsafe character (one scan: a caller can test many strings joined)."""
    return _UNSAFE.search(text) is None


def printable(text: object, *, lines: bool = False) -> str:
    """`text` as a string with every unsafe character escaped (`\\x1b`, `\\u202e`), so that what
    a terminal shows is what the text holds. `lines=True` keeps line breaks (text of several lines
    that kdtui wrote itself around user values); otherwise a newline is escaped too, so that a value
    stays on its line."""
    text = "" if text is None else str(text)
    if _UNSAFE.search(text) is None:  # the usual case: no copy (one regex scan; `runs list` shows 10,000)
        return text
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(escape_char(char) if is_unsafe(char) else char for char in text)
