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
# # Probe heatmaps: where a model stores each attribute
# Reads the probe stages of a stage root (`BIOLAB_ROOT`, default `runs/`, as `scripts/run.py`
# leaves it) and recomputes nothing. `BIOLAB_RUN` picks a run by its manifest's run name (default:
# the first with a P-probe); `BIOLAB_COMPARE=dataA,dataB` picks the two datasets shown side by side.

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from biolab.data.people import ATTRIBUTES
from biolab.paper import paper_value
from biolab.pipeline.manifest import StageMissing, load_runs, probe_rows
from biolab.probe.plots import SHORT, plot_layers, plot_positions, plot_query, position_matrix

# the demo's root, from the repository (or from notebooks/, where Jupyter starts the kernel)
ROOT = Path(
    os.environ.get("BIOLAB_ROOT") or next((p for p in ("runs", "../runs") if Path(p).is_dir()), "runs")
)
FIGS = Path(tempfile.mkdtemp(prefix="probe_heatmaps-"))  # the plot helpers draw to files
runs = load_runs(ROOT)
probes = {}  # (run, probe) -> probes.csv rows, for every probe stage that is done
for run in runs:
    for probe in run.probes():
        try:
            probes[(run, probe)] = probe_rows(run, probe)
        except StageMissing as err:
            print("skipped:", err)
for run, probe in probes:
    print(f"{run.experiment:>12}  {run.name:<40} {probe}")

# %% [markdown]
# ## One run: position x attribute at the last layer (the paper's Figure 5), then layer x position

# %%
RUN = os.environ.get("BIOLAB_RUN") or next(r.name for r, p in probes if p.startswith("p"))
p_rows = next(rows for (r, p), rows in probes.items() if r.name == RUN and p.startswith("p"))
for path in (
    plot_positions(p_rows, FIGS / "positions.png", RUN),
    plot_layers(p_rows, FIGS / "layers_first.png", "first", f"{RUN}: first-token P-probe"),
):
    if path:
        display(Image(filename=str(path)))

# %% [markdown]
# ## The same run's Q-probes: the name alone, per layer

# %%
q_rows = [rows for (r, p), rows in probes.items() if r.name == RUN and p.startswith("q")]
path = plot_query(q_rows[0], FIGS / "qprobe.png", f"{RUN}: Q-probe") if q_rows else None
if path:
    display(Image(filename=str(path)))
else:
    print(f"{RUN} has no finished Q-probe")


# %% [markdown]
# ## Two datasets side by side, each beside the paper (first-token P-probe, last layer)
# Blank cells: positions the paper (fixed-order data) or our probe does not report.


# %%
def paper_matrix(run, data):
    source = run.paper.get("pprobe_first")
    mat = np.full((6, len(ATTRIBUTES)), np.nan)
    for k in range(6):
        for j, a in enumerate(ATTRIBUTES):
            value = paper_value(source, data, "pprobe_first_token_acc", a, k) if source else None
            mat[k, j] = np.nan if value is None else value
    return mat


p_runs = {r.data: (r, rows) for (r, p), rows in probes.items() if p.startswith("p")}
compare = os.environ.get("BIOLAB_COMPARE")
pair = compare.split(",") if compare else list(p_runs)[:2]
fig, axes = plt.subplots(len(pair), 2, figsize=(10, 3.6 * len(pair)), squeeze=False)
for row, data in zip(axes, pair, strict=True):
    run, rows = p_runs[data]
    ours = position_matrix(rows, "first")[0] * 100
    for ax, mat, who in ((row[0], ours, "ours"), (row[1], paper_matrix(run, data), "paper")):
        ax.imshow(mat, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for (i, j), v in np.ndenumerate(mat):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < 60 else "k")
        ax.set_xticks(range(len(ATTRIBUTES)), [SHORT[a] for a in ATTRIBUTES])
        ax.set_yticks(range(6), [f"pos {k}" for k in range(6)])
        ax.set_title(f"{data}: {who}", fontsize=9)
fig.tight_layout()
fig.savefig(FIGS / "side_by_side.png", dpi=100)
plt.close(fig)
display(Image(filename=str(FIGS / "side_by_side.png")))
