"""The paper's claims in miniature: the tiny presets of E7, E5, E10 and E12, measured.

Each experiment runs through the real CLI (`kdtui run SPEC --workspace W --json`, one process per
experiment, so teachers come from the workspace's teacher store), with 3 seeds. The script then prints,
per experiment, the measured mean ± std per setting beside the paper's qualitative claim and a
one-line reading of whether the tiny numbers show the same shape, and writes each experiment's report
(figures, results.md) into the workspace. The total time is printed at the end.

    python bench/paper_tiny.py                     # a fresh workspace under /tmp (kept; path printed)
    python bench/paper_tiny.py --workspace DIR     # or a given one
    python bench/paper_tiny.py --smoke             # 1 epoch, 1 seed: checks the script works
    python bench/paper_tiny.py --only e7,e12a
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w  # noqa: E402

from kdtui.core.presets import get_preset  # noqa: E402
from sweep_runner import run_spec  # noqa: E402
from kdtui.core.registry import RunStore, record_with_history  # noqa: E402
from kdtui.analysis.compare import mean_std  # noqa: E402
from kdtui.analysis.report import Setting, build_report, group_settings  # noqa: E402
from kdtui.core.workspace import Workspace  # noqa: E402

EXPERIMENTS = ("e7", "e5", "e10", "e12a")
CLAIMS = {
    "e7": "agreement rises with lambda and jumps somewhere between low and high lambda; "
          "lambda = 1 stays at about 100%",
    "e5": "train agreement falls as the augmentation gets heavier",
    "e10": "agreement grows with the ensemble size (and temperature 4 is best overall)",
    "e12a": "the independent student agrees with the teacher less than the distilled one",
}
COLUMNS = ("test_agreement", "train_agreement", "train_agreement_eval", "test_acc")


def bench_spec(preset_id: str, seeds: int, smoke: bool) -> dict:
    """The tiny preset's spec as a dict, with `seeds` seeds; with smoke, 1 epoch for everyone."""
    data = tomllib.loads(get_preset(preset_id).text("tiny"))
    data["sweep"]["seed"] = list(range(seeds))
    if smoke:
        data["teacher"]["epochs"] = 1
        data["student"]["epochs"] = 1
    return data


def run_experiment(preset_id: str, ws: Path, spec_dir: Path, seeds: int, smoke: bool) -> tuple[list[dict], float]:
    path = spec_dir / f"{preset_id}.toml"
    path.write_text(tomli_w.dumps(bench_spec(preset_id, seeds, smoke)))
    records, elapsed = run_spec(path, ws, what=f"{preset_id}: kdtui run")
    failed = [r for r in records if r.get("status") != "done"]
    if failed:
        print(f"  warning: {len(failed)} of {len(records)} runs did not finish: "
              f"{failed[0].get('id')}: {failed[0].get('error')}", file=sys.stderr)
    return [r for r in records if r.get("status") == "done"], elapsed


def _stat(setting: Setting, metric: str):
    """Counted by distinct seed, as the report counts them."""
    return mean_std([(r.get("metrics") or {}).get(metric) for r in setting.records],
                    seeds=[(r.get("spec") or {}).get("seed") for r in setting.records])


def _cell(setting: Setting, metric: str) -> str:
    stat = _stat(setting, metric)
    if stat is None:
        return "missing"
    return f"{stat.mean:.4f}" if stat.std is None else f"{stat.mean:.4f} ± {stat.std:.4f} (n={stat.n})"


def _mean(setting: Setting, metric: str) -> float | None:
    stat = _stat(setting, metric)
    return None if stat is None else stat.mean


def print_table(settings: list[Setting], extra: tuple[str, ...] = ()) -> None:
    columns = COLUMNS + extra
    labels = [s.label for s in settings]
    width = max([len("setting")] + [len(label) for label in labels])
    print(f"  {'setting':<{width}}  {'n':>2}  " + "  ".join(f"{c:>22}" for c in columns))
    for setting, label in zip(settings, labels):
        print(f"  {label:<{width}}  {len(setting.records):>2}  "
              + "  ".join(f"{_cell(setting, c):>22}" for c in columns))


def _trend(values: list[float]) -> tuple[int, int]:
    """(rises, falls) between consecutive values."""
    steps = [b - a for a, b in zip(values, values[1:])]
    return sum(d > 0 for d in steps), sum(d < 0 for d in steps)


