"""The app's one rule for what comes from a user or a run: names, labels, sweep and spec values,
paths, error messages, log lines and ids are shown as text, never parsed as markup.

Textual parses a `str` as markup almost everywhere (Static, DataTable cells, select options,
notifications, palette entries): a run named `a[seed=0,x=1]` crashed the parser, and one named
`[@click=app.quit]x` would have become a link that quits. So such a string goes through `plain`
(a rich `Text`, which no widget parses) or `literal` (for the APIs that take only a `str` with
`markup=False`, or only markup: `markup_literal`). Control and bidirectional characters are escaped
(`printable`), line by line: a message of several lines keeps its lines.
"""
from __future__ import annotations

from rich.text import Text
from textual.content import Content

from kdtui.core.names import printable


def literal(value: object) -> str:
    """`value` as a string with its control characters escaped, newlines kept."""
    text = "" if value is None else str(value)
    return "\n".join(printable(line) for line in text.split("\n"))


def plain(value: object, style: str = "", **kwargs) -> Text:
    """`value` as text that is shown as it is, never read as markup (see the module's note)."""
    return Text(literal(value), style=style, **kwargs)


def markup_literal(value: object) -> str:
    """`value` as markup that shows it literally: for the few APIs that parse every `str` they get
    and take no `Text` (the command palette's help lines). Each `[` is escaped: in Textual's markup
    only the backslash right before a `[` escapes it (`textual.markup.escape` leaves `\\[` alone,
    which then shows as `[`)."""
    return literal(value).replace("[", "\\[")


def highlighted(title: str, matcher) -> Content:
    """`title` with the letters the palette's fuzzy `matcher` matched highlighted, as
    `Matcher.highlight` does, but shown literally: that one reads its candidate as markup."""
    candidate = literal(title)
    content = Content(candidate)
    score, offsets = matcher.fuzzy_search.match(matcher.query, candidate)
    for offset in offsets if score else ():
        if not candidate[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
