"""kdtui's runs from Python, for a notebook: `kdtui.open_workspace(path)`.

    import kdtui
    ws = kdtui.open_workspace("runs")               # or $KDTUI_HOME, else ./runs
    ws.runs(status="done", where="τ=4")             # records
    ws.search(Query().metrics.test_agreement > 0.9)  # a tinydb query, over every run
    ws.frame()                                      # pandas: one row per run
    ws.histories()                                  # pandas: one row per run and epoch

Read-only: it takes no lock and never writes, so it is safe beside running sweeps (a run whose
process died still reads as it was left until a command or the app settles it). Imports neither
torch nor Textual; pandas only for `frame` and `histories` (the extra `kdtui[notebook]`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from kdtui.analysis.compare import run_table
from kdtui.analysis.filters import parse_selection, select
from kdtui.analysis.labels import run_labels
from kdtui.core.registry import RunStore, record_with_history
from kdtui.core.workspace import Workspace, resolve_workspace

if TYPE_CHECKING:
    import pandas

__all__ = ["open_workspace", "WorkspaceReader", "PANDAS_HINT"]

PANDAS_HINT = "kdtui: frame() and histories() need pandas: pip install 'kdtui[notebook]' (or pip install pandas)"


def open_workspace(path: str | Path | None = None) -> "WorkspaceReader":
    """The workspace at `path`, else $KDTUI_HOME, else ./runs (as the CLI finds it). It must exist:
    raises kdtui.core.workspace.WorkspaceError (one line) otherwise."""
    return WorkspaceReader(Workspace(resolve_workspace(path, create=False)))


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError(PANDAS_HINT) from None
    return pandas


class WorkspaceReader:
    """The runs of one workspace, read-only. Records are dicts as `kdtui runs show --json` prints
    them (docs/records.md); lists come oldest first."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._store = RunStore(workspace)

    @property
    def path(self) -> Path:
        return self.workspace.root

    def __repr__(self) -> str:
        return f"open_workspace({str(self.path)!r})"

    def runs(self, status: str | Iterable[str] | None = None, where: str | None = None, *,
             name: str | None = None, group: str | None = None, details: bool = False) -> list[dict]:
        """The runs `kdtui runs list` shows with the same options, oldest first: `status` (one or
        several), `name` (a substring), `group` (a group hash prefix), and `where`, the filter's
        terms (`"τ=4 seed=1"`, kdtui.analysis.filters). Index rows (no spec, teachers or full
        metrics) unless `details`, which reads each run's record.json for its whole record."""
        rows = self._store.find(status=status, name=name, group=group)
        return select(self._store, parse_selection(where), rows, details)

    def get(self, run_id: str) -> dict:
        """One run's whole record, by id or a unique prefix of it or of its short id."""
        return self._store.resolve(run_id)

    def search(self, cond: Callable[[dict], bool]) -> list[dict]:
        """The whole records a `tinydb.Query` (or any test of a record) keeps, over every run:
        `ws.search(Query().spec.distill.temperature == 4)`."""
        return [record for record in self._store.all(details=True) if cond(record)]

    def history(self, run_id: str) -> list[dict]:
        """One run's per-epoch metrics, `{"epoch": e, metric: value, ...}` per epoch, oldest first
        (from its events.jsonl; a resumed run's repeated epoch counts once)."""
        record = self._store.resolve(run_id)
        return record_with_history(self._store, self.workspace, record["id"])["history"]

    def frame(self, status: str | Iterable[str] | None = None, where: str | None = None, *,
              name: str | None = None, group: str | None = None) -> "pandas.DataFrame":
        """One row per selected run (as `runs`): id, label (what sets the run apart, as compare
        heads its columns), name, status, group_hash, spec_hash, created, the flattened spec
        (`distill.temperature`), the environment (`env.*`) and the final metrics: the columns of
        `kdtui runs export --format csv`, with numbers as numbers."""
        pandas = _pandas()
        header, rows = run_table(self.runs(status, where, name=name, group=group, details=True))
        return pandas.DataFrame(rows, columns=header)

    def histories(self, ids: Iterable[str] | None = None, status: str | Iterable[str] | None = None,
                  where: str | None = None) -> "pandas.DataFrame":
        """Per-epoch metrics in long form: one row per run and epoch, with the run's id and label
        first. `ids` (ids or prefixes), else the runs `status` and `where` select."""
        pandas = _pandas()
        if ids is not None:
            records = [self._store.resolve(run_id) for run_id in ids]
        else:
            records = self.runs(status, where, details=True)
        labels = run_labels(records)
        rows = [{"id": r["id"], "label": labels.get(r["id"]), **epoch}
                for r in records for epoch in self.history(r["id"])]
        metric_columns = list(dict.fromkeys(k for row in rows for k in row if k not in ("id", "label")))
        return pandas.DataFrame(rows, columns=["id", "label", *metric_columns])
