"""A figure-and-table report of a set of finished runs, for a paper or a lab notebook.

`build_report(records, out_dir, title)` writes, into `out_dir`:

- one PNG per headline metric (test agreement, train agreement, clean train agreement, test accuracy,
  test KL) against the setting(s) the runs vary, as mean ± std over the distinct seeds of each
  setting (kdtui.analysis.compare.mean_std: no bar below two seeds, replicates of a seed averaged);
- `curves_train_agreement.png` / `curves_test_agreement.png`: the per-epoch curves, one line per
  setting (the mean over its seeds);
- `results.md`: mean ± std per setting of the final metrics, exactly the registry's `metrics`, with
  n the distinct seeds; a setting of one seed shows its value, runs sharing a seed are marked †;
- `index.md`, linking all of them.

A *setting* is a seed group (runs with the same `group_hash`: identical but for the seed). The varied
settings are the spec keys (`flatten_spec`) whose values differ across the records, seed and the
where/how keys (device, data root, download) aside; the caller may name them instead.

`report_for(workspace, preset=... | group=... | run_ids=...)` picks the records from a workspace and
writes to `<workspace>/reports/<name>/`.

Pure standard library plus matplotlib (imported inside the functions, no pyplot: the app may call
this from a worker thread); never torch.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kdtui.analysis.compare import MeanStd, flatten_spec, is_number, metric_series, records_mean_std, strip_seed
from kdtui.analysis.labels import differing_keys, short_key
from kdtui.analysis.markdown import md_table
from kdtui.core.events import DONE
from kdtui.core.files import atomic_output, atomic_write, check_output, check_replaceable
from kdtui.core.vocabulary import metric_label

__all__ = ["TABLE_METRICS", "OPTIONAL_METRICS", "FIGURE_SIZE_IN", "FIGURE_DPI", "Setting",
           "varied_keys", "group_settings", "build_report", "select_records", "report_for", "MATPLOTLIB_HINT"]

MATPLOTLIB_HINT = "the report draws its figures with matplotlib: pip install 'kdtui[report]'"

# results.md's columns (the metric names of docs/metrics.md), then the E12 control's when any run has them.
TABLE_METRICS: tuple[str, ...] = ("test_agreement", "train_agreement", "train_agreement_eval", "test_acc",
                                  "test_kl", "teacher_test_acc")
OPTIONAL_METRICS: tuple[str, ...] = ("independent_test_agreement", "independent_test_kl")
# One figure per metric against the varied setting.
SUMMARY_FIGURES: tuple[str, ...] = ("test_agreement", "train_agreement", "train_agreement_eval", "test_acc",
                                    "test_kl")
CURVE_FIGURES: tuple[str, ...] = ("train_agreement", "test_agreement")

FIGURE_SIZE_IN = (7.0, 4.5)
FIGURE_DPI = 120

# Spec keys that say where or how a run ran, not what it computed (they are not in group_hash).
_NOT_SETTINGS = ("seed", "device", "data.root", "data.download")

_LABELS = {
    "test_agreement": "test agreement",
    "train_agreement": "train agreement (online, augmented)",
    "train_agreement_eval": "train agreement (clean, eval mode)",
    "test_acc": "test accuracy",
    "test_kl": "test KL(teacher ‖ student) [nats]",
    "teacher_test_acc": "teacher test accuracy",
    "independent_test_agreement": "independent student's test agreement",
    "independent_test_kl": "independent student's test KL [nats]",
}
_SHORT = {"train_agreement": "train agreement", "train_agreement_eval": "clean train agreement"}

_MISSING = "—"
_FONT = 9          # ticks and legends; axis labels 10, titles 11 (all >= 9 pt at the saved size)


# ---------------------------------------------------------------------------------------------
# Settings (seed groups) and their values
# ---------------------------------------------------------------------------------------------

@dataclass
class Setting:
    """One seed group: the varied keys' values, a label, and its runs (in the given order)."""
    key: str
    values: dict[str, Any]
    records: list[dict] = field(default_factory=list)
    label: str = ""

    @property
    def seeds(self) -> list[Any]:
        return [(r.get("spec") or {}).get("seed") for r in self.records]


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


def varied_keys(records: Sequence[dict]) -> list[str]:
    """Flattened spec keys whose values differ across `records` (seed, device, data root and
    download aside), in spec order."""
    return [key for key in differing_keys(records) if key not in _NOT_SETTINGS]