def reading(preset_id: str, settings: list[Setting], keys: list[str]) -> str:
    """One line: does the tiny result have the paper's shape?"""
    if preset_id == "e7":
        pairs = sorted((s.values["student.init_lambda"], _mean(s, "train_agreement")) for s in settings)
        pairs = [(lam, v) for lam, v in pairs if v is not None]
        if len(pairs) < 2:
            return "not enough runs"
        values = [v for _, v in pairs]
        rises, falls = _trend(values)
        jump_at = max(range(len(values) - 1), key=lambda i: values[i + 1] - values[i])
        jump = values[jump_at + 1] - values[jump_at]
        at_one = dict(pairs).get(1.0)
        return (f"train agreement rises in {rises} of {len(values) - 1} steps of lambda; the largest jump "
                f"(+{jump:.3f}) is from lambda = {pairs[jump_at][0]:g} to {pairs[jump_at + 1][0]:g}; "
                f"at lambda = 1: {'missing' if at_one is None else f'{at_one:.4f}'}"
                + ("" if at_one is None else (" (about 100%)" if at_one >= 0.99 else " (below 99%)")))
    if preset_id == "e5":
        values = [_mean(s, "train_agreement") for s in settings]   # in sweep order: light -> heavy
        values = [v for v in values if v is not None]
        if len(values) < 2:
            return "not enough runs"
        rises, falls = _trend(values)
        verdict = "same shape" if values[-1] < values[0] and falls >= rises else "not the paper's shape"
        return (f"train agreement falls in {falls} of {len(values) - 1} steps towards heavier augmentation "
                f"({values[0]:.4f} -> {values[-1]:.4f}): {verdict}")
    if preset_id == "e10":
        by_members: dict[int, list[float]] = {}
        by_temperature: dict[float, list[float]] = {}
        for s in settings:
            v = _mean(s, "test_agreement")
            if v is None:
                continue
            by_members.setdefault(s.values["teacher.members"], []).append(v)
            by_temperature.setdefault(s.values["distill.temperature"], []).append(v)
        if not by_members:
            return "not enough runs"
        m_means = {m: sum(vs) / len(vs) for m, vs in sorted(by_members.items())}
        t_means = {t: sum(vs) / len(vs) for t, vs in sorted(by_temperature.items())}
        values = list(m_means.values())
        rises, _ = _trend(values)
        best_t = max(t_means, key=t_means.get)
        return ("test agreement by ensemble size (mean over temperatures): "
                + ", ".join(f"m={m}: {v:.4f}" for m, v in m_means.items())
                + f" ({'grows' if rises == len(values) - 1 else 'does not grow throughout'}); "
                + f"best temperature (mean over m): {best_t:g}")
    if preset_id == "e12a":
        parts, less = [], 0
        for s in settings:
            distilled, independent = _mean(s, "test_agreement"), _mean(s, "independent_test_agreement")
            if independent is None:
                parts.append(f"{s.label}: independent missing")
                continue
            less += independent < distilled
            parts.append(f"{s.label}: distilled {distilled:.4f} vs independent {independent:.4f}")
        return "; ".join(parts) + f" -> independent lower in {less} of {len(settings)} settings"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="workspace folder (default: a new one under /tmp, kept)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default 3)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch and 1 seed: check that the script works")
    parser.add_argument("--only", default="", help="comma-separated subset of " + ",".join(EXPERIMENTS))
    parser.add_argument("--no-report", action="store_true", help="skip writing the reports")
    args = parser.parse_args(argv)

    chosen = [e.strip().lower() for e in args.only.split(",") if e.strip()] or list(EXPERIMENTS)
    unknown = [e for e in chosen if e not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    seeds = 1 if args.smoke else args.seeds
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="kdtui-paper-tiny-"))
    ws.mkdir(parents=True, exist_ok=True)
    spec_dir = Path(tempfile.mkdtemp(prefix="kdtui-paper-tiny-specs-"))
    print(f"workspace: {ws}   seeds: {seeds}   {'SMOKE (1 epoch)' if args.smoke else 'tiny presets as shipped'}"
          f"   cpu threads: {os.environ.get('OMP_NUM_THREADS', 'torch default')}")

    total_start = time.perf_counter()
    for preset_id in chosen:
        preset = get_preset(preset_id)
        print(f"\n== {preset.title} [tiny] ==")
        records, elapsed = run_experiment(preset_id, ws, spec_dir, seeds, args.smoke)
        if not records:
            print("  no finished runs")
            continue
        settings, keys = group_settings(records)
        extra = ("independent_test_agreement",) if preset_id == "e12a" else ()
        print(f"  {len(records)} runs in {elapsed:.1f} s; varied: {', '.join(keys) or '-'}")
        print_table(settings, extra)
        print(f"  paper (full scale): {preset.paper_claim}")
        print(f"  expected in miniature: {CLAIMS[preset_id]}")
        print(f"  measured: {reading(preset_id, settings, keys)}")
        if not args.no_report:   # exactly this invocation's runs, even in a reused workspace
            store, workspace = RunStore(ws), Workspace(ws)
            full = [record_with_history(store, workspace, r["id"]) for r in records]
            name = preset.spec_name("tiny") + ("-smoke" if args.smoke else "")
            index = build_report(full, workspace.reports_dir / name, f"{preset.title} [tiny]")
            print(f"  report: {index}")
    shutil.rmtree(spec_dir, ignore_errors=True)
    print(f"\ntotal: {time.perf_counter() - total_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
