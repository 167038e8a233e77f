"""The emergence map (issue 30): each Part 3.1 result against the number of people N, per model,
exposures and finetune setting, from a report's results.csv, beside the paper's value at 100k.

An effect is one number per run: a P_test QA mean, or a probe's accuracy pooled over attributes at
one position (with the pooled Wilson interval: n x attributes answers taken as independent, so a
little narrow, as the report says of its QA means). The runs come from the experiments
``emergence``, ``emergence_mixed`` and ``emergence_celebrity``; their names carry the sweep's people
and exposures (``bioS_single__N300__e500__steps-100``: see biolab.pipeline.plan.sweep_variants).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from biolab.data.people import ATTRIBUTES
from biolab.io import save_figure
from biolab.report.rows import md_table
from biolab.stages.rows import pct, wilson


@dataclass(frozen=True)
class Effect:
    """What one panel of the map plots: ``metric`` rows of ``experiment`` on ``data``, averaged over
    ``attributes`` (None: the row named ``mean``) at ``position``."""

    name: str
    experiment: str
    data: str
    metric: str
    position: str = ""
    attributes: tuple[str, ...] | None = None
    split: str = "test"

    @property
    def baseline(self) -> str:
        """The metric of the majority-class answer beside ``metric``."""
        return "qa_majority" if self.metric.startswith("qa_") else self.metric.replace("_acc", "_majority")


LATER = tuple(ATTRIBUTES[1:])  # the five attributes after birth date: s0 is right before birth date
EFFECTS = (
    Effect("P_test QA, bioS_single", "emergence", "bioS_single", "qa_exact_match"),
    Effect("P_test QA, bioS_multi5_permute", "emergence", "bioS_multi5_permute", "qa_exact_match"),
    Effect(
        "P_test QA, bioS_multi5_permute_fullname",
        "emergence",
        "bioS_multi5_permute_fullname",
        "qa_exact_match",
    ),
    Effect(
        "P_test QA, mixed training QAr 0.8, bioS_single", "emergence_mixed", "bioS_single", "qa_exact_match"
    ),
    Effect(
        "minority P_test QA, bioS_single_permute1 alone",
        "emergence_celebrity",
        "bioS_single_permute1",
        "qa_exact_match",
    ),
    Effect(
        "minority P_test QA, with multi5+permute celebrities",
        "emergence_celebrity",
        "bioS_single_permute1_cel",
        "qa_exact_match",
    ),
    *(
        Effect(
            f"P-probe s0, five later attributes, {d}", "emergence", d, "pprobe_first_token_acc", "s0", LATER
        )
        for d in ("bioS_single", "bioS_multi5_permute")
    ),
    *(
        Effect(
            f"Q-probe (end token), six attributes, {d}",
            "emergence",
            d,
            "qprobe_first_token_acc",
            "end",
            tuple(ATTRIBUTES),
        )
        for d in ("bioS_single", "bioS_multi5_permute")
    ),
)
COLUMNS = (
    "effect",
    "data",
    "N",
    "exposures",
    "model",
    "finetune",
    "setting",
    "value",
    "n",
    "ci_low",
    "ci_high",
    "baseline",
    "paper_value",
)
_N, _E = re.compile(r"N(\d+)"), re.compile(r"e(\d+)")


def sweep_point(run: str, data: str) -> tuple[int | None, int | None, str]:
    """(people, exposures, the rest of the name: the finetune grid point and named overrides)."""
    parts = run[len(data) :].split("__")[1:] if run.startswith(data) else run.split("__")[1:]
    n = next((int(m[1]) for p in parts if (m := _N.fullmatch(p))), None)
    e = next((int(m[1]) for p in parts if (m := _E.fullmatch(p))), None)
    rest = [p for p in parts if not (_N.fullmatch(p) or _E.fullmatch(p))]
    return n, e, "__".join(rest)


def pretraining_setting(setting: str) -> str:
    """What of a run's setting its pretrained model depends on, for a probe, which reads that model:
    the named overrides (``data.max_values=10``), less the finetune's (``finetune=lora``) and the grid
    point (``steps-100``: grid names hold no "="), which every finetune of one pretraining shares."""
    kept = [t for t in setting.split("__") if "=" in t and not t.startswith(("finetune=", "finetune."))]
    return "__".join(kept)


def _num(x: str) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def map_rows(results: list[dict]) -> list[dict]:
    """One row per (effect, run) found in ``results`` (results.csv's rows), sorted for reading."""
    out = []
    for effect in EFFECTS:
        runs: dict[str, list[dict]] = {}
        for r in results:
            where = (r["experiment"], r["data"], r["split"], r["position"])
            if where == (effect.experiment, effect.data, effect.split, effect.position) and r["metric"] in (
                effect.metric,
                effect.baseline,
            ):
                runs.setdefault(r["run"], []).append(r)
        for run, rows in runs.items():
            value = _pooled(rows, effect, effect.metric)
            if value is None:
                continue
            baseline = _pooled(rows, effect, effect.baseline)
            n_people, exposures, setting = sweep_point(run, effect.data)
            # a models sweep names the model in the run too: the model column says it already
            setting = "__".join(t for t in setting.split("__") if t and t != rows[0]["model"])
            if effect.attributes is not None:
                setting = pretraining_setting(setting)
                if any(
                    (r["effect"], r["N"], r["exposures"], r["model"], r["setting"])
                    == (effect.name, n_people, exposures, rows[0]["model"], setting)
                    for r in out
                ):
                    continue
            out.append(
                {
                    "effect": effect.name,
                    "data": effect.data,
                    "N": n_people,
                    "exposures": exposures,
                    "model": rows[0]["model"],
                    "finetune": "" if effect.attributes is not None else rows[0]["finetune"],
                    "setting": setting,
                    **value,
                    "baseline": baseline["value"] if baseline else None,
                }
            )
    return sorted(
        out,
        key=lambda r: (
            EFFECTS.index(next(e for e in EFFECTS if e.name == r["effect"])),
            r["model"] or "",
            r["exposures"] or 0,
            r["setting"],
            r["N"] or 0,
        ),
    )


def _pooled(rows: list[dict], effect: Effect, metric: str) -> dict | None:
    """The effect's value from ``rows``: the ``mean`` row's, or the pooled mean over its attributes."""
    rows = [r for r in rows if r["metric"] == metric]
    if effect.attributes is None:
        rows = [r for r in rows if r["attribute"] == "mean"]
        if not rows:
            return None
        r = rows[0]
        return {
            "value": _num(r["value"]),
            "n": _num(r["n"]),
            "ci_low": _num(r["ci_low"]),
            "ci_high": _num(r["ci_high"]),
            "paper_value": _num(r["paper_value"]),
        }
    by_attr = {r["attribute"]: r for r in rows if r["attribute"] in effect.attributes}
    if set(by_attr) != set(effect.attributes):
        return None
    values = [_num(by_attr[a]["value"]) for a in effect.attributes]
    ns = [_num(by_attr[a]["n"]) for a in effect.attributes]
    if any(v is None for v in values) or any(not n for n in ns):
        return None
    n = int(sum(ns))
    p = sum(v / 100 * k for v, k in zip(values, ns, strict=True)) / n
    low, high = wilson(p, n)
    papers = [_num(by_attr[a]["paper_value"]) for a in effect.attributes]
    paper = sum(papers) / len(papers) if all(x is not None for x in papers) else None
    return {"value": pct(p), "n": n, "ci_low": pct(low), "ci_high": pct(high), "paper_value": paper}


def map_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS} for r in rows)
    return buf.getvalue()


