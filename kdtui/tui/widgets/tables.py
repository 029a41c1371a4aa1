"""A DataTable whose Home and End go to the first and last row (Textual's go to the first and last
column, which a row-cursor table does not have)."""
from __future__ import annotations

from textual.binding import Binding
from textual.widgets import DataTable


class RowTable(DataTable):
    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]
