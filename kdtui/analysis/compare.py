"""Side-by-side comparison of run records, and their export (CSV / JSON / Markdown).

Pure standard library, so the CLI and the terminal app can import it without torch. The data part
works on run records as `kdtui runs show --json` prints them; only `render_rich` touches
rich, and imports it inside the function.

- `compare(records, diff_only=..., agg=..., by_group=...)` builds a `Comparison`: runs (or seed
  groups) as columns, config rows (the flattened resolved spec, then the environment rows that
  differ) then metric rows.
- `to_csv` / `to_markdown` / `to_json` / `from_json` export a comparison; `export_runs` /
  `import_runs_json` export whole records (one row per run), as `kdtui runs export` does.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from kdtui.analysis.flat import flatten_spec, join_values
from kdtui.analysis.labels import run_labels, short_id
from kdtui.analysis.markdown import md_table
from kdtui.core.names import printable
from kdtui.core.vocabulary import metric_label

__all__ = [
    "METRICS", "HIGHER_IS_BETTER", "LOWER_IS_BETTER", "AGGREGATIONS", "EXPORT_FORMATS",
    "MeanStd", "Comparison",
    "is_number", "mean_std", "flatten_spec", "flatten_environment", "metric_series", "metric_value", "best_epoch", "higher_is_better",
    "group_label", "group_labels", "group_count", "has_metrics", "seed_count", "records_mean_std", "strip_seed", "compare",
    "format_cell", "to_csv", "to_markdown", "to_json", "from_json", "render_rich",
    "export_runs", "import_runs_json", "run_table",
]

# The metric rows a comparison shows, in this order (the names of docs/metrics.md, which exports keep).
METRICS: tuple[str, ...] = (
    "train_agreement", "train_agreement_eval", "test_agreement", "test_kl", "test_acc", "test_nll",
    "test_ece", "teacher_test_acc", "teacher_train_acc", "train_loss",
)
HIGHER_IS_BETTER: frozenset[str] = frozenset({
    "train_agreement", "train_agreement_eval", "test_agreement", "test_acc",
    "teacher_test_acc", "teacher_train_acc",
})
LOWER_IS_BETTER: frozenset[str] = frozenset({"test_kl", "test_nll", "test_ece", "train_loss"})

AGGREGATIONS: tuple[str, ...] = ("last", "best", "min", "max")
EXPORT_FORMATS: tuple[str, ...] = ("csv", "json", "md")

_MISSING = "—"


@dataclass(frozen=True)
class MeanStd:
    """A metric across the runs of one group, counted by seed (THE rule for every mean ± std kdtui
    shows: the app, `runs compare --by-group`, reports): `mean` over the distinct seeds, runs that
    share a seed averaged first; `std` the sample standard deviation across seeds, None below two
    (one seed has no spread to show); `n` the distinct seeds; `runs` the runs behind them (more
    than `n` when replicates share a seed: flagged †, they are not independent samples)."""
    mean: float
    std: float | None
    n: int
    runs: int = 0   # 0: one run per seed (== n)

    def __post_init__(self) -> None:
        if not self.runs:
            object.__setattr__(self, "runs", self.n)

    @property
    def shares_seeds(self) -> bool:
        return self.runs > self.n

    def format(self, digits: int | None = 4, of: int | None = None) -> str:
        """`0.8123 ± 0.0100` for two seeds or more; a single seed's value alone (`0.6228`); ` †`
        after either when runs share a seed. `of`: the n its column's header states; a cell over
        fewer seeds (runs without this metric) says its own, `0.6228 (n=1)`, so that no n is read
        off a header that this cell does not have. `digits=None`: full precision."""
        def number(value: float) -> str:
            return repr(value) if digits is None else f"{value:.{digits}f}"

        text = number(self.mean)
        if self.std is not None:
            text += f" ± {number(self.std)}"
        text += " †" if self.shares_seeds else ""
        return text + (f" (n={self.n})" if of is not None and self.n != of else "")

    def __str__(self) -> str:
        return self.format()


@dataclass
class Comparison:
    """Runs (or groups) as columns; `config_rows` and `metric_rows` are `(key, [value per column])`.

    With `by_group`, metric values are `MeanStd` (or None where no run of the group has the metric)
    and `members[i]` lists the run ids behind column i; otherwise `members[i] == [columns[i]]`.

    `columns` are the contract names (run ids, or group labels with their hash) that JSON and CSV
    keep; `labels` and `unders` are what people read as headers: what sets each column apart
    (`τ=1`, kdtui.analysis.labels.run_labels) and, under it, the short id or the group's count.
    """
    columns: list[str]
    config_rows: list[tuple[str, list[Any]]]
    metric_rows: list[tuple[str, list[Any]]]
    agg: str = "last"
    by_group: bool = False
    members: list[list[str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    unders: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # by_group: the n each column's header states

    def headers(self) -> list[tuple[str, str]]:
        """(label, the line under it) per column; the column names where there are no labels."""
        if len(self.labels) != len(self.columns):
            return [(column, "") for column in self.columns]
        return list(zip(self.labels, self.unders or [""] * len(self.columns)))

    def config(self, key: str) -> list[Any] | None:
        """The config row `key`'s values, or None if the comparison has no such row."""
        return next((values for k, values in self.config_rows if k == key), None)

    def metric(self, name: str) -> list[Any] | None:
        """The metric row `name`'s values, or None if the comparison has no such row."""
        return next((values for k, values in self.metric_rows if k == name), None)

    def count(self, column: int) -> int | None:
        """The n column `column`'s header states (by_group), or None."""
        return self.counts[column] if column < len(self.counts) else None


