"""Probe heatmaps from ``probes.csv`` rows: position x attribute at the last layer (paper Figure 5
style, values in cells), layer x token position per attribute, and Q-probe accuracy per attribute.
Cells where the attribute is already in the text at that position (copying, not recall) are
hatched. Under the probe's own cells each heatmap shows what it has to beat: the majority class and
the controls (shuffled labels, a randomly initialised model) the rows carry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, MultipleLocator  # noqa: E402

from biolab.data.people import ATTRIBUTES  # noqa: E402
from biolab.io import save_figure  # noqa: E402

SHORT = {"birth_date": "bdate", "birth_city": "bcity", "university": "univ", "major": "major",
         "company": "cname", "company_city": "ccity"}  # fmt: skip
MIN_ROWS = 20  # token positions that fewer test entries reach are left blank: too noisy
TASK_TITLE = {"first": "first-token", "whole": "whole-attribute"}
CONTROLS = ("shuffled", "random_init")
BASELINE_LABEL = {
    "majority": "majority class",
    "shuffled": "shuffled labels",
    "random_init": "random-init model",
}
CMAP = "viridis"
HATCH_NOTE = "attribute already in the text at this position (copying, not recall)"


def _select(rows, **where):
    return [r for r in rows if all(str(r[k]) == str(v) for k, v in where.items())]


def position_matrix(rows, task: str, layer: int | None = None, control: str = "none"):
    """[6 special positions, 6 attributes] test accuracy (nan: no such task) and seen fraction."""
    rows = [
        r for r in rows if r["position_kind"] == "special" and r["task"] == task and r["control"] == control
    ]
    if not rows:
        return None, None
    layer = max(int(r["layer"]) for r in rows) if layer is None else layer
    acc = np.full((6, len(ATTRIBUTES)), np.nan)
    seen = np.zeros_like(acc)
    for r in _select(rows, layer=layer):
        k, a = int(r["position"][1:]), ATTRIBUTES.index(r["attribute"])
        acc[k, a], seen[k, a] = float(r["test_acc"]), float(r["seen"])
    return acc, seen


def baselines(rows, columns, key, layer: int) -> list[tuple[str, np.ndarray]]:
    """(label, percent per column) for the majority class and each control present at ``layer``.

    ``key(row)`` names a row's column. The majority is a property of the test labels, the same at
    every position, so its mean is taken; a control is summarised by its best cell, since one that
    reaches a level anywhere shows the probe alone can get that far without the model's knowledge."""
    out = []
    at_layer = _select(rows, layer=layer)
    for name, control, field, reduce in (
        ("majority", "none", "majority", np.mean),
        *((c, c, "test_acc", np.max) for c in CONTROLS),
    ):
        values: dict = {}
        for r in _select(at_layer, control=control):
            values.setdefault(key(r), []).append(float(r[field]) * 100)
        if not values:
            continue
        several = any(len(v) > 1 for v in values.values())
        label = f"{BASELINE_LABEL[name]} (max)" if several and name != "majority" else BASELINE_LABEL[name]
        out.append((label, np.array([reduce(values[c]) if c in values else np.nan for c in columns])))
    return out


def _annotated(ax, mat, xlabels, ylabels, hatch=None, vmax=100.0, fontsize=8):
    """A heatmap with its values written in; nan cells are blank."""
    im = ax.imshow(mat, cmap=CMAP, vmin=0, vmax=vmax, aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isnan(mat[i, j]):
                continue
            ax.text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if mat[i, j] < 0.6 * vmax else "black")  # fmt: skip
            if hatch is not None and hatch[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", lw=0, alpha=0.4))
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.tick_params(length=0)
    return im


def _grid(n_panels: int, rows: int, n_base: int, width: float):
    """Axes for ``n_panels`` heatmaps of ``rows`` rows, each with an axes of ``n_base`` baseline rows
    under it (None when there are none): the baselines sit apart, not as rows of the probe's own."""
    height = 0.42 * (rows + n_base) + 1.9
    if not n_base:
        fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False,
                                 layout="constrained")  # fmt: skip
        return fig, axes[0], [None] * n_panels
    fig, axes = plt.subplots(2, n_panels, figsize=(width * n_panels, height), squeeze=False, sharex="col",
                             height_ratios=[rows, n_base], layout="constrained")  # fmt: skip
    return fig, axes[0], axes[1]


def _draw(ax, base_ax, mat, base, xlabels, ylabels, hatch=None):
    """The probe's heatmap on ``ax``, its baselines on ``base_ax``; the x labels go on the lower one."""
    im = _annotated(ax, mat, xlabels, ylabels, hatch)
    if base_ax is not None:
        _annotated(base_ax, np.vstack([v for _, v in base]), xlabels, [lab for lab, _ in base])
        ax.tick_params(labelbottom=False)
    return im


