"""The report's own figure: P_test QA accuracy per dataset, ours beside the paper's."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from biolab.report.rows import Report, qa_means  # noqa: E402


def plot_qa_vs_paper(report: Report, experiment: str, path: str | Path) -> Path | None:
    """Grouped bars of the mean exact match on P_test; a run we could not read is marked, not drawn as 0."""
    means = qa_means(report, experiment)
    if not means:
        return None
    x = np.arange(len(means))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(means) + 2), 4))
    ours = [m["test"] for m in means]
    paper = [m["paper"] for m in means]
    ax.bar(x - 0.2, [np.nan if v is None else v for v in ours], 0.4, label="ours", color="tab:blue")
    ax.bar(x + 0.2, [np.nan if v is None else v for v in paper], 0.4, label="paper", color="tab:gray")
    for i, (o, p) in enumerate(zip(ours, paper, strict=True)):
        for dx, v, empty in ((-0.2, o, "missing"), (0.2, p, "n/a")):
            ax.text(
                i + dx, (v or 0) + 1, empty if v is None else f"{v:.0f}", ha="center", va="bottom", fontsize=7
            )
    ax.set_xticks(x, [m["label"] for m in means], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("P_test QA exact match, mean (%)")
    ax.set_title(f"{experiment}: ours vs the paper")
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