def _group_key(record: dict, flat: dict) -> str:
    if record.get("group_hash"):
        return str(record["group_hash"])
    # Records without a group hash (imported): the flattened spec without seed and where/how keys.
    return repr(sorted((k, repr(v)) for k, v in flat.items() if k not in _NOT_SETTINGS))


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`distill.temperature` -> `τ`, as the app and `runs compare` label runs
    (kdtui.analysis.labels.short_key), unless two keys would share the short name."""
    shorts = [short_key(k) for k in keys]
    return {k: (name if shorts.count(name) == 1 else k) for k, name in zip(keys, shorts)}


def _show(value: Any, limit: int = 40) -> str:
    """A setting's value for a label: numbers without trailing .0, lists as written, paths shortened."""
    if value is None:
        text = _MISSING
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")] if value else []
        shown = []
        for part in parts:
            kind, sep, arg = part.partition(":")
            # A tensors file is named by its stem ("cifar100-gan-50000"); its folder says nothing.
            shown.append(Path(arg).stem if sep and kind == "tensors" else part)
        text = "+".join(shown) if shown else "none"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def group_settings(records: Sequence[dict], varied: Sequence[str] | None = None) -> tuple[list[Setting], list[str]]:
    """(settings in order of first appearance, the varied keys used)."""
    records = list(records)
    flats = [flatten_spec(r.get("spec")) for r in records]
    keys = list(varied) if varied is not None else varied_keys(records)
    short = _short_keys(keys)
    settings: dict[str, Setting] = {}
    for record, flat in zip(records, flats):
        gk = _group_key(record, flat)
        if gk not in settings:
            settings[gk] = Setting(key=gk, values={k: flat.get(k) for k in keys})
        settings[gk].records.append(record)
    out = list(settings.values())
    for s in out:
        s.label = ", ".join(f"{short[k]}={_show(s.values[k])}" for k in keys) or "all runs"
    # Two groups with the same label (a `varied` list that leaves out a differing key): add the hash.
    labels = [s.label for s in out]
    for s in out:
        if labels.count(s.label) > 1:
            s.label += f" [{s.key[:6]}]"
    return out, keys


def _final(record: dict, metric: str) -> Any:
    return (record.get("metrics") or {}).get(metric)


def _setting_stat(setting: Setting, metric: str) -> MeanStd | None:
    return records_mean_std(setting.records, lambda r: _final(r, metric))


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def _new_figure():
    from matplotlib.figure import Figure
    fig = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def _colors(n: int) -> list:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(fig, ax, handles: list, labels: list[str], title: str | None = None) -> None:
    """Few short entries: inside the axes where they cover the least data; otherwise below the axes,
    in as many columns as fit the figure's width."""
    if not handles:
        return
    longest = max(len(label) for label in labels)
    if len(handles) <= 3 and longest <= 30:
        ax.legend(handles, labels, loc="best", fontsize=_FONT, framealpha=0.85, title=title,
                  title_fontsize=_FONT)
        return
    ncols = max(1, min(len(labels), 4, int(90 // (longest + 6))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=_FONT, frameon=False,
               title=title, title_fontsize=_FONT)


def _clip_fraction(ax, metric: str) -> None:
    """Agreements and accuracies live in [0, 1]: error bars of a wide spread must not stretch the
    axis past that."""
    if metric.endswith(("agreement", "agreement_eval", "acc")):
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -0.02), min(high, 1.02))


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    import textwrap
    ax.set_title(textwrap.fill(title, 72), fontsize=11)   # 72 characters of 11 pt fit 7 inches
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.tick_params(labelsize=_FONT)
    ax.grid(True, alpha=0.3)


def _axis_plan(settings: list[Setting], keys: list[str]) -> tuple[str | None, list[str]]:
    """(the key on the x axis, the keys that split the series): the key with the most distinct values,
    numeric ones first on ties."""
    if not keys:
        return None, []

    def rank(key: str):
        values = []
        for s in settings:
            v = s.values.get(key)
            if not any(_same(v, seen) for seen in values):
                values.append(v)
        numeric = all(is_number(v) for v in values)
        return (len(values), numeric, -keys.index(key))
    x_key = max(keys, key=rank)
    return x_key, [k for k in keys if k != x_key]