def map_markdown(rows: list[dict]) -> str:
    """The map as one table per effect: a line per (model, exposures, finetune setting), N across."""
    lines = []
    for effect in EFFECTS:
        mine = [r for r in rows if r["effect"] == effect.name]
        if not mine:
            continue
        people = sorted({r["N"] for r in mine if r["N"] is not None})
        paper = next((r["paper_value"] for r in mine if r["paper_value"] is not None), None)
        lines += [
            f"### {effect.name}",
            "",
            f"paper (100k people, GPT-2 124M): {'n/a' if paper is None else f'{paper:.1f}'}; "
            "baseline: always the most common P_train value",
            "",
        ]
        table = []
        for key in _line_keys(mine):
            cells = []
            for n in people:
                hit = [r for r in mine if _line_key(r) == key and r["N"] == n]
                cells.append(_cell(hit[0]) if hit else "")
            table.append([*key, *cells])
        lines += [
            md_table(["model", "exposures", "finetune", "setting", *(f"N={n}" for n in people)], table),
            "",
        ]
    return "\n".join(lines)


def _cell(r: dict) -> str:
    ci = f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]" if r["ci_low"] is not None else ""
    base = f" (base {r['baseline']:.1f})" if r["baseline"] is not None else ""
    return f"{r['value']:.1f}{ci}{base}"


def line_styles(rows: list[dict]) -> dict[tuple, dict]:
    """A line's look, the same in every panel: its colour names the pretrained model (model,
    exposures and the named data overrides: what a probe reads), its marker and line style the
    finetune on top (kind and grid point; a probe and mixed training have none). Keyed like the map's lines:
    (model, exposures, finetune, setting) -> ``color``, ``marker``, ``linestyle``, ``pretrained``
    and ``finetuned`` (the two legend labels)."""
    labels = {k: (_pretrained_label(k), _finetuned_label(k)) for k in _line_keys(rows)}
    pretrained = sorted({p for p, _ in labels.values()})
    finetuned = sorted({f for _, f in labels.values()})
    palette = _colours(len(pretrained))
    looks = [(m, ls) for ls in ("-", "--", "-.", ":") for m in ("o", "s", "^", "D", "v", "P")]
    out = {}
    for k, (p, f) in labels.items():
        marker, linestyle = looks[finetuned.index(f) % len(looks)]
        out[k] = {"color": palette[pretrained.index(p)], "marker": marker, "linestyle": linestyle,
                  "pretrained": p, "finetuned": f}  # fmt: skip
    return out


