"""Plot a run's training curves: python scripts/plot_run.py RUN [OUT.png] (default RUN/curves.png)."""

import sys
from pathlib import Path

from biolab.train.curves import plot_training, read_metrics

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    run = Path(sys.argv[1])
    if not read_metrics(run):
        print(f"error: {run} has no metrics.jsonl rows", file=sys.stderr)
        sys.exit(2)
    print(plot_training(run, sys.argv[2] if len(sys.argv) == 3 else run / "curves.png"))