def _summary_figure(path: Path, title: str, metric: str, settings: list[Setting], keys: list[str]) -> bool:
    """metric (final, mean ± std over seeds) against the x setting; one series per other setting.
    Returns False (no file) when no run has the metric."""
    if all(_setting_stat(s, metric) is None for s in settings):
        return False
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = _new_figure()
    x_key, series_keys = _axis_plan(settings, keys)
    short = _short_keys(keys)
    x_values: list[Any] = []
    for s in settings:
        v = s.values.get(x_key) if x_key else None
        if not any(_same(v, seen) for seen in x_values):
            x_values.append(v)
    numeric = x_key is not None and all(is_number(v) for v in x_values)
    series: dict[str, list[Setting]] = {}
    for s in settings:
        label = ", ".join(f"{short[k]}={_show(s.values.get(k))}" for k in series_keys)
        series.setdefault(label, []).append(s)
    colors = _colors(len(series))
    n_series = len(series)
    extra = [("independent_test_agreement", "independent student", "--")] if metric == "test_agreement" else []
    if metric == "test_acc":
        extra = [("teacher_test_acc", "teacher", ":")]
    handles, labels = [], []
    for i, (label, members) in enumerate(series.items()):
        dodge = 0.0 if numeric or n_series == 1 else (i - (n_series - 1) / 2) * min(0.1, 0.5 / n_series)

        def position(s: Setting) -> float:
            v = s.values.get(x_key) if x_key else None
            if numeric:
                return float(v)
            return next(j for j, seen in enumerate(x_values) if _same(v, seen)) + dodge

        for name, suffix, style in [(metric, "", "-")] + extra:
            points = [(position(s), _setting_stat(s, name)) for s in members]
            points = sorted((x, st) for x, st in points if st is not None)
            if not points:
                continue
            xs = [x for x, _ in points]
            # No bar for a single seed: one value has no spread (std None).
            handle = ax.errorbar(xs, [st.mean for _, st in points], yerr=[st.std or 0.0 for _, st in points],
                                 color=colors[i], marker="o" if not suffix else "s", markersize=5, capsize=3,
                                 linewidth=1.5, linestyle=style if numeric else "none",
                                 alpha=1.0 if not suffix else 0.8)
            if suffix:
                text = f"{label} ({suffix})" if label else suffix
            else:
                text = label or ("student" if extra else "mean ± std over seeds")
            handles.append(handle)
            labels.append(text)
    if numeric:
        positive = all(v > 0 for v in x_values)
        if positive and max(x_values) / min(x_values) >= 8:
            ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator([float(v) for v in x_values]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([_show(v) for v in x_values])
        pad = 0.05 * (max(x_values) - min(x_values) or 1.0)
        if ax.get_xscale() == "linear":
            ax.set_xlim(min(x_values) - pad, max(x_values) + pad)
    else:
        ax.set_xticks(range(len(x_values)))
        tick_labels = [_show(v, 36) for v in x_values]
        rotate = sum(len(t) for t in tick_labels) > 60
        ax.set_xticklabels(tick_labels, rotation=20 if rotate else 0, ha="right" if rotate else "center")
        ax.set_xlim(-0.5, len(x_values) - 0.5)
    xlabel = short.get(x_key, x_key) if x_key else "(a single setting)"
    name = _SHORT.get(metric, _LABELS.get(metric, metric))
    _style(ax, f"{title}: {name}", xlabel + ("  (mean ± std over seeds)" if x_key else ""), _LABELS.get(metric, metric))
    _clip_fraction(ax, metric)
    if len(handles) > 1:
        _legend(fig, ax, handles, labels)
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    # The temporary name ends in .tmp, so the format is named rather than guessed from it.
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, format="png")


def _mean_curve(records: Sequence[dict], metric: str) -> list[tuple[float, float]]:
    by_epoch: dict[Any, list[float]] = {}
    for record in records:
        for epoch, value in metric_series(record, metric):
            if is_number(epoch) and not math.isnan(value):
                by_epoch.setdefault(epoch, []).append(float(value))
    return [(float(e), statistics.mean(vs)) for e, vs in sorted(by_epoch.items())]


