"""The report's own figure: P_test QA exact match per dataset and attribute, ours beside the paper's,
over the majority baseline, on one colour scale."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from biolab.data.people import ATTRIBUTES  # noqa: E402
from biolab.io import save_figure  # noqa: E402
from biolab.probe.plots import SHORT  # noqa: E402
from biolab.report.rows import Report, find, paper_gaps, qa_means  # noqa: E402
from biolab.stages.rows import QA_ATTRIBUTES  # noqa: E402

MISSING = {"ours": "missing", "paper": "n/a"}  # a run we could not read; a number the paper does not give


def qa_grid(report: Report, experiment: str):
    """(row labels, [rows, attributes + mean] percents with nan where absent, which rows are ours,
    the runs' means): per run ours then the paper's, then the majority baseline, ours (the mean
    over the runs' P_test sets) then the paper's; None without a run with QA."""
    means = qa_means(report, experiment)
    if not means:
        return None
    labels, values, ours_rows = [], [], []
    majority_ours, majority_paper = [], None

    def cell(row, key):
        v = None if row is None else row.get(key)
        return np.nan if v is None else float(v)

    for m in means:
        mine = [r for r in report.rows if r["run"] == m["run"] and r["experiment"] == experiment]
        em = [find(mine, split="test", metric="qa_exact_match", attribute=a) for a in QA_ATTRIBUTES]
        maj = [find(mine, split="test", metric="qa_majority", attribute=a) for a in QA_ATTRIBUTES]
        n = (m["test_row"] or {}).get("n")
        labels += [f"{m['label']}: ours" + (f" (n={n})" if n else ""), "paper"]
        values += [[cell(r, "value") for r in em], [cell(r, "paper_value") for r in em]]
        ours_rows += [True, False]
        majority_ours.append([cell(r, "value") for r in maj])
        paper_maj = [cell(r, "paper_value") for r in maj]
        if majority_paper is None and not np.isnan(paper_maj).all():
            majority_paper = paper_maj
    mean_majority = np.array(majority_ours)
    if not np.isnan(mean_majority).all():
        with np.errstate(all="ignore"):  # an attribute no run could read stays nan
            labels.append(
                "majority baseline: ours" + (f" (mean of {len(means)} runs)" if len(means) > 1 else "")
            )
            values.append(list(np.nanmean(mean_majority, axis=0)))
        ours_rows.append(True)
    if majority_paper is not None:
        labels.append("majority baseline: paper")
        values.append(majority_paper)
        ours_rows.append(False)
    return labels, np.array(values, dtype=float), ours_rows, means


def plot_qa_vs_paper(report: Report, experiment: str, path: str | Path) -> Path | None:
    """A heatmap of P_test exact match (%): a row for ours and one for the paper's per run, the
    majority baseline under them, the six attributes and their mean as columns; a run we could not
    read says "missing", a number the paper does not give "n/a", neither is drawn as 0."""
    grid = qa_grid(report, experiment)
    if grid is None:
        return None
    labels, mat, ours_rows, means = grid
    n_rows, n_cols = mat.shape
    fig, ax = plt.subplots(figsize=(0.85 * n_cols + 4.5, 0.42 * n_rows + 2.2), layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.9")
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(mat):
        if np.isnan(v):
            text, color = MISSING["ours" if ours_rows[i] else "paper"], "0.35"
        else:
            text, color = f"{v:.0f}", "white" if v < 60 else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8 if not np.isnan(v) else 7, color=color,
                fontweight="bold" if ours_rows[i] and not np.isnan(v) else "normal")  # fmt: skip
    # white rules between the runs and before the baselines and the mean: the groups read apart
    n_runs = len(means)
    for k in range(1, n_runs + (n_rows > 2 * n_runs)):
        ax.axhline(2 * k - 0.5, color="white", lw=3)
    ax.axvline(len(ATTRIBUTES) - 0.5, color="white", lw=3)
    ax.set_xticks(range(n_cols), [SHORT[a] for a in ATTRIBUTES] + ["mean"])
    ax.set_yticks(range(n_rows), labels, fontsize=8)
    for tick, ours in zip(ax.get_yticklabels(), ours_rows, strict=True):
        tick.set_fontweight("bold" if ours else "normal")
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    fig.colorbar(im, ax=ax, shrink=0.85, label="P_test QA exact match (%)")
    ax.set_title(f"{experiment}: QA on people never asked in finetuning (P_test), ours vs the paper",
                 fontsize=10)  # fmt: skip
    caption = _caption(report, experiment, means, fig)
    blank = plt.Rectangle((0, 0), 1, 1, fc="none", ec="none")
    # a legend, not a free text: the layout makes room for it under the axes
    fig.legend([blank], [caption], loc="outside lower left", fontsize=8, frameon=False, handlelength=0,
               labelcolor="0.25")  # fmt: skip
    return save_figure(fig, path, bbox_inches="tight")


def _caption(report: Report, experiment: str, means: list[dict], fig) -> str:
    sources = sorted({m["paper_source"] for m in means if m["paper_source"]})
    parts = [
        "Exact match of the whole value; n = P_test questions of a run. Majority baseline: always "
        "answering the attribute's most common value.",
        f"Paper: {'; '.join(sources)}." if sources else "The paper gives no number for these runs.",
    ]
    paths = {r.name: r.path for r in report.runs if r.experiment == experiment}
    gaps = dict.fromkeys(
        g for m in means for g in paper_gaps(report.settings.get(paths[m["run"]], {}), m["data"])
    )
    if gaps:
        parts.append(f"Not the paper's setting ({', '.join(gaps)}): compare direction, not level.")
    return textwrap.fill(" ".join(parts), int(fig.get_figwidth() * 16))