def _caption(fig, text: str, hatch: bool = False) -> None:
    """The figure's notes under it, after the hatch key when cells are hatched: one legend, so the
    layout makes room for it (a free text would overlap whatever the layout puts at the bottom)."""
    width = int(fig.get_figwidth() * 16)  # characters of 8 pt text per inch, about; wrapped by hand
    handles = [Patch(facecolor="none", edgecolor="0.4", hatch="//")] if hatch else []
    labels = [HATCH_NOTE] if hatch else []
    if text:
        handles.append(Patch(facecolor="none", edgecolor="none"))
        labels.append(textwrap.fill(text, width))
    if not handles:
        return
    legend = fig.legend(
        handles, labels, loc="outside lower left", fontsize=8, frameon=False, handlelength=1.6
    )
    for t in legend.get_texts()[len(labels) - (1 if text else 0) :]:
        t.set_color("0.25")


def plot_positions(rows, path: str | Path, title: str = "") -> Path | None:
    """Paper Figure 5 / 13 style: P-probe test accuracy (%) at the last layer, per special position,
    with the majority class and the controls' best cells under it."""
    panels = [(t, *position_matrix(rows, t)) for t in ("first", "whole")]
    panels = [p for p in panels if p[1] is not None]
    if not panels:
        return None
    special = [r for r in rows if r["position_kind"] == "special"]
    layer = max(int(r["layer"]) for r in special if r["control"] == "none")
    base_by_task = {
        t: baselines(_select(special, task=t), ATTRIBUTES, lambda r: r["attribute"], layer)
        for t, *_ in panels
    }
    n_base = max(len(b) for b in base_by_task.values())
    fig, axes, base_axes = _grid(len(panels), 6, n_base, 5.6)
    for i, (ax, base_ax, (task, acc, seen)) in enumerate(zip(axes, base_axes, panels, strict=True)):
        xlabels = [SHORT[a] for a in ATTRIBUTES]
        im = _draw(ax, base_ax, acc * 100, base_by_task[task], xlabels, [f"pos {k}" for k in range(6)],
                   seen > 0.99)  # fmt: skip
        ax.set_title(f"{TASK_TITLE[task]} (test acc %)")
        (base_ax if base_ax is not None else ax).set_xlabel("attribute")
        if i == 0:
            ax.set_ylabel("special position k\n(before the k-th attribute)")
            if base_ax is not None:
                base_ax.set_ylabel("baselines")
    fig.colorbar(im, ax=[*axes, *(a for a in base_axes if a is not None)], shrink=0.8, label="test acc %")
    fig.suptitle(
        f"{title}: P-probe at the last layer (layer {layer})" if title else "P-probe at the last layer"
    )
    notes = []
    if n_base:
        notes.append("Baselines: the majority class (always answering the most common value) and, where "
                     "run, each control's best cell over the six positions (shuffled labels; the same probe "
                     "on a randomly initialised model).")  # fmt: skip
    if any(np.isnan(acc).all(axis=0).any() for _, acc, _ in panels):
        notes.append("A blank column: no such task (birth date has a first-token task only).")
    _caption(fig, " ".join(notes), hatch=any((seen > 0.99).any() for *_, seen in panels))
    return save_figure(fig, path, bbox_inches="tight")


def _tick_step(n: int, most: int = 12) -> int:
    """The smallest of 1, 2, 4, 8, 16, ... that keeps ``n`` positions under ``most`` labels."""
    step = 1
    while n / step > most:
        step *= 2
    return step