def _curve_figure(path: Path, title: str, metric: str, settings: list[Setting], keys: list[str]) -> bool:
    curves = [(s, _mean_curve(s.records, metric)) for s in settings]
    if not any(points for _, points in curves):
        return False
    fig, ax = _new_figure()
    colors = _colors(len(curves))
    # Many settings: label them by their values only, the keys once in the legend's title.
    compact = len(curves) > 6 and len(keys) > 0
    short = _short_keys(keys)
    handles, labels = [], []
    for (setting, points), color in zip(curves, colors):
        if not points:
            continue
        (handle,) = ax.plot([e for e, _ in points], [v for _, v in points], color=color, linewidth=1.5,
                            marker="o" if len(points) <= 12 else None, markersize=3)
        handles.append(handle)
        labels.append(" / ".join(_show(setting.values.get(k), 36) for k in keys) if compact else setting.label)
    name = _SHORT.get(metric, _LABELS.get(metric, metric))
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _clip_fraction(ax, metric)
    _style(ax, f"{title}: {name} per epoch (mean over seeds)", "epoch (student)", name)
    _legend(fig, ax, handles, labels, title=" / ".join(short[k] for k in keys) if compact else None)
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def _cell(stat: MeanStd | None, n: int) -> str:
    """A results cell; `(n=K)` after it when fewer seeds have this metric than the row's n says."""
    return _MISSING if stat is None else stat.format(4, of=n)


def _table_metrics(records: Sequence[dict]) -> list[str]:
    present = set()
    for record in records:
        present.update(k for k, v in (record.get("metrics") or {}).items() if is_number(v))
    return list(TABLE_METRICS) + [m for m in OPTIONAL_METRICS if m in present]


# What a group is, in the one line every report carries.
GROUP_EXPLAINED = ("A setting is a seed group: runs whose specs are the same but for the seed (one group "
                   "hash), so their spread is the seeds'.")


def _counts(records: Sequence, settings: Sequence) -> str:
    n, k = len(records), len(settings)
    return f"{n} run{'s' if n != 1 else ''} in {k} setting{'s' if k != 1 else ''}"


def _results_markdown(title: str, settings: list[Setting], keys: list[str], records: list[dict]) -> str:
    metrics = _table_metrics(records)
    short = _short_keys(keys)
    lines = [f"# {title}: results", "",
             f"{_counts(records, settings)}. {GROUP_EXPLAINED} Each cell is the mean ± sample standard "
             "deviation over the distinct seeds of one setting (n) of the runs' final metrics as the "
             "registry records them; a setting with a single seed shows its value alone. Runs that share "
             "a seed are replicates, not independent samples: averaged into their seed, marked †. n counts "
             "the seeds whose runs have metrics; a cell over fewer (a metric some runs lack) shows its own (n=K). "
             "Agreements and accuracies are fractions, KL in nats.",
             ""]
    header = [short[k] for k in keys] + ["n", "seeds"] + [metric_label(m) for m in metrics]
    rows = []
    for s in settings:
        distinct = {repr(seed) for seed in s.seeds}
        seeds = ", ".join(str(x) for x in s.seeds) + (" †" if len(distinct) < len(s.seeds) else "")
        # n: the seeds whose runs have any of the table's metrics (a run without is in no mean).
        n = len({repr((r.get("spec") or {}).get("seed")) for r in s.records
                 if any(is_number(_final(r, m)) for m in metrics)})
        rows.append([_show(s.values[k], 60) for k in keys] + [str(n), seeds]
                    + [_cell(_setting_stat(s, m), n) for m in metrics])
    lines += md_table(header, rows).splitlines()
    lines += ["", "## Runs", ""]
    run_rows = [[str(r.get("id")), str(r.get("name")), str((r.get("spec") or {}).get("seed")),
                 str(r.get("status")), (r.get("group_hash") or "")[:8]]
                + [_MISSING if not is_number(_final(r, m)) else f"{_final(r, m):.4f}"
                   for m in ("test_agreement", "train_agreement", "test_acc")]
                for s in settings for r in s.records]
    lines += md_table(["id", "name", "seed", "status", "group",
                       *map(metric_label, ("test_agreement", "train_agreement", "test_acc"))], run_rows).splitlines()
    return "\n".join(lines) + "\n"


def _fixed_settings(records: list[dict], keys: list[str]) -> list[tuple[str, Any]]:
    """A few settings every run shares, for the index's context line."""
    if not records:
        return []
    flat = flatten_spec(records[0].get("spec"))
    wanted = ("data.dataset", "teacher.model", "teacher.members", "student.model", "teacher.epochs",
              "student.epochs", "distill.temperature", "distill.augment")
    return [(k, flat[k]) for k in wanted if k in flat and k not in keys]


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

_GENERATED = ("index.md", "results.md")


