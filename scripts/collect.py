"""Copy a run root's report into a small committed results folder, with its provenance.

    python scripts/collect.py ROOT results/NAME --command "python scripts/run.py ..." --wall-s 812
Copies report.md, results.csv (and capacity.csv, for Part 3.3 runs) and every report figure (PNG),
and writes provenance.json: the command, git commit, device, versions, wall time and each stage's
own seconds (from status.json).
"""

import argparse
import json
import os
import shutil
from pathlib import Path

from biolab.io import write_json
from biolab.status import device_name, git_commit, versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--command", required=True, help="the command that made ROOT")
    ap.add_argument("--wall-s", type=float, default=None, help="its wall time in seconds")
    ap.add_argument("--max-figures", type=int, default=12)
    ap.add_argument("--pattern", default="*.png", help="which report figures, e.g. positions.png")
    ap.add_argument("--flat", action="store_true", help="figures as figures__a__b.png beside the report")
    args = ap.parse_args()
    root, out = Path(args.root), Path(args.out)
    report = root / "report"
    if not (report / "report.md").is_file():
        raise SystemExit(f"error: {report}/report.md not found; run scripts/report.py root={root} first")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "results.csv"):
        shutil.copy(report / name, out / name)
    if (report / "capacity.csv").is_file():  # Part 3.3 runs
        shutil.copy(report / "capacity.csv", out / "capacity.csv")
    figures = sorted(report.rglob(args.pattern))[: args.max_figures]
    for png in figures:
        rel = png.relative_to(report / "figures") if (report / "figures") in png.parents else png.name
        target = out / ("figures__" + "__".join(Path(rel).parts) if args.flat else Path("figures") / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, target)
    stages = {}
    for status in sorted(root.glob("*/*/status.json")):
        s = json.loads(status.read_text())
        key = f"{status.parent.parent.name}/{status.parent.name}"
        stages[key] = {"status": s.get("status"), "seconds": s.get("seconds")}
    write_json(out / "provenance.json", {
        "command": args.command, "git_commit": git_commit() or os.environ.get("BIOLAB_GIT_COMMIT"),
        "device": device_name(), "wall_s": args.wall_s, "stages": stages, "versions": versions(),
    })  # fmt: skip
    print(f"{len(figures)} figures, report.md, results.csv, provenance.json -> {out}")


if __name__ == "__main__":
    main()
