"""The E10 tiny sweep (m in {1,3,5} x tau in {1,4,8,16}, 12 runs) with the teacher cache off and on.

    python bench/sweep.py [--repeats 1] [--student-epochs N] [--keep]

Each mode runs the preset through the real CLI (`kdtui run SPEC --workspace W --json`) in a fresh
workspace of its own, so each trains its own teachers and, with `auto`, fills its own cache. Printed per
mode: the wall time of the whole sweep, the time in student phases (summed over the runs from the
`phase_start`/`phase_end` timestamps of each run's events.jsonl) and the metric table. Then the
student-phase speed-up (off / auto; target >= 1.35x) and the largest metric difference between the
modes (target <= 0.005). With --repeats > 1 the modes alternate (off, auto, off, auto, ...) and the
medians are printed. Numbers are from a possibly shared machine: compare the ratio, not the seconds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w  # noqa: E402

from kdtui.core.presets import get_preset  # noqa: E402
from sweep_runner import run_spec  # noqa: E402

METRICS = ("test_agreement", "test_kl", "test_acc", "train_agreement")


def sweep_spec(mode: str, student_epochs: int | None) -> dict:
    data = tomllib.loads(get_preset("e10").text("tiny"))
    data["distill"]["teacher_cache"] = mode
    if student_epochs:
        data["student"]["epochs"] = student_epochs
    return data


def student_seconds(events_path: Path) -> float:
    """Time between each student phase_start and its phase_end, from the event timestamps."""
    total, started = 0.0, None
    for line in events_path.read_text().splitlines():
        event = json.loads(line)
        if event.get("phase") != "student":
            continue
        if event["type"] == "phase_start":
            started = event["t"]
        elif event["type"] == "phase_end" and started is not None:
            total += event["t"] - started
            started = None
    return total


def run_mode(mode: str, root: Path, student_epochs: int | None) -> dict:
    ws = root / f"ws-{mode}"
    spec = root / f"e10-{mode}.toml"
    spec.write_text(tomli_w.dumps(sweep_spec(mode, student_epochs)))
    records, wall = run_spec(spec, ws)
    table, student = {}, 0.0
    for record in records:
        if record.get("status") != "done":
            raise SystemExit(f"run {record.get('id')} did not finish: {record.get('error')}")
        point = tomllib.loads((ws / record["id"] / "spec.toml").read_text())
        setting = (point["teacher"]["members"], point["distill"]["temperature"])
        table[setting] = {**{k: record["metrics"][k] for k in METRICS},
                          "cache": (record.get("teacher_cache") or {}).get("hit_rate")}
        student += student_seconds(ws / record["id"] / "events.jsonl")
    return {"wall": wall, "student": student, "table": table}


def print_table(mode: str, table: dict) -> None:
    print(f"\n{mode}: m   tau  " + "  ".join(f"{k:>15s}" for k in METRICS) + "  cache hit rate")
    for (m, tau), row in sorted(table.items()):
        hit = "-" if row["cache"] is None else f"{row['cache']:.3f}"
        print(f"{'':{len(mode)}s}  {m}  {tau:4.0f}  " + "  ".join(f"{row[k]:15.4f}" for k in METRICS) + f"  {hit:>14s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--student-epochs", type=int, default=0, help="override the preset's student epochs")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces (path printed)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kdtui-bench-sweep-"))
    results: dict[str, list[dict]] = {"off": [], "auto": []}
    try:
        for r in range(args.repeats):
            for mode in ("off", "auto"):
                run_root = root / f"r{r}"
                run_root.mkdir(exist_ok=True)
                result = run_mode(mode, run_root, args.student_epochs or None)
                results[mode].append(result)
                print(f"repeat {r + 1}/{args.repeats} {mode:4s}: wall {result['wall']:6.1f} s, "
                      f"student phases {result['student']:6.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"workspaces kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for mode in ("off", "auto"):
        print_table(mode, results[mode][-1]["table"])
    wall = {m: statistics.median(x["wall"] for x in v) for m, v in results.items()}
    student = {m: statistics.median(x["student"] for x in v) for m, v in results.items()}
    speedup = statistics.median(off["student"] / auto["student"] for off, auto in zip(results["off"], results["auto"]))
    off_t, auto_t = results["off"][-1]["table"], results["auto"][-1]["table"]
    worst = max(abs(off_t[s][k] - auto_t[s][k]) for s in off_t for k in METRICS)
    print(f"\nmedian wall: off {wall['off']:.1f} s, auto {wall['auto']:.1f} s | median student phases: "
          f"off {student['off']:.1f} s, auto {student['auto']:.1f} s")
    print(f"student phases off/auto {speedup:.2f}x ({'ok' if speedup >= 1.35 else 'MISS'}, target >= 1.35x); "
          f"largest metric difference {worst:.4f} ({'ok' if worst <= 0.005 else 'MISS'}, target <= 0.005)")


if __name__ == "__main__":
    main()
