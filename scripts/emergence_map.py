"""The emergence map (issue 30) from a report's results.csv: python scripts/emergence_map.py --help"""

import argparse
import csv
import sys
from pathlib import Path

from biolab.io import atomic_write_text
from biolab.report.emergence import map_csv, map_markdown, map_rows, plot_map


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split(":")[0] + ".",
        epilog=(
            "python scripts/emergence_map.py results/emergence_cpu/results.csv results/emergence_cpu\n"
            "Writes OUT/emergence_map.csv, .md and .png: each Part 3.1 result against people N, per "
            "model, exposures and finetune setting, with 95%% intervals, the majority baseline and the "
            "paper's 100k value."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "results", help="a report's results.csv (scripts/report.py, or a collected results folder)"
    )
    ap.add_argument("out", help="the folder to write the map into")
    args = ap.parse_args()
    results = Path(args.results)
    if not results.is_file():
        sys.exit(f"error: results={results} is not a file (a report's results.csv)")
    with open(results, newline="", encoding="utf-8") as f:
        rows = map_rows(list(csv.DictReader(f)))
    if not rows:
        sys.exit(
            f"error: {results} holds no run of the experiments emergence, emergence_mixed or "
            "emergence_celebrity"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "emergence_map.csv", map_csv(rows))
    atomic_write_text(out / "emergence_map.md", map_markdown(rows))
    plot_map(rows, out / "emergence_map.png")
    print(map_markdown(rows))


if __name__ == "__main__":
    main()