# ---------------------------------------------------------------------------------------------
# Specs and metrics of one record
# ---------------------------------------------------------------------------------------------

ENV_PREFIX = "env."


def flatten_environment(record: dict) -> dict[str, Any]:
    """The record's `environment` block (kdtui.core.provenance) as `env.<key>` rows ("env.torch");
    empty for a record written before the block existed."""
    block = record.get("environment")
    return {f"{ENV_PREFIX}{k}": v for k, v in block.items()} if isinstance(block, dict) else {}


def _keys_in_order(flats: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    return keys


def _check_agg(agg: str) -> None:
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}: expected one of {', '.join(AGGREGATIONS)}")


def higher_is_better(metric: str) -> bool:
    """True for agreements and accuracies, False for KL, NLL, ECE and loss; ValueError otherwise."""
    if metric in HIGHER_IS_BETTER:
        return True
    if metric in LOWER_IS_BETTER:
        return False
    raise ValueError(f"metric {metric!r} has no 'best' direction: use one of {', '.join(METRICS)}")


def is_number(value: Any) -> bool:
    """An int or float metric value (NaN included), not a bool, None or text."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_series(record: dict, metric: str) -> list[tuple[Any, float]]:
    """`(epoch, value)` for every history entry that has `metric` (a curve to plot)."""
    return [(entry.get("epoch"), entry[metric]) for entry in (record.get("history") or [])
            if isinstance(entry, dict) and is_number(entry.get(metric))]


def _final(record: dict, metric: str) -> float | None:
    value = (record.get("metrics") or {}).get(metric)
    return value if is_number(value) else None


def _best_index(values: Sequence[float], higher: bool) -> int | None:
    """Index of the best finite value (the first one on ties); None when no value is finite."""
    best = None
    for i, value in enumerate(values):
        if math.isnan(value):
            continue
        if best is None or (value > values[best] if higher else value < values[best]):
            best = i
    return best


def metric_value(record: dict, metric: str, agg: str = "last") -> float | None:
    """`metric` of one run aggregated over its history: `last` (the last epoch that has it), `best`
    (max for agreements and accuracies, min for KL, NLL, ECE, loss), `min` or `max` (NaN ignored).

    Epochs without the metric are skipped; when no epoch has it (no history, or a metric only the
    final values carry, such as `teacher_train_acc` in some runs) the value is `record["metrics"]`'s.
    None when neither has it.
    """
    _check_agg(agg)
    higher = higher_is_better(metric) if agg == "best" else agg == "max"
    values = [value for _, value in metric_series(record, metric)]
    if not values:
        return _final(record, metric)
    if agg == "last":
        return values[-1]
    index = _best_index(values, higher)
    return values[-1] if index is None else values[index]


def best_epoch(record: dict, metric: str) -> Any:
    """The epoch of the best value of `metric` in the history (the first on ties); None if the
    history has no value of it."""
    series = metric_series(record, metric)
    index = _best_index([value for _, value in series], higher_is_better(metric))
    return None if index is None else series[index][0]


# ---------------------------------------------------------------------------------------------
# Groups (runs that differ only by seed)
# ---------------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"(.*)\[(.*)\]\s*", re.S)
_SEED_PART = re.compile(r"(?:^|,)\s*seed=-?\d+\s*(?=,|$)")


def strip_seed(name: str) -> str:
    """A sweep point's name without its seed: "kd[seed=1]" -> "kd", "kd[seed=1,distill.alpha=0.5]"
    -> "kd[distill.alpha=0.5]"; other names unchanged."""
    match = _SUFFIX.fullmatch(name or "")
    if not match:
        return name or ""
    base, inner = match.groups()
    rest = _SEED_PART.sub("", inner).lstrip(",").strip()
    if rest == inner.strip():
        return name
    return f"{base}[{rest}]" if rest else base.rstrip()


def _group_key(record: dict) -> str:
    return str(record.get("group_hash") or record.get("spec_hash") or record.get("id") or "")


def _seed_of(record: dict) -> Any:
    return (record.get("spec") or {}).get("seed")


def has_metrics(record: dict) -> bool:
    """Whether the run recorded any metric a comparison shows (a run stopped or failed before its
    first epoch has none, and is no sample of any mean)."""
    return any(metric_value(record, metric) is not None for metric in METRICS)


def seed_count(records: Sequence[dict]) -> int:
    """The n of a group's header: the distinct seeds among its runs that have metrics."""
    return len({repr(_seed_of(r)) for r in records if has_metrics(r)})