def plot_layers(rows, path: str | Path, task: str = "first", title: str = "") -> Path | None:
    """Layer x token position test accuracy, one panel per attribute (p_fast's token sweep)."""
    rows = [r for r in rows if r["position_kind"] == "token" and r["task"] == task]
    probe = _select(rows, control="none")
    if not probe:
        return None
    attrs = [a for a in ATTRIBUTES if _select(probe, attribute=a)]
    n_layers = max(int(r["layer"]) for r in probe) + 1
    n_pos = max(int(r["position"]) for r in probe) + 1
    panel_h = max(1.1, 0.13 * n_layers + 0.5)
    fig, axes = plt.subplots(
        len(attrs), 1, figsize=(max(8, min(n_pos * 0.09, 16)), panel_h * len(attrs) + 1.6),
        squeeze=False, sharex=True, layout="constrained",
    )  # fmt: skip
    blanked = []  # the first token position each attribute leaves blank for too few entries
    for ax, a in zip(axes[:, 0], attrs, strict=True):
        mat = np.full((n_layers, n_pos), np.nan)
        short = np.zeros(n_pos, dtype=bool)
        seen = np.full(n_pos, np.nan)
        majority = []
        for r in _select(probe, attribute=a):
            p = int(r["position"])
            if int(r["n"]) >= MIN_ROWS:
                mat[int(r["layer"]), p] = float(r["test_acc"]) * 100
                seen[p] = float(r["seen"])
                majority.append(float(r["majority"]) * 100)
            else:
                short[p] = True
        if short.any():
            blanked.append(int(np.argmax(short)))
        im = ax.imshow(
            mat, cmap=CMAP, vmin=0, vmax=100, aspect="auto", origin="lower", interpolation="nearest"
        )
        # where half the entries already show the attribute: right of it a probe may read the text
        half = np.flatnonzero(seen >= 0.5)
        if half.size:
            ax.axvline(half[0] - 0.5, color="white", ls="--", lw=1)
        ax.set_ylabel(f"{SHORT[a]}\nlayer", fontsize=9)
        ax.yaxis.set_major_locator(FixedLocator(range(0, n_layers, _tick_step(n_layers, 5))))
        best = np.nanmax(mat) if np.isfinite(mat).any() else np.nan
        note = (
            f"majority {np.mean(majority):.0f}%\nbest {best:.0f}%"
            if majority
            else f"every position\n< {MIN_ROWS} entries"
        )
        ax.text(1.01, 0.5, note, transform=ax.transAxes, ha="left", va="center", fontsize=8)
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(MultipleLocator(_tick_step(n_pos)))
    bottom.xaxis.set_minor_locator(MultipleLocator(max(1, _tick_step(n_pos) // 2)))
    bottom.set_xlim(-0.5, n_pos - 0.5)
    bottom.set_xlabel("token position from the start of the bio entry")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.6, label="test acc %", pad=0.03)
    fig.suptitle(title or f"{TASK_TITLE[task]} P-probe by layer and position")
    notes = ["Layer 0 is the token embedding. Dashed line: from here on, half the entries already show "
             "the attribute in the text (copying, not recall)."]  # fmt: skip
    if blanked:
        notes.append(
            f"Blank from position ~{min(blanked)}: fewer than {MIN_ROWS} test entries are that long, "
            "so no probe is fitted there."
        )
    _caption(fig, " ".join(notes))
    return save_figure(fig, path, bbox_inches="tight")


def plot_query(rows, path: str | Path, title: str = "", paper: dict | None = None) -> Path | None:
    """Q-probe test accuracy (%) per attribute and layer, at the end token (or the name's end), with
    the majority class, the controls at the last layer and ``paper``'s rows below: label ->
    {(attribute, task): percent}, e.g. the paper's numbers and its majority baseline."""
    rows = [r for r in rows if r["position_kind"] == "query"]
    if not _select(rows, control="none"):
        return None
    position = "end" if _select(rows, position="end", control="none") else "name_last"
    rows = _select(rows, position=position)
    probe = _select(rows, control="none")
    layers = sorted({int(r["layer"]) for r in probe})
    cols = [(a, t) for a in ATTRIBUTES for t in ("first", "whole") if _select(probe, attribute=a, task=t)]
    mat = np.full((len(layers), len(cols)), np.nan)
    for r in probe:
        mat[layers.index(int(r["layer"])), cols.index((r["attribute"], r["task"]))] = (
            float(r["test_acc"]) * 100
        )
    base = baselines(rows, cols, lambda r: (r["attribute"], r["task"]), layers[-1])
    for label, values in (paper or {}).items():
        base.append((label, np.array([values.get(c, np.nan) for c in cols], dtype=float)))
    fig, (ax,), (base_ax,) = _grid(1, len(layers), len(base), 0.9 * len(cols) + 3)
    xlabels = [f"{SHORT[a]}\n{t}" for a, t in cols]
    im = _draw(ax, base_ax, mat, base, xlabels, [f"layer {ly}" for ly in layers])
    fig.colorbar(im, ax=[a for a in (ax, base_ax) if a is not None], shrink=0.8, label="test acc %")
    where = "the end token after the name" if position == "end" else "the name's last token"
    ax.set_title(f"{title or 'Q-probe'}: the name alone, state at {where}")
    caption = "Layer 0 is the token embedding."
    if base:
        caption += (f" Below, at the last layer (layer {layers[-1]}): the majority class and the controls "
                    "(shuffled labels; the same probe on a randomly initialised model) the rows carry"
                    + (", then the paper's numbers (blank: not reported)." if paper else "."))  # fmt: skip
    _caption(fig, caption)
    return save_figure(fig, path, bbox_inches="tight")


def plot_probe_run(rows, out: str | Path) -> list[Path]:
    """Every figure the rows support, into ``out``."""
    out = Path(out)
    title = f"{rows[0]['data']}" if rows else ""
    made = [
        plot_positions(rows, out / "positions.png", title),
        plot_layers(rows, out / "layers_first.png", "first", f"{title}: first-token P-probe"),
        plot_layers(rows, out / "layers_whole.png", "whole", f"{title}: whole-attribute P-probe"),
        plot_query(rows, out / "qprobe.png", f"{title}: Q-probe"),
    ]
    return [p for p in made if p is not None]