def _line_key(r: dict) -> tuple:
    """The map's line a row belongs to: one in the table, one in a panel."""
    return r["model"], r["exposures"], r["finetune"], r["setting"]


def _line_keys(rows: list[dict]) -> list[tuple]:
    return sorted({_line_key(r) for r in rows}, key=lambda k: tuple(str(x) for x in k))


def _pretrained_label(key: tuple) -> str:
    model, exposures, _, setting = key
    named = pretraining_setting(setting)
    return " ".join(str(x) for x in (model, f"{exposures} exposures" if exposures else "", named) if x)


def _finetuned_label(key: tuple) -> str:
    _, _, finetune, setting = key
    named = pretraining_setting(setting).split("__")
    grid = [t for t in setting.split("__") if t and t not in named and not t.startswith("finetune=")]
    kind = (finetune or "").replace("finetune=", "")
    # a probe reads the pretrained model; mixed training has QA in its pretraining
    return " ".join([kind, *grid]) if kind else "no finetune (probes, mixed training)"


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_map(rows: list[dict], path: str | Path) -> Path | None:
    """A panel per effect: value against N (log), a line per (model, exposures, finetune, setting)
    with its 95% intervals, the baseline dotted, the paper's 100k value as a star at N = 100,000.
    One legend for the figure (``line_styles``): colour the pretrained model, marker the finetune."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    effects = [e for e in EFFECTS if any(r["effect"] == e.name for r in rows)]
    if not effects:
        return None
    drawn_rows = [r for r in rows if r["effect"] in {e.name for e in effects} and r["N"] is not None]
    styles = line_styles(drawn_rows)
    cols = 3
    rows_n = (len(effects) + 1 + cols - 1) // cols  # one more cell holds the legend
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax, effect in zip(axes.flat, effects, strict=False):
        mine = [r for r in drawn_rows if r["effect"] == effect.name]
        for key in _line_keys(mine):
            line = sorted((r for r in mine if _line_key(r) == key), key=lambda r: r["N"])
            xs = [r["N"] for r in line]
            ys = [r["value"] for r in line]
            # an interval that does not hold its value (a hand-made table) draws no bar on that side
            err = [
                [max(0.0, r["value"] - r["ci_low"]) if r["ci_low"] is not None else 0.0 for r in line],
                [max(0.0, r["ci_high"] - r["value"]) if r["ci_high"] is not None else 0.0 for r in line],
            ]
            look = styles[key]
            ax.errorbar(
                xs, ys, yerr=err, capsize=3, color=look["color"], marker=look["marker"],
                linestyle=look["linestyle"], markersize=4,
            )  # fmt: skip
            base = [r["baseline"] for r in line]
            if all(b is not None for b in base):
                ax.plot(xs, base, linestyle=":", color=look["color"], alpha=0.5, linewidth=1)
        paper = next((r["paper_value"] for r in mine if r["paper_value"] is not None), None)
        if paper is not None:
            ax.plot([100_000], [paper], marker="*", markersize=12, color="black", linestyle="none")
        ax.set_xscale("log")
        ax.set_ylim(-2, 102)
        ax.set_xlabel("people N")
        ax.set_ylabel("%")
        ax.set_title(effect.name, fontsize=9)
    rest = list(axes.flat)[len(effects) :]
    for ax in rest:
        ax.axis("off")
    colours = {s["pretrained"]: s["color"] for s in styles.values()}
    marks = {s["finetuned"]: (s["marker"], s["linestyle"]) for s in styles.values()}
    handles = [
        *(Line2D([], [], color=c, linewidth=3, label=label) for label, c in sorted(colours.items())),
        *(
            Line2D([], [], color="grey", marker=m, linestyle=ls, label=label)
            for label, (m, ls) in sorted(marks.items())
        ),
        Line2D([], [], color="grey", linestyle=":", alpha=0.5, label="majority baseline"),
        Line2D([], [], color="black", marker="*", markersize=12, linestyle="none", label="paper (100k)"),
    ]
    rest[0].legend(
        handles=handles, loc="upper left", fontsize=7, ncol=1 if len(handles) <= 14 else 2,
        title="colour: pretrained model; marker: finetune", title_fontsize=7,
    )  # fmt: skip
    fig.suptitle("Where each Part 3.1 result appears: ours against people N")
    fig.tight_layout()
    return save_figure(fig, path)