def group_count(records: Sequence[dict]) -> str:
    """`n=3 seeds`: the distinct seeds of the group's runs that have metrics (what its means are
    over); `n=1 seed, 2 runs †` when runs share a seed; `, 1 run without metrics` for runs that
    count in no mean."""
    measured = [r for r in records if has_metrics(r)]
    n = seed_count(records)
    text = f"n={n} seed{'s' if n != 1 else ''}"
    text += f", {len(measured)} runs †" if len(measured) > n else ""
    unmeasured = len(records) - len(measured)
    return text + (f", {unmeasured} run{'s' if unmeasured != 1 else ''} without metrics" if unmeasured else "")


def group_label(records: Sequence[dict]) -> str:
    """A group column's label: the common name without the seed, the short group hash, n=K (the
    distinct seeds)."""
    names = [strip_seed(str(r.get("name") or "")) for r in records]
    name = names[0] if names else ""
    short = _group_key(records[0])[:8] if records else ""
    inside = ", ".join(part for part in (short, group_count(records)) if part)
    return f"{name} ({inside})" if name else f"({inside})"


def group_labels(groups: Sequence[Sequence[dict]]) -> list[str]:
    """A label per seed group: what differs between the groups (`τ=4`), the seed left out."""
    firsts = [{**g[0], "spec": {k: v for k, v in (g[0].get("spec") or {}).items() if k != "seed"}} for g in groups]
    labels = run_labels(firsts)
    return [labels[str(first.get("id"))] for first in firsts]


