# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ours vs the paper: the report's tables
# The tables of `scripts/report.py`, built in memory from a stage root (`BIOLAB_ROOT`, default
# `runs/`) and the paper's numbers shipped in `biolab/data/paper_numbers.csv`. Percents; diff =
# ours - paper; `missing` marks a number whose stage is absent or unfinished (listed first).

# %%
import os
import tempfile
from pathlib import Path

from IPython.display import Image, Markdown, display

from biolab.paper import paper_numbers
from biolab.report.collect import collect
from biolab.report.markdown import (
    PROBE_TABLES,
    md_table,
    probe_table,
    qa_attribute_table,
    qa_mean_table,
    spearman_line,
)
from biolab.report.plots import plot_qa_vs_paper
from biolab.report.rows import qa_means

# the demo's root, from the repository (or from notebooks/, where Jupyter starts the kernel)
ROOT = Path(
    os.environ.get("BIOLAB_ROOT") or next((p for p in ("runs", "../runs") if Path(p).is_dir()), "runs")
)
report = collect(ROOT)
experiments = sorted({r.experiment for r in report.runs})
print(f"{len(report.runs)} runs in {', '.join(experiments)}; {len(report.rows)} numbers")
for note in report.notes:
    print("missing:", note)

# %% [markdown]
# ## QA exact match per experiment, mean and per attribute

# %%
figs = Path(tempfile.mkdtemp(prefix="paper_tables-"))
for exp in experiments:
    display(Markdown(f"### {exp}\n\n{qa_mean_table(report, exp)}\n\n{spearman_line(report, exp)}"))
    path = plot_qa_vs_paper(report, exp, figs / f"{exp}.png")
    if path:
        display(Image(filename=str(path)))
    display(Markdown(qa_attribute_table(report, exp)))

# %% [markdown]
# ## Probes: position s0 (P) and the name alone (Q), last layer

# %%
for exp in experiments:
    for metric, position, title in PROBE_TABLES:
        table = probe_table(report, exp, metric, position)
        if table:
            display(Markdown(f"### {exp}: {title}\n\n{table}"))

# %% [markdown]
# ## The paper's Figure 3 (left) for all 16 bioS datasets, with ours where we have a run

# %%
FIG3 = "P3.1 Fig 3 left (= Fig 7 left)"
ours: dict[str, list[str]] = {}
for exp in experiments:
    for m in qa_means(report, exp):
        if m["paper_source"] == FIG3 and m["test"] is not None:
            ours.setdefault(m["data"], []).append(f"{m['test']:.1f} ({exp})")
paper = [r for r in paper_numbers() if r["figure"] == FIG3 and r["attribute"] == "mean"]
display(
    Markdown(
        md_table(
            ["data", "paper", "ours"],
            [[r["data"], f"{r['value']:.1f}", ", ".join(ours.get(r["data"], []))] for r in paper],
        )
    )
)