def _clear_previous(out_dir: Path) -> None:
    """Remove what an earlier report wrote here (a rerun may make fewer figures). A link, FIFO,
    device or folder under one of those names is not a report's: NotARegularFile, before anything
    is removed."""
    paths = [out_dir / name for name in _GENERATED] + [out_dir / f"{metric}.png" for metric in SUMMARY_FIGURES] \
        + [out_dir / f"curves_{metric}.png" for metric in CURVE_FIGURES]
    for path in paths:
        check_replaceable(path)
    for path in paths:
        path.unlink(missing_ok=True)


def build_report(records: list[dict], out_dir: Path, title: str, varied: list[str] | None = None) -> Path:
    """Write figures, `results.md` and `index.md` for `records` (full records with `history`, as
    `record_with_history` gives them) into `out_dir`; returns the path of `index.md`.

    `varied`: the spec keys (flattened, e.g. "distill.temperature") that define the settings'
    labels and the x axis; by default the keys whose values differ across the records.
    """
    records = [r for r in records if isinstance(r, dict)]
    if not records:
        raise ValueError("no runs to report on")
    # A report folder linked into a run folder or the index would overwrite the workspace's own
    # files (OutputRefused); a link, FIFO or device in place of one file is refused where it is
    # written (kdtui.core.files).
    check_output(out_dir / "index.md")
    try:
        import matplotlib
    except ImportError:  # an extra: the light install has no plotting library
        raise ValueError(MATPLOTLIB_HINT) from None
    matplotlib.use("Agg")  # no display needed; the figures below never touch pyplot's global state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_previous(out_dir)
    settings, keys = group_settings(records, varied)

    figures: list[tuple[str, str]] = []
    for metric in SUMMARY_FIGURES:
        name = f"{metric}.png"
        if _summary_figure(out_dir / name, title, metric, settings, keys):
            figures.append((name, f"{_SHORT.get(metric, _LABELS[metric])} against the setting"))
    for metric in CURVE_FIGURES:
        name = f"curves_{metric}.png"
        if _curve_figure(out_dir / name, title, metric, settings, keys):
            figures.append((name, f"{_SHORT.get(metric, _LABELS[metric])} per epoch, one line per setting"))

    atomic_write(out_dir / "results.md", _results_markdown(title, settings, keys, records))

    short = _short_keys(keys)
    lines = [f"# {title}", "", f"{_counts(records, settings)} (mean ± std over distinct seeds). {GROUP_EXPLAINED}", ""]
    if keys:
        lines.append("Varied: " + ", ".join(f"`{k}`" for k in keys) + ".")
    fixed = _fixed_settings(records, keys)
    if fixed:
        lines.append("Fixed: " + ", ".join(f"`{k}` = {_show(v, 60)}" for k, v in fixed) + ".")
    lines += ["", "- [results.md](results.md): mean ± std per setting of the final metrics, and every run"]
    lines += [f"- [{name}]({name}): {what}" for name, what in figures]
    for name, what in figures:
        lines += ["", f"## {what[:1].upper() + what[1:]}", "", f"![{what}]({name})"]
    renamed = [f"{v} = `{k}`" for k, v in short.items() if v != k]
    if renamed:
        lines += ["", "Labels use short names: " + ", ".join(renamed) + "."]
    index = out_dir / "index.md"
    atomic_write(index, "\n".join(lines).rstrip() + "\n")
    return index


# ---------------------------------------------------------------------------------------------
# Picking runs from a workspace
# ---------------------------------------------------------------------------------------------

def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "-" for c in text).strip("-.") or "report"


def _from_preset(record: dict, preset_id: str, scale: str, spec_name: str) -> bool:
    """Whether the run was launched from this preset at this scale."""
    if "preset" in record:
        return record["preset"] == preset_id and record.get("preset_scale") == scale
    name = str(record.get("name") or "")  # an older record: by the preset spec's name
    return name == spec_name or name.startswith(spec_name + "[")


def _group_hash(store, given: str) -> str:
    """The group hash that `given` names: a prefix of a group hash, or the id (a prefix, or its
    short id) of one of the group's runs. Raises ValueError when it names no group or several."""
    from kdtui.core.registry import RegistryError

    hashes = {str(r.get("group_hash")) for r in store.find(group=given) if r.get("group_hash")}
    try:
        run_group = store.resolve(given).get("group_hash")
    except RegistryError:
        run_group = None
    if run_group:
        if hashes - {run_group}:
            raise ValueError(f"{given!r} is both run {store.resolve(given)['id']} and the start of another group's "
                             f"hash; give more characters")
        return run_group
    if not hashes:
        raise ValueError(f"no finished runs in group {given!r} (give a group hash prefix or a run id of the group)")
    if len(hashes) > 1:
        raise ValueError(f"group hash prefix {given!r} starts {len(hashes)} groups' hashes; give more characters")
    return hashes.pop()


