"""Copy a run root's report into a small committed results folder, with its provenance.

    python scripts/collect.py ROOT results/NAME --command "python scripts/run.py ..." --wall-s 812
Copies report.md, results.csv (and capacity.csv, for Part 3.3 runs) and every report figure (PNG),
and writes provenance.json: the command, git commit, device, versions, wall time and each stage's
own seconds (from status.json) for the stages of the runs collected.

The report must cover exactly the experiments collected (--experiments, default every experiment filed
under ROOT) and be newer than their runs: scripts/run.py reports only its own experiment into
ROOT/report, so after several commands on one root the report there may hold the last one's only.
A report written elsewhere (scripts/report.py out=DIR) is read with --report DIR. OUT must be new,
or an earlier collection replaced with --replace, in one swap.
"""

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

from biolab.io import atomic_dir, write_json
from biolab.stages.manifest import load_runs
from biolab.status import device_name, git_commit, versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--command", required=True, help="the command that made ROOT")
    ap.add_argument("--wall-s", type=float, default=None, help="its wall time in seconds")
    ap.add_argument("--experiments", nargs="+", default=None, help="the experiments collected (default: all)")
    ap.add_argument("--report", default=None, help="the report folder (default ROOT/report)")
    ap.add_argument("--replace", action="store_true", help="replace OUT when it holds an earlier collection")
    ap.add_argument("--max-figures", type=int, default=12)
    ap.add_argument("--pattern", default="*.png", help="which report figures, e.g. positions.png")
    ap.add_argument("--flat", action="store_true", help="figures as figures__a__b.png beside the report")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    report = Path(args.report) if args.report else root / "report"
    try:
        folders = check_report(root, report, args.experiments)
        check_out(out, args.replace)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    with atomic_dir(out, overwrite=True) as tmp:
        for name in ("report.md", "results.csv"):
            shutil.copy(report / name, tmp / name)
        if (report / "capacity.csv").is_file():  # Part 3.3 runs
            shutil.copy(report / "capacity.csv", tmp / "capacity.csv")
        figures = sorted(report.rglob(args.pattern))[: args.max_figures]
        for png in figures:
            rel = png.relative_to(report / "figures") if (report / "figures") in png.parents else png.name
            target = tmp / ("figures__" + "__".join(Path(rel).parts) if args.flat else Path("figures") / rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, target)
        stages = {}
        for folder in sorted(folders):
            status = root / folder / "status.json"
            if status.is_file():
                s = json.loads(status.read_text())
                stages[folder] = {"status": s.get("status"), "seconds": s.get("seconds")}
        write_json(tmp / "provenance.json", {
            "command": args.command, "git_commit": git_commit() or os.environ.get("BIOLAB_GIT_COMMIT"),
            "device": device_name(), "wall_s": args.wall_s, "stages": stages, "versions": versions(),
        })  # fmt: skip
    print(f"{len(figures)} figures, report.md, results.csv, provenance.json -> {out}")


def check_report(root: Path, report: Path, experiments: list[str] | None) -> set[str]:
    """The stage folders of the runs collected, once the report is known to cover exactly their
    experiments and to be newer than every one of their manifests; else a ValueError saying what to run."""
    if not (report / "report.md").is_file() or not (report / "results.csv").is_file():
        raise ValueError(f"{report}/report.md not found; run scripts/report.py root={root} first")
    runs = load_runs(root, experiments)
    wanted = set(experiments) if experiments else {run.experiment for run in runs}
    if not wanted:
        raise ValueError(f"no runs are filed under {root}")
    with open(report / "results.csv", newline="") as f:
        covered = {row["experiment"] for row in csv.DictReader(f)}
    names = ",".join(sorted(wanted))
    redo = f"run scripts/report.py root={root} experiments=[{names}] out=DIR and pass --report DIR"
    if covered != wanted:
        missing, extra = sorted(wanted - covered), sorted(covered - wanted)
        what = "; ".join([*([f"lacks {', '.join(missing)}"] if missing else []),
                          *([f"also covers {', '.join(extra)}"] if extra else [])])  # fmt: skip
        raise ValueError(f"{report} {what}: {redo}")
    written = (report / "report.md").stat().st_mtime
    newer = [run.path for run in runs if run.path.stat().st_mtime > written]
    if newer:
        raise ValueError(f"{len(newer)} runs were filed after {report} was written (e.g. {newer[0]}): {redo}")
    return {folder for run in runs for folder in run.manifest.stages.values()}


def check_out(out: Path, replace: bool) -> None:
    """OUT is absent, empty, or (with ``replace``) an earlier collection; never anything else."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / "provenance.json").is_file():
        raise ValueError(f"{out} exists and is not a results folder of this script (no provenance.json)")
    if not replace:
        raise ValueError(f"{out} holds an earlier collection; pass --replace to replace it")


if __name__ == "__main__":
    main()
