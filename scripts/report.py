"""Collect a stage root's finished numbers beside the paper's: python scripts/report.py --help"""

import sys

from biolab.cli import hydra_main
from biolab.report.write import build_report


@hydra_main("report", renamed={"experiment": "experiments"})
def main(cfg) -> None:
    """Write report.md, results.csv and figures from the stage folders (never recomputes anything).

    python scripts/report.py root=runs                          (every experiment)
    python scripts/report.py root=runs experiments=demo out=runs/report_demo
    A missing or unfinished stage is listed at the top of report.md and its numbers are left empty
    (strict=true stops instead). Prints report.md.
    """
    md, report = build_report(cfg.root, cfg.experiments, cfg.out, cfg.strict)
    print(md.read_text(encoding="utf-8"))
    print(f"report -> {md.parent}: report.md, results.csv, figures/")
    if report.notes:
        print(
            f"warning: {len(report.notes)} missing or unfinished stage(s), listed in report.md",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