def select_records(store, *, preset: str | None = None, scale: str | None = None, group: str | None = None,
                   run_ids: Sequence[str] | None = None) -> tuple[list[dict], str, str]:
    """(finished records, report folder name, title) for exactly one of preset / group / run_ids.

    preset: runs launched from the preset (their record's `preset` and `preset_scale`), of the given
    scale, or of the one scale that has runs. A user's own spec that shares a preset's name is not
    one of them. Records written before kdtui kept the preset (they have no `preset` field at all)
    are matched by name: the preset spec's name or one of its sweep points (`<name>[...]`).
    group: the finished runs of one seed group, named by a prefix of its hash or by a run id of it.
    run_ids: those runs (id prefixes as `kdtui runs show` takes them). Only `done` runs count.
    Raises ValueError (PresetError for a bad preset or scale, RegistryError for a bad id).
    """
    chosen = [x for x in (preset, group, run_ids) if x]
    if len(chosen) != 1:
        raise ValueError("choose the runs by exactly one of: a preset, a group hash prefix, run ids")
    if preset:
        from kdtui.core.presets import SCALES, PresetError, get_preset
        p = get_preset(preset)
        if scale is not None and scale not in SCALES:
            raise PresetError(f"unknown scale {scale!r} for preset {p.id}; known: {', '.join(SCALES)}")
        by_scale = {}
        for sc in ([scale] if scale else list(SCALES)):
            base = p.spec_name(sc)
            found = [r for r in store.all() if r.get("status") == DONE and _from_preset(r, p.id, sc, base)]
            if found:
                by_scale[sc] = (found, base)
        if not by_scale:
            where = f"scale {scale}" if scale else "either scale"
            raise ValueError(f"no finished runs of preset {p.id} ({where}) in this workspace")
        if len(by_scale) > 1:
            raise ValueError(f"this workspace has finished runs of preset {p.id} at both scales; "
                             f"choose one: {', '.join(by_scale)}")
        sc, (found, base) = next(iter(by_scale.items()))
        return store.with_details(found), base, f"{p.title} [{sc}]"
    if group:
        group_hash = _group_hash(store, group)
        found = [r for r in store.find(group=group_hash) if r.get("status") == DONE]
        if not found:
            raise ValueError(f"no finished runs in group {group!r}")
        title = f"{strip_seed(str(found[0].get('name') or '')) or 'runs'} (group {group_hash[:8]})"
        return store.with_details(found), _safe_name(f"group-{group_hash[:8]}"), title
    ids = list(run_ids or [])
    found, seen = [], set()
    for record in store.resolve_all(ids):
        if record["id"] in seen:
            continue
        seen.add(record["id"])
        if record.get("status") != DONE:
            raise ValueError(f"run {record['id']} is {record.get('status')}, not done: it has no final metrics")
        found.append(record)
    name = f"runs-{found[0]['id']}" + (f"+{len(found) - 1}" if len(found) > 1 else "")
    return found, _safe_name(name), f"{len(found)} run{'s' if len(found) != 1 else ''}"


def report_for(workspace, *, preset: str | None = None, scale: str | None = None, group: str | None = None,
               run_ids: Sequence[str] | None = None, varied: list[str] | None = None,
               on_records: Callable[[Any, list[str]], None] | None = None) -> Path:
    """Build the report of a preset's runs (optionally of one scale), a seed group, or given runs, in
    `<workspace>/reports/<name>/`; returns the path of its `index.md`. `on_records(workspace, ids)`
    is told the runs chosen before the report is built (the CLI names those whose folder is gone)."""
    from kdtui.core.registry import RunStore, record_with_history
    from kdtui.core.workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace, create=False)
    store = RunStore(ws)
    found, name, title = select_records(store, preset=preset, scale=scale, group=group, run_ids=run_ids)
    if on_records is not None:
        on_records(ws, [r["id"] for r in found])
    records = [record_with_history(store, ws, r["id"]) for r in found]
    return build_report(records, ws.reports_dir / name, title, varied=varied)
