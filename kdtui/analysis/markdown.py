"""GitHub-flavoured Markdown tables, for the comparison export and the report's results.md."""
from __future__ import annotations

import re
from typing import Any, Iterable

from kdtui.core.names import printable

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def md_escape(value: Any) -> str:
    """A cell's text that cannot end its cell or its row: backslash and `|` escaped, line breaks
    (a run name may hold one) turned into spaces."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return printable(_LINE_BREAK.sub(" ", text))  # other control characters: escaped (kdtui.core.names)


def md_table(header: list[Any], rows: Iterable[list[Any]]) -> str:
    """A header row, the `---` rule and one line per row; every cell escaped; ends with a newline."""
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