def _groups(records: Sequence[dict]) -> list[list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(_group_key(record), []).append(record)
    return list(grouped.values())


def _common(values: list[Any]) -> Any:
    """One group's config value: the common value, or the distinct values joined by " | "."""
    distinct: list[Any] = []
    for value in values:
        if not any(value == seen and type(value) is type(seen) for seen in distinct):
            distinct.append(value)
    if len(distinct) == 1:
        return distinct[0]
    return " | ".join(_MISSING if v is None else str(v) for v in distinct)


def _seeds(values: list[Any]) -> str:
    known = [v for v in values if v is not None]
    if all(is_number(v) for v in known):
        known = sorted(known)
    return join_values(known)


def mean_std(values: Iterable[Any], seeds: Iterable[Any] | None = None) -> MeanStd | None:
    """The `MeanStd` of the numbers among `values`, counted by seed; None when there are none.

    `seeds` (one per value, e.g. each run's `spec.seed`): values that share a seed are averaged
    first and count once in `n`; without seeds (or for a seed of None) each value counts as its own
    sample. No std below two distinct seeds.

    Values that are not numbers (None: a run that never recorded the metric) are left out. A NaN or
    infinite value (a run that diverged) is kept and makes the mean and std NaN: averaging only the
    seeds that survived would report a better setting than the one that was run, and a NaN cell
    makes the reader look at the failed seed instead.
    """
    values = list(values)
    seeds = list(seeds) if seeds is not None else [None] * len(values)
    by_seed: dict[Any, list[float]] = {}
    for i, (seed, value) in enumerate(zip(seeds, values)):
        if is_number(value):
            by_seed.setdefault(("seed", repr(seed)) if seed is not None else ("value", i), []).append(float(value))
    if not by_seed:
        return None
    n, runs = len(by_seed), sum(map(len, by_seed.values()))
    present = [v for group in by_seed.values() for v in group]
    if not all(math.isfinite(v) for v in present):
        return MeanStd(math.nan, math.nan if n > 1 else None, n, runs)
    means = [statistics.fmean(group) for group in by_seed.values()]
    return MeanStd(statistics.fmean(means), statistics.stdev(means) if n > 1 else None, n, runs)


def records_mean_std(records: Sequence[dict], value_of) -> MeanStd | None:
    """`mean_std` of `value_of(record)` over `records`, counted by each record's `spec.seed`."""
    return mean_std([value_of(r) for r in records], [_seed_of(r) for r in records])


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------

def _all_equal(values: list[Any]) -> bool:
    first = values[0] if values else None
    return all(v == first and type(v) is type(first) for v in values)


def _annotation_rows(records: list[dict], groups: list[list[dict]] | None) -> list[tuple[str, list[Any]]]:
    """The user's `tags` and `note` rows (kdtui runs tag / note), first, when any run has one; a
    group's column holds its runs' distinct values."""
    def value(record: dict, key: str) -> Any:
        held = record.get(key)
        return (" ".join(map(str, held or ())) if key == "tags" else held) or None

    rows = []
    for key in ("tags", "note"):
        if any(value(r, key) is not None for r in records):
            cells = [value(r, key) for r in records] if groups is None else \
                [_common([value(r, key) for r in g]) for g in groups]
            rows.append((key, cells))
    return rows


def compare(records: Sequence[dict], *, diff_only: bool = False, agg: str = "last",
            by_group: bool = False) -> Comparison:
    """Runs as columns (in the given order), config rows (flattened spec) then `METRICS` rows.

    After the spec's rows come the environment rows (`env.torch`, `env.device`, ...) whose values
    differ between the columns: what could explain why two runs of one spec differ. Environment
    rows that agree are always hidden.

    `diff_only` hides config rows whose value is the same in every column. `agg` picks each
    metric's value over a run's history (last | best | min | max). `by_group` makes one column per
    seed group (same `group_hash`, in order of first appearance): metric cells are `MeanStd`, config
    cells the group's common value, and `seed` the group's seeds.
    """
    _check_agg(agg)
    records = list(records)
    flats = [flatten_spec(r.get("spec")) for r in records]
    keys = _keys_in_order(flats)
    envs = [flatten_environment(r) for r in records]
    env_keys = _keys_in_order(envs)

    if not by_group:
        columns = [str(r.get("id")) for r in records]
        members = [[c] for c in columns]
        counts: list[int] = []
        names = run_labels(records)
        labels, unders = [names[c] for c in columns], [short_id(c) for c in columns]
        config_rows = [(key, [flat.get(key) for flat in flats]) for key in keys]
        env_rows = [(key, [env.get(key) for env in envs]) for key in env_keys]
        metric_rows = [(m, [metric_value(r, m, agg) for r in records]) for m in METRICS]
    else:
        groups = _groups(records)
        flat_of = {id(r): f for r, f in zip(records, flats)}
        columns = [group_label(g) for g in groups]
        members = [[str(r.get("id")) for r in g] for g in groups]
        labels, unders = group_labels(groups), [group_count(g) for g in groups]
        counts = [seed_count(g) for g in groups]
        config_rows = []
        for key in keys:
            per_group = [[flat_of[id(r)].get(key) for r in g] for g in groups]
            combine = _seeds if key == "seed" else _common
            config_rows.append((key, [combine(values) for values in per_group]))
        env_of = {id(r): e for r, e in zip(records, envs)}
        env_rows = [(key, [_common([env_of[id(r)].get(key) for r in g]) for g in groups]) for key in env_keys]
        metric_rows = [(m, [records_mean_std(g, lambda r, m=m: metric_value(r, m, agg)) for g in groups])
                       for m in METRICS]

    if diff_only:
        config_rows = [(key, values) for key, values in config_rows if not _all_equal(values)]
    config_rows += [(key, values) for key, values in env_rows if not _all_equal(values)]
    config_rows = _annotation_rows(records, groups if by_group else None) + config_rows
    return Comparison(columns=columns, config_rows=config_rows, metric_rows=metric_rows, agg=agg,
                      by_group=by_group, members=members, labels=labels, unders=unders, counts=counts)


# ---------------------------------------------------------------------------------------------
# Export of a comparison
# ---------------------------------------------------------------------------------------------

def format_cell(value: Any, digits: int | None = 4, missing: str = _MISSING, of: int | None = None) -> str:
    """A cell as text: None -> `missing`; MeanStd -> "0.8123 ± 0.0100" (its `format`: no ± below
    two seeds, † for shared seeds, `(n=1)` when its n is not `of`, the n of its column's header);
    floats to `digits` decimals (full precision with digits=None); everything else str()."""
    if value is None:
        return missing
    if isinstance(value, MeanStd):
        return value.format(digits, of)
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}"
    return str(value)


