"""Probe heatmaps from ``probes.csv`` rows: position x attribute at the last layer (paper Figure 5
style, values in cells), layer x token position per attribute, and Q-probe accuracy per attribute.
Cells where the attribute is already in the text at that position (copying, not recall) are
hatched."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from biolab.data.people import ATTRIBUTES  # noqa: E402

SHORT = {"birth_date": "bdate", "birth_city": "bcity", "university": "univ", "major": "major",
         "company": "cname", "company_city": "ccity"}  # fmt: skip
MIN_ROWS = 20  # token positions that fewer test entries reach are left blank: too noisy
TASK_TITLE = {"first": "first-token", "whole": "whole-attribute"}


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


def _annotated(ax, mat, xlabels, ylabels, hatch=None, vmax=100.0):
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isnan(mat[i, j]):
                continue
            ax.text(j, i, f"{mat[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if mat[i, j] < 0.6 * vmax else "black")  # fmt: skip
            if hatch is not None and hatch[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", lw=0, alpha=0.4))
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_yticks(range(len(ylabels)), ylabels)
    return im


def plot_positions(rows, path: str | Path, title: str = "") -> Path | None:
    """Paper Figure 5 / 13 style: P-probe test accuracy (%) at the last layer, per special position."""
    panels = [(t, *position_matrix(rows, t)) for t in ("first", "whole")]
    panels = [p for p in panels if p[1] is not None]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for i, (ax, (task, acc, seen)) in enumerate(zip(axes[0], panels, strict=True)):
        im = _annotated(
            ax, acc * 100, [SHORT[a] for a in ATTRIBUTES], [f"pos {k}" for k in range(6)], seen > 0.99
        )
        ax.set_title(f"{TASK_TITLE[task]} (test acc %)")
        ax.set_xlabel("attribute")
        if i == 0:
            ax.set_ylabel("special position k (before the k-th attribute)")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"{title}: P-probe at the last layer (hatched: already in the text)")
    return _save(fig, path)


def plot_layers(rows, path: str | Path, task: str = "first", title: str = "") -> Path | None:
    """Layer x token position test accuracy, one panel per attribute (p_fast's token sweep)."""
    rows = [r for r in rows if r["position_kind"] == "token" and r["task"] == task and r["control"] == "none"]
    if not rows:
        return None
    attrs = [a for a in ATTRIBUTES if _select(rows, attribute=a)]
    n_layers = max(int(r["layer"]) for r in rows) + 1
    n_pos = max(int(r["position"]) for r in rows) + 1
    fig, axes = plt.subplots(
        len(attrs), 1, figsize=(max(8, n_pos * 0.09), 1.3 * len(attrs) + 1), squeeze=False
    )
    for ax, a in zip(axes[:, 0], attrs, strict=True):
        mat = np.full((n_layers, n_pos), np.nan)
        for r in _select(rows, attribute=a):
            if int(r["n"]) >= MIN_ROWS:
                mat[int(r["layer"]), int(r["position"])] = float(r["test_acc"]) * 100
        im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=100, aspect="auto", origin="lower")
        ax.set_ylabel(f"{SHORT[a]}\nlayer")
    axes[-1, 0].set_xlabel("token position from the start of the bio entry")
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.6, label="test acc %")
    fig.suptitle(title or f"{TASK_TITLE[task]} P-probe by layer and position")
    return _save(fig, path)


def plot_query(rows, path: str | Path, title: str = "") -> Path | None:
    """Q-probe test accuracy (%) per attribute and layer, at the end token (or the name's end)."""
    rows = [r for r in rows if r["position_kind"] == "query" and r["control"] == "none"]
    if not rows:
        return None
    position = "end" if _select(rows, position="end") else "name_last"
    rows = _select(rows, position=position)
    layers = sorted({int(r["layer"]) for r in rows})
    cols = [(a, t) for a in ATTRIBUTES for t in ("first", "whole") if _select(rows, attribute=a, task=t)]
    mat = np.full((len(layers), len(cols)), np.nan)
    for r in rows:
        mat[layers.index(int(r["layer"])), cols.index((r["attribute"], r["task"]))] = (
            float(r["test_acc"]) * 100
        )
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 2, 0.6 * len(layers) + 2))
    im = _annotated(ax, mat, [f"{SHORT[a]}\n{t}" for a, t in cols], [f"layer {ly}" for ly in layers])
    fig.colorbar(im, ax=ax, shrink=0.8, label="test acc %")
    ax.set_title(title or f"Q-probe (name only, state at {position})")
    return _save(fig, path)


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


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
