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
import shlex
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

from biolab.cli import compose
from biolab.data.people import ATTRIBUTES
from biolab.paper import paper_value
from biolab.pipeline.plan import run_name, run_overrides
from biolab.probe.plots import SHORT, plot_layers, plot_positions, plot_query, position_matrix
from biolab.report.rows import md_table
from biolab.stages.manifest import StageMissing, load_runs
from biolab.stages.probe import probe_family, probe_rows, query_position

# the demo's root, from the repository (or from notebooks/, where Jupyter starts the kernel)
ROOT = Path(
    os.environ.get("BIOLAB_ROOT") or next((p for p in ("runs", "../runs") if Path(p).is_dir()), "runs")
)
FIGS = Path(tempfile.mkdtemp(prefix="probe_heatmaps-"))  # the plot helpers draw to files
runs = load_runs(ROOT)
probes = {}  # (run, probe) -> probes.csv rows, for every probe stage that is done
family = {}  # (run, probe) -> p (positions of a bio) or q (the name alone), from the probe's kind
for run in runs:
    for probe in run.probes():
        try:
            probes[(run, probe)] = probe_rows(run, probe)
        except StageMissing as err:
            print("skipped:", err)
        family[(run, probe)] = probe_family(run, probe, probes.get((run, probe)))
for run, probe in probes:
    print(f"{run.experiment:>12}  {run.name:<40} {probe} ({family[(run, probe)]}-probe)")

# %% [markdown]
# ## One run: position x attribute at the last layer (the paper's Figure 5), then layer x position

# %%
RUN = os.environ.get("BIOLAB_RUN") or next(r.name for r, p in probes if family[(r, p)] == "p")
p_rows = next(rows for (r, p), rows in probes.items() if r.name == RUN and family[(r, p)] == "p")
for path in (
    plot_positions(p_rows, FIGS / "positions.png", RUN),
    plot_layers(p_rows, FIGS / "layers_first.png", "first", f"{RUN}: first-token P-probe"),
):
    if path:
        display(Image(filename=str(path)))

# %% [markdown]
# ## The same run's Q-probes: the name alone, per layer
# A Q-probe sees only the person's full name (no biography) and reads the hidden state at the end
# token after it. If a linear probe recovers an attribute there, the model has stored that attribute
# on the name itself (the paper finds this for data with knowledge augmentation, Figure 7 = 16a);
# if it stays at the majority class and the controls (shuffled labels, a randomly initialised
# model), the attribute is only found later, while the biography is read. Layer 0 is the embedding.

# %%
QPROBE_FIGURE = "P3.1 Fig 7 (= Fig 16a)"  # the paper's only Q-probe figure, read at the end token
QPROBE_METRIC = {"first": "qprobe_first_token_acc", "whole": "qprobe_whole_attribute_acc"}


def q_table(run, rows):
    """Last-layer Q-probe per (attribute, task): ours, the majority class, the controls, and the
    paper's number and majority baseline where it reports this dataset; the plot's extra rows too."""
    position = query_position(rows)
    rows = [r for r in rows if r["position_kind"] == "query" and r["position"] == position]
    last = max(int(r["layer"]) for r in rows if r["control"] == "none")
    cells = {(r["attribute"], r["task"], r["control"]): r for r in rows if int(r["layer"]) == last}
    source = run.paper.get("qprobe") or QPROBE_FIGURE
    controls = sorted({c for _, _, c in cells if c != "none"})
    table, paper = [], {"paper": {}, "paper majority": {}}
    for a in ATTRIBUTES:
        for task in ("first", "whole"):
            ours = cells.get((a, task, "none"))
            if ours is None:
                continue
            pv, pm = (
                (paper_value(source, d, QPROBE_METRIC[task], a) for d in (run.data, "majority_baseline"))
                if position == "end"  # the paper's number is at the end token, not a name_last state
                else (None, None)
            )
            if pv is not None:
                paper["paper"][(a, task)], paper["paper majority"][(a, task)] = pv, pm
            table.append({
                "attribute": SHORT[a], "task": task, "n": ours.get("n"),
                "ours": 100 * float(ours["test_acc"]), "majority": 100 * float(ours["majority"]),
                **{c: 100 * float(cells[(a, task, c)]["test_acc"]) for c in controls
                   if (a, task, c) in cells},
                "paper": pv, "paper majority": pm,
            })  # fmt: skip
    return table, {k: v for k, v in paper.items() if v}, source, position, last


def dict_table(table):
    """A list of dicts as a markdown table, one column per key seen, floats to one decimal."""
    cols = list(dict.fromkeys(k for row in table for k in row))
    fmt = lambda v: "" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))  # noqa: E731
    return md_table(cols, [[fmt(row.get(c)) for c in cols] for row in table])


def q_command(run):
    """The command that gives ``run`` a Q-probe on this root, and the name the run is filed under:
    an experiment that runs q_fast now (the main job does) is rerun as it is, replacing the filed
    run; any other gets q_fast added to its probes, a new run name."""
    overrides = [o for o in run.get("overrides") or [] if not o.startswith("probes=")]
    base = [f"experiment={run.experiment}", *([f"scale={run.get('scale')}"] if run.get("scale") else []),
            *overrides]  # fmt: skip
    try:
        presets = list(compose("run", base).probes)
    except Exception:  # an experiment file renamed or gone since: name the probes outright
        presets = list(run.probes())
    extra = [] if "q_fast" in presets else [f"probes=[{','.join([*presets, 'q_fast'])}]"]
    name = run_name(run.data, run_overrides([*overrides, *extra]))
    args = [*base, f"root={ROOT}", *extra, *(["replace_runs=true"] if name == run.name else [])]
    return "python scripts/run.py " + " ".join(shlex.quote(a) for a in args), name


run = next(r for r, p in probes if r.name == RUN)
q_probe = next((p for r, p in probes if r is run and family[(r, p)] == "q"), None)
if q_probe is not None:
    table, paper, source, position, last = q_table(run, probes[(run, q_probe)])
    path = plot_query(probes[(run, q_probe)], FIGS / "qprobe.png", f"{RUN}: {q_probe}", paper=paper)
    display(Image(filename=str(path)))
    print(f"layer {last}, state at {position}; percents of P_test people")
    display(Markdown(dict_table(table)))
    if not paper:
        print(f"{source} reports no Q-probe for {run.data} (or not at the state we read): no paper column")
    else:
        print(f"paper: {source}, the paper's model and data size")
else:
    listed = [p for p in run.probes() if family[(run, p)] == "q"]
    command, name = q_command(run)
    why = f"its {listed[0]} stage is not finished" if listed else "this root ran no Q-probe stage"
    print(f"No Q-probe for {RUN}: {why}. To add one (the finished stages are reused: only q_fast runs):\n"
          f"    {command}\n"
          + ("" if run.get("overrides") is not None else
             "    plus the overrides the run was made with (its manifest predates recording them)\n")
          + "then rerun this notebook" + ("." if name == RUN else f" with BIOLAB_RUN={name}."))  # fmt: skip


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


p_runs = {r.data: (r, rows) for (r, p), rows in probes.items() if family[(r, p)] == "p"}
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