def _config_text(value: Any, missing: str) -> str:
    return missing if value is None else str(value)


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). OWASP's
# remedy: a leading single quote, which the spreadsheet shows as text. (OWASP's other two, tab and
# carriage return, never start a cell here: `printable` escapes them.)
_FORMULA_START = ("=", "+", "-", "@")


def csv_safe(value: Any) -> Any:
    """A cell for a CSV file: text is escaped (`printable`) and defused if it would start a
    formula; anything else, numbers such as -0.5 included, is returned as it is."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def to_csv(comparison: Comparison) -> str:
    """`section,key,<column>...`: a `run,label` row (what sets each column apart, as the app's
    headers say it), config rows (section "config") then metric rows ("metric"). Numbers at full
    precision, None empty, MeanStd as "mean ± std"; text through `csv_safe`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "key", *map(csv_safe, comparison.columns)])
    writer.writerow(["group" if comparison.by_group else "run", "label",
                     *(csv_safe(label) for label, _ in comparison.headers())])
    for key, values in comparison.config_rows:
        writer.writerow(["config", key, *(_config_text(csv_safe(v), "") for v in values)])
    for key, values in comparison.metric_rows:
        writer.writerow(["metric", key, *(format_cell(v, None, "", comparison.count(i)) for i, v in enumerate(values))])
    return out.getvalue()


def to_markdown(comparison: Comparison, digits: int = 4) -> str:
    """A GitHub table: runs as columns, config rows, a "**metrics**" separator row, metric rows."""
    width = len(comparison.columns)
    rows = [[key, *(_config_text(v, _MISSING) for v in values)]
            for key, values in comparison.config_rows]
    rows.append(["**metrics**", *([""] * width)])
    rows.extend([key, *(format_cell(v, digits, of=comparison.count(i)) for i, v in enumerate(values))]
                for key, values in comparison.metric_rows)
    header = ["group" if comparison.by_group else "run",
              *(f"{label} ({under})" if under else label for label, under in comparison.headers())]
    return md_table(header, rows)


def _encode_cell(value: Any) -> Any:
    if isinstance(value, MeanStd):
        return {"mean": value.mean, "std": value.std, "n": value.n, "runs": value.runs}
    return value


