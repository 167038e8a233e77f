"""Part 3.3 in the report: one record per model and precision (``capacity.csv``: everything an outside
script needs to recompute R from p1, p2, N and P), a table of the models, the peak capacity ratio per
(dataset, N, exposures) beside the paper's laws, and bits learned against parameters on log axes
with the 2 and 1 bit/param lines and the paper's digitised Figure 1(a) knees."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from biolab.io import save_figure  # noqa: E402
from biolab.paper import capacity_reference  # noqa: E402
from biolab.report.rows import FORMAT_ERRORS, md_table, unreadable  # noqa: E402
from biolab.stages.capacity import CAPACITY_COLUMNS  # noqa: E402

LAW_COLORS = {1000: "0.15", 100: "0.55"}  # greys: the series take the colour cycle
UNSET = "unset"  # exposures of a model trained for train.steps, not for train.exposures


def capacity_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CAPACITY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                    for k in CAPACITY_COLUMNS})  # fmt: skip
    return buf.getvalue()


def family(model) -> str:
    """A model's family: its name up to the first "-" (``gpt2-2-2``, ``llama-2-2``: the sweeps name models
    ``<family>-<layers>-<heads>``), so that each architecture is a series of its own."""
    return str(model).split("-", 1)[0]


def _series(rec: dict) -> tuple:
    return rec["data"], rec["N"], rec["exposures_asked"], family(rec["model"]), rec.get("setting") or ""


def with_setting(records: list[dict], head: list[str], lines: list[list[str]], keys: list) -> tuple:
    """``head`` and ``lines`` with a last ``setting`` column (each line's from ``keys``) when any run
    has one (junk data, a domain token); as they were otherwise."""
    if not any(r.get("setting") for r in records):
        return head, lines
    return [*head, "setting"], [[*line, k or ""] for line, k in zip(lines, keys, strict=True)]


def exposures_text(e) -> str:
    """Exposures as a table shows them: ``unset`` for a model trained for train.steps."""
    if e is None:
        return UNSET
    return f"{e:g}" if isinstance(e, int | float) else str(e)


def model_table(records: list[dict]) -> str:
    """Per model: size, exposures, bits learned of the dataset's, R and R_max, R after int8 / int4; a
    model whose record cannot be formatted is a row saying ``missing`` and why."""
    by_run: dict[str, dict] = {}
    for r in records:
        by_run.setdefault(r["run"], {})[r["quant"]] = r
    head = ["data", "N", "exposures", "model", "P", "bits (of the data's)", "R", "R_max", "R int8", "R int4"]
    models = sorted(by_run.values(), key=_model_order)
    lines = [_model_line(q, len(head)) for q in models]
    return md_table(*with_setting(records, head, lines, [_fp32(q).get("setting") for q in models]))


def _fp32(quants: dict) -> dict:
    """The full-precision record of a model (another one where a stage wrote none)."""
    return quants.get("fp32") or next(iter(quants.values()))


def _model_order(quants: dict) -> tuple:
    f = _fp32(quants)
    p = f.get("P")
    return (*map(str, _series(f)), p if isinstance(p, int | float) else -1)


def _model_line(quants: dict, width: int) -> list[str]:
    f = _fp32(quants)
    try:
        qr = [f"{quants[q]['R']:.3f}" if q in quants else "" for q in ("int8", "int4")]
        return [f["data"], str(f["N"]), exposures_text(f["exposures"]), str(f["model"]), f"{f['P']:,}",
                f"{f['bits']:,.0f} ({f['R_max'] * f['P']:,.0f})", f"{f['R']:.3f}", f"{f['R_max']:.2f}",
                *qr]  # fmt: skip
    except FORMAT_ERRORS as err:
        lead = [str(f.get("data")), str(f.get("N")), exposures_text(f.get("exposures")), str(f.get("model"))]
        return _missing_line(lead, err, width)


def _missing_line(lead: list[str], err: BaseException, width: int) -> list[str]:
    """A table line whose numbers could not be formatted: what names it, then why, padded to ``width``."""
    return [*lead, unreadable(err), *[""] * (width - len(lead) - 1)]


def peak_table(records: list[dict]) -> str:
    """Per (data, N, exposures, model family): the model at the peak capacity ratio, beside the paper's
    law for that many exposures (2 bit/param at 1000, 1 at 100; Part 3.3 Results 1 and 4), and the
    same after int8 and int4 rounding of that model."""
    laws = {r["exposures"]: r["value"] for r in capacity_reference() if r["kind"] == "law"}
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(_series(r), []).append(r)
    head = ["data", "N", "exposures", "family", "models", "peak R (model)", "paper's law", "R int8", "R int4",
            "share of the data's bits at the peak"]  # fmt: skip
    lines, keys = [], []
    for key in sorted(groups, key=lambda k: tuple(map(str, k))):
        fp = [r for r in groups[key] if r["quant"] == "fp32"]
        if fp:
            lines.append(_peak_line(key, fp, groups[key], laws, len(head)))
            keys.append(key[4])
    return md_table(*with_setting(records, head, lines, keys))


def _peak_line(key: tuple, fp: list[dict], group: list[dict], laws: dict, width: int) -> list[str]:
    lead = [str(key[0]), str(key[1]), exposures_text(key[2]), key[3], str(len(fp))]
    try:
        best = max(fp, key=lambda r: r["R"])
        same = {r["quant"]: r for r in group if r["run"] == best["run"]}
        law = laws.get(key[2])
        qr = [f"{same[q]['R']:.3f}" if q in same else "" for q in ("int8", "int4")]
        return [*lead, f"{best['R']:.3f} ({best['model']})", "n/a" if law is None else f">= {law:g}", *qr,
                f"{best['bits'] / (best['R_max'] * best['P']):.0%}"]  # fmt: skip
    except FORMAT_ERRORS as err:
        return _missing_line(lead, err, width)


def plot_capacity(records: list[dict], path: str | Path) -> Path | None:
    """Bits learned against P (log-log), a line per (data, N, exposures, model family), the 2P and 1P
    laws, each series' total knowledge dotted, and the paper's digitised knees (plateau / peak R, plateau)."""
    fp = [r for r in records if r["quant"] == "fp32" and r["bits"] > 0]
    if not fp:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    groups: dict[tuple, list[dict]] = {}
    for r in fp:
        groups.setdefault(_series(r), []).append(r)
    for (data, n, e, fam, setting), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        rs = sorted(rs, key=lambda r: r["P"])
        label = f"{data} N={n}, {exposures_text(e)} exp., {fam}" + (f", {setting}" if setting else "")
        line = ax.plot([r["P"] for r in rs], [r["bits"] for r in rs], "o-", label=label)[0]
        total = max(r["R_max"] * r["P"] for r in rs)
        ax.axhline(total, color=line.get_color(), ls=":", lw=1)
    ref = capacity_reference()
    peaks = {r["N"]: r["value"] for r in ref if r["kind"] == "peak_R"}
    knees = [
        (b["value"] / peaks[b["N"]], b["value"])
        for b in ref
        if b["kind"] == "plateau_bits" and b["N"] in peaks
    ]
    if knees:
        ax.plot(
            *zip(*knees, strict=True), "k^", ms=5, label="paper Fig 1(a) knees (digitised, bioS 1000 exp.)"
        )
    lo = min(min(r["P"] for r in fp), min(k[0] for k in knees) if knees else float("inf")) / 2
    hi = max(max(r["P"] for r in fp), max(k[0] for k in knees) if knees else 0) * 2
    for law in (r for r in ref if r["kind"] == "law"):
        ax.plot([lo, hi], [law["value"] * lo, law["value"] * hi], "--", lw=1,
                color=LAW_COLORS.get(law["exposures"], "gray"),
                label=f"{law['value']:g} bit/param ({law['exposures']} exp., paper)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="parameters P (embedding rows the data uses)",
           ylabel="bits of knowledge learned", title="Knowledge capacity (Part 3.3 Fig 1)")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
