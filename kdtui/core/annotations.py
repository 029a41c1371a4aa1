"""What a person writes on a run: a note, tags and a new name (the record's `note`, `tags`, `name`).

The checks and the tag arithmetic only; the run service stores the result through the registry's
locked write (`RunService.annotate`), so the CLI and the app accept and refuse the same things.
"""
from __future__ import annotations

import re

from kdtui.core.names import escape_char, unsafe_characters

MAX_NOTE = 2000
MAX_NAME = 200
_TAG = re.compile(r"[^\s,+\-][^\s,]*")  # one word; a leading + or - says add or remove


class AnnotationError(ValueError):
    """A note, tag or name that cannot be stored; the message is one line for the user."""


def _refuse_unsafe(what: str, text: str) -> None:
    # Shown in terminals: these characters would act on the terminal instead (kdtui.core.names).
    unsafe = unsafe_characters(text)
    if unsafe:
        raise AnnotationError(f"{what} must not contain control characters (found "
                              f"{', '.join(escape_char(c) for c in unsafe)})")


def checked_note(text: str) -> str | None:
    """The note to store: `text` stripped, None when empty (clears it)."""
    text = text.strip()
    _refuse_unsafe("a note", text)
    if len(text) > MAX_NOTE:
        raise AnnotationError(f"a note holds at most {MAX_NOTE} characters (got {len(text)})")
    return text or None


def checked_name(text: str) -> str:
    """The new name: `text` stripped; never empty."""
    text = text.strip()
    if not text:
        raise AnnotationError("a run's name must not be empty")
    _refuse_unsafe("a run's name", text)
    if len(text) > MAX_NAME:
        raise AnnotationError(f"a run's name holds at most {MAX_NAME} characters (got {len(text)})")
    return text


def changed_tags(current: list, changes: list[str]) -> list[str]:
    """`current` tags after `changes` (`+baseline` or `baseline` adds, `-old` removes), in the
    order first added; adding a tag it has or removing one it lacks changes nothing."""
    tags = [t for t in current if isinstance(t, str)]
    if not changes:
        raise AnnotationError("give tags to add or remove, as in +baseline -old")
    for change in changes:
        sign, word = (change[0], change[1:]) if change[:1] in "+-" and change else ("+", change)
        _refuse_unsafe("a tag", word)
        if not _TAG.fullmatch(word):
            raise AnnotationError(f"tag {change!r} is not one word (no spaces or commas), as in +baseline or -old")
        if sign == "+" and word not in tags:
            tags.append(word)
        elif sign == "-" and word in tags:
            tags.remove(word)
    return tags