def _decode_cell(value: Any) -> Any:
    if isinstance(value, dict) and {"mean", "std", "n"} <= set(value) <= {"mean", "std", "n", "runs"}:
        return MeanStd(value["mean"], value["std"], value["n"], value.get("runs", 0))
    return value


def to_json(comparison: Comparison, indent: int | None = 2, ascii_only: bool = False) -> str:
    """A JSON object with columns, labels, unders, counts, members, agg, by_group, config and metrics (lists
    of `{"key": ..., "values": [...]}`); MeanStd cells are `{"mean", "std", "n", "runs"}` (std null
    below two seeds, n the distinct seeds). See `from_json`. `ascii_only`: every other character as a
    JSON escape (for a terminal: no control or bidirectional character reaches it raw)."""
    payload = {
        "columns": list(comparison.columns),
        "labels": list(comparison.labels),
        "unders": list(comparison.unders),
        "counts": list(comparison.counts),
        "members": [list(m) for m in comparison.members],
        "agg": comparison.agg,
        "by_group": comparison.by_group,
        "config": [{"key": k, "values": list(vs)} for k, vs in comparison.config_rows],
        "metrics": [{"key": k, "values": [_encode_cell(v) for v in vs]}
                    for k, vs in comparison.metric_rows],
    }
    return json.dumps(payload, indent=indent, ensure_ascii=ascii_only)


def from_json(text: str) -> Comparison:
    """The `Comparison` that `to_json` wrote (equal to the original)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "columns" not in data:
        raise ValueError("not a kdtui comparison: expected an object with 'columns'")
    return Comparison(
        columns=list(data["columns"]),
        config_rows=[(row["key"], list(row["values"])) for row in data.get("config", [])],
        metric_rows=[(row["key"], [_decode_cell(v) for v in row["values"]])
                     for row in data.get("metrics", [])],
        agg=data.get("agg", "last"),
        by_group=bool(data.get("by_group", False)),
        members=[list(m) for m in data.get("members", [])],
        labels=list(data.get("labels", [])),
        unders=list(data.get("unders", [])),
        counts=list(data.get("counts", [])),
    )


def render_rich(comparison: Comparison, digits: int = 4):
    """A rich Table: config rows, then a section of metric rows (the best value per row in bold
    when there are several columns); None shown as "—"."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", show_lines=False)
    table.add_column(Text("group" if comparison.by_group else "run"), style="cyan", no_wrap=True)
    for label, under in comparison.headers():
        table.add_column(Text(printable(label) + (f"\n{printable(under)}" if under else "")), justify="right")
    for key, values in comparison.config_rows:
        table.add_row(Text(printable(key)), *(Text(printable(_config_text(v, _MISSING))) for v in values))
    if comparison.metric_rows:
        table.add_section()
        table.add_row(Text(f"metrics ({comparison.agg})", style="bold"),
                      *(Text("") for _ in comparison.columns))
    for key, values in comparison.metric_rows:
        best = None
        if len(values) > 1 and (key in HIGHER_IS_BETTER or key in LOWER_IS_BETTER):
            numbers = [v.mean if isinstance(v, MeanStd) else v for v in values]
            numbers = [float("nan") if v is None else float(v) for v in numbers]
            best = _best_index(numbers, key in HIGHER_IS_BETTER)
        cells = [Text(format_cell(v, digits, of=comparison.count(i)), style="bold green" if i == best else "")
                 for i, v in enumerate(values)]
        table.add_row(Text(printable(metric_label(key))), *cells)
    return table


# ---------------------------------------------------------------------------------------------
# Export of whole records (`kdtui runs export`)
# ---------------------------------------------------------------------------------------------

_RUN_FIELDS = ("id", "label", "name", "status", "group_hash", "spec_hash", "created", "tags", "note")
# What a person reads (`kdtui runs export` without --all-keys): short ids, the group's short hash,
# ISO times, and only the settings that differ between the runs.
_READABLE_FIELDS = ("id", "label", "name", "status", "tags", "note", "group", "created")


def iso_time(value: Any) -> Any:
    """Seconds since the epoch as local ISO time with its offset (`2026-12-03T14:02:07+00:00`);
    anything else (an ISO text of the first records, None) as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        from datetime import datetime

        return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds")
    return value


def _short_ids(records: Sequence[dict]) -> list[str]:
    """Each run's short id, or its whole id where two of these runs share the short one."""
    ids = [str(r.get("id")) for r in records]
    shorts = [short_id(i) for i in ids]
    return [s if shorts.count(s) == 1 else i for s, i in zip(shorts, ids)]


def run_table(records: Sequence[dict], all_keys: bool = True) -> tuple[list[str], list[list[Any]]]:
    """Header and one row per run: run fields, flattened spec keys, environment (`env.*`), final
    metrics. The CSV and Markdown exports, and the notebook API's `frame()` (kdtui.api).

    `all_keys=False` is the table a person reads: short ids, `group` (the group hash's first 8
    characters), `created` as ISO time, and only the spec and environment keys whose values differ
    between the runs."""
    flats = [flatten_spec(r.get("spec")) for r in records]
    spec_keys = _keys_in_order(flats)
    envs = [flatten_environment(r) for r in records]
    env_keys = _keys_in_order(envs)
    if not all_keys:
        spec_keys = [k for k in spec_keys if not _all_equal([flat.get(k) for flat in flats])]
        env_keys = [k for k in env_keys if not _all_equal([env.get(k) for env in envs])]
    run_fields = _RUN_FIELDS if all_keys else _READABLE_FIELDS
    metric_names: set[str] = set()
    for record in records:
        metric_names.update((record.get("metrics") or {}).keys())
    ordered = [m for m in METRICS if m in metric_names] + sorted(metric_names - set(METRICS))
    taken = set(run_fields) | set(spec_keys) | set(env_keys)
    metric_columns = [f"metrics.{m}" if m in taken else m for m in ordered]
    header = [*run_fields, *spec_keys, *env_keys, *metric_columns]
    labels = run_labels(records)  # what sets each run apart (`τ=1`), as the compare headers say it
    rows = []
    for record, flat, env, short in zip(records, flats, envs, _short_ids(records)):
        metrics = record.get("metrics") or {}
        fields = {**record, "label": labels.get(str(record.get("id"))),
                  "tags": " ".join(map(str, record.get("tags") or ())) or None}
        if not all_keys:
            fields.update(id=short, group=(record.get("group_hash") or "")[:8] or None,
                          created=iso_time(record.get("created")))
        rows.append([*(fields.get(f) for f in run_fields), *(flat.get(k) for k in spec_keys),
                     *(env.get(k) for k in env_keys), *(metrics.get(m) for m in ordered)])
    return header, rows


def _plain_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def export_runs(records: Sequence[dict], fmt: str, ascii_json: bool = False, all_keys: bool = True) -> str:
    """Runs for `kdtui runs export --format csv|json|md`.

    json: the full records (history included) as a JSON list; `import_runs_json` reads it back
    equal. csv: one row per run with id, label (what sets the run apart, `τ=1`), name, status,
    group_hash, spec_hash, created, tags, note, the flattened spec and the final metrics (empty
    cell for None); `all_keys=False`, the readable table of `run_table`. md: the same as a
    GitHub table. Text is escaped in csv and md (`printable`); `ascii_json`
    writes JSON's non-ASCII characters as escapes (for a terminal, where a raw control or
    bidirectional character would act instead of being shown).
    """
    fmt = (fmt or "").lower()
    if fmt == "markdown":
        fmt = "md"
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    records = list(records)
    if fmt == "json":
        return json.dumps(records, indent=2, ensure_ascii=ascii_json, default=str) + "\n"
    header, rows = run_table(records, all_keys)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_plain_text(csv_safe(v)) for v in row] for row in rows])
        return out.getvalue()
    md_rows = [[format_cell(v, 4) if isinstance(v, float) else
                (_MISSING if v is None else _plain_text(v)) for v in row] for row in rows]
    return md_table(header, md_rows)


def import_runs_json(text: str) -> list[dict]:
    """The records `export_runs(records, "json")` wrote (a single record object is accepted too)."""
    data = json.loads(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) and "id" in r for r in data):
        raise ValueError("not a kdtui runs export: expected a JSON list of run records with 'id'")
    return data
