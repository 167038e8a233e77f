"""The report: every run's finished numbers beside the paper's, from the stage folders only.

``collect`` turns the manifests under ``ROOT/runs/`` into long rows (percents, like the paper; Part 3.2
rows come from biolab.report32);
``write_report`` writes ``report.md``, ``results.csv`` and figures into ``ROOT/report`` in one
atomic swap. A number whose stage is absent, unfinished or lost its files is kept as a row with an
empty value and a note (or, with ``strict``, stops the report): never a number from the wrong place.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.io import atomic_dir, atomic_write_text
from biolab.paper import paper_value
from biolab.runs import Run, StageMissing, eval_metrics, load_runs, probe_images, probe_rows

COLUMNS = ("experiment", "scale", "run", "data", "model", "finetune", "split", "probe", "attribute", "task",
           "metric", "position", "value", "paper_value", "paper_source", "note")  # fmt: skip
QA_KEYS = {"exact_match": "qa_exact_match", "first_token": "qa_first_token", "majority": "qa_majority"}
# our exact match / majority on P_test is the paper's qa_test_acc (its baseline row for the majority)
QA_PAPER = {"qa_exact_match": "qa_test_acc", "qa_majority": "qa_test_acc"}
# (position kind, task) -> metric (ours and the paper's) and the manifest's "paper" key naming the figure
PROBE_METRICS = {
    ("special", "first"): ("pprobe_first_token_acc", "pprobe_first"),
    ("special", "whole"): ("pprobe_whole_attribute_acc", "pprobe_whole"),
    ("query", "first"): ("qprobe_first_token_acc", "qprobe"),
    ("query", "whole"): ("qprobe_whole_attribute_acc", "qprobe"),
}
QA_ATTRIBUTES = (*ATTRIBUTES, "mean")


@dataclass
class Report:
    root: Path
    runs: list[Run]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)  # one per missing stage, shown at the top
    probe_data: dict = field(default_factory=dict)  # (run path, probe) -> probes.csv rows, for heatmaps


def _pct(x) -> float | None:
    try:
        return round(100 * float(x), 4)
    except (TypeError, ValueError):
        return None


def _lookup(run: Run, source: str | None, data: str, metric: str, attribute: str, position=None,
            method: str | None = None) -> float | None:  # fmt: skip
    if not source:
        return None
    try:
        return paper_value(source, data, metric, attribute, position, method)
    except ConfigError as err:  # a mis-wired manifest is an error, not "the paper has no number"
        raise ReportError(f"{run.path}: {err}") from None


def _row(run: Run, **kw) -> dict:
    base = {"experiment": run.experiment, "scale": run.get("scale"), "run": run.name, "data": run.data,
            "model": run.get("model"), "finetune": run.get("finetune"), "split": "", "probe": "",
            "attribute": "", "task": "", "metric": "", "position": "", "value": None, "paper_value": None,
            "paper_source": "", "note": ""}  # fmt: skip
    return {**base, **kw}


def qa_rows(run: Run, strict: bool = False, notes: list | None = None) -> list[dict]:
    """QA exact match, first-token accuracy and majority per split and attribute (percent).

    P_test exact match is what the paper reports; when it cannot be read its rows stay, flagged."""
    source, method = run.paper.get("qa"), run.paper.get("qa_method")

    def row(split, metric, attribute, value=None, note=""):
        pv = None
        if split == "test" and metric in QA_PAPER:
            data = "majority_baseline" if metric == "qa_majority" else run.data
            pv = _lookup(
                run, source, data, QA_PAPER[metric], attribute, None, method if data == run.data else None
            )
        return _row(run, split=split, attribute=attribute, metric=metric, value=value, paper_value=pv,
                    paper_source=source if pv is not None else "", note=note)  # fmt: skip

    def missing(note):
        _flag(note, strict, notes)
        return [row("test", "qa_exact_match", a, note=note) for a in QA_ATTRIBUTES]

    try:
        splits = eval_metrics(run)["splits"]
    except StageMissing as err:
        return missing(str(err))
    if not isinstance(splits.get("test"), dict):
        return missing(f"{run.name}: the eval's metrics.json has no test split")
    rows = []
    for split in ("train", "test"):  # P_train is optional (an eval of P_test only)
        for key, metric in QA_KEYS.items():
            block = (splits.get(split) or {}).get(key)
            if split != "test" and not isinstance(block, dict):
                continue
            for a in QA_ATTRIBUTES:
                value = _pct(block.get(a)) if isinstance(block, dict) else None
                note = (
                    ""
                    if value is not None
                    else f"{run.name}: the eval's metrics.json has no {split} {key} {a}"
                )
                if note:
                    _flag(note, strict, notes)
                rows.append(row(split, metric, a, value, note))
    return rows


def _flag(note: str, strict: bool, notes: list | None) -> None:
    """Stop (strict) or keep the note for the report's list of what is missing."""
    if strict:
        raise StageMissing(note)
    if notes is not None and note not in notes:
        notes.append(note)


def _last_layer(rows: list[dict]) -> dict[str, int]:
    last: dict[str, int] = {}
    for r in rows:
        if r["control"] == "none":
            last[r["position_kind"]] = max(last.get(r["position_kind"], -1), int(r["layer"]))
    return last


def probe_result_rows(run: Run, probe: str, rows: list[dict]) -> list[dict]:
    """Last-layer test accuracy at the six special positions (P) or the query's end token (Q), with
    the controls and the majority class; token positions stay in the heatmaps."""
    last = _last_layer(rows)
    query_pos = "end" if any(r["position"] == "end" for r in rows) else "name_last"
    out = []
    for r in rows:
        kind = r["position_kind"]
        if kind not in ("special", "query") or int(r["layer"]) != last.get(kind):
            continue
        if kind == "query" and r["position"] != query_pos:
            continue
        metric, paper_key = PROBE_METRICS[(kind, r["task"])]
        # the paper reads its Q-probe at the end token only; a name_last state is not its number
        source = run.paper.get(paper_key) if (kind == "special" or query_pos == "end") else None
        position = int(r["position"][1:]) if kind == "special" else None
        common = dict(split="test", probe=probe, attribute=r["attribute"], position=r["position"])
        if r["control"] == "none":
            pv = _lookup(run, source, run.data, metric, r["attribute"], position)
            out.append(_row(run, **common, metric=metric, value=_pct(r["test_acc"]), paper_value=pv,
                            paper_source=source if pv is not None else ""))  # fmt: skip
            majority = metric.replace("_acc", "_majority")
            pv = _lookup(run, source, "majority_baseline", metric, r["attribute"], position)
            out.append(_row(run, **common, metric=majority, value=_pct(r["majority"]), paper_value=pv,
                            paper_source=source if pv is not None else ""))  # fmt: skip
        else:
            out.append(_row(run, **common, metric=f"{metric}_{r['control']}", value=_pct(r["test_acc"])))
    return out


def collect(root: str | Path, experiment: str | None = None, strict: bool = False) -> Report:
    """Every run's rows; StageMissing only escapes with ``strict``."""
    runs = load_runs(root, experiment)
    report = Report(Path(root), runs, [])
    for run in runs:
        if run.has_qa:
            report.rows += qa_rows(run, strict, report.notes)
        for probe in run.probes():
            try:
                rows = probe_rows(run, probe)
            except StageMissing as err:
                _flag(str(err), strict, report.notes)
                report.rows.append(_row(run, split="test", probe=probe, metric="probe", note=str(err)))
                continue
            report.probe_data[(run.path, probe)] = rows
            report.rows += probe_result_rows(run, probe, rows)
    from biolab.report32 import collect32

    report.rows += collect32(runs, strict, report.notes)  # memorization, tasks, the paper's statements
    return report


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in COLUMNS})
    return buf.getvalue()


def spearman(x, y) -> float:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _out_dir(root: Path, out: str | Path | None) -> Path:
    out = Path(out) if out else root / "report"
    # the whole folder is swapped in: refuse to replace anything that is not an earlier report
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise ConfigError(f"out={out} exists and is not an earlier report (no report.md); choose another out")
    return out


def write_report(root: str | Path, experiment: str | None = None, out: str | Path | None = None,
                 strict: bool = False) -> Path:  # fmt: skip
    """``report.md``, ``results.csv`` and ``figures/`` into ``out`` (default ROOT/report); returns
    the path of report.md."""
    return build_report(root, experiment, out, strict)[0]


def build_report(root: str | Path, experiment: str | None = None, out: str | Path | None = None,
                 strict: bool = False) -> tuple[Path, Report]:  # fmt: skip
    """``write_report``, also returning what was collected (its notes say what is missing)."""
    from biolab.report_md import render_markdown
    from biolab.report_plots import plot_qa_vs_paper

    root = Path(root)
    out = _out_dir(root, out)
    report = collect(root, experiment, strict)
    with atomic_dir(out, overwrite=True) as tmp:
        figures: dict = {}
        for exp in sorted({r.experiment for r in report.runs}):
            path = plot_qa_vs_paper(report, exp, tmp / "figures" / exp / "qa_vs_paper.png")
            figures[exp] = path.relative_to(tmp).as_posix() if path else None
        heatmaps = _heatmaps(report, tmp)
        atomic_write_text(tmp / "results.csv", results_csv(report.rows))
        atomic_write_text(tmp / "report.md", render_markdown(report, figures, heatmaps))
    return out / "report.md", report


def _heatmaps(report: Report, tmp: Path) -> dict:
    """(run path, probe) -> heatmap paths relative to the report: the probe stage's own files, or
    drawn here from its probes.csv when it kept none."""
    from biolab.probe.plots import plot_probe_run

    made = {}
    for run in report.runs:
        for probe in run.probes():
            rows = report.probe_data.get((run.path, probe))
            if rows is None:
                continue
            dest = tmp / "figures" / run.experiment / run.name / probe
            images = probe_images(run, probe)
            if images:
                dest.mkdir(parents=True, exist_ok=True)
                paths = [Path(shutil.copyfile(p, dest / p.name)) for p in images]
            else:
                paths = plot_probe_run(rows, dest)
            made[(run.path, probe)] = [p.relative_to(tmp).as_posix() for p in paths]
    return made


def run_labels(runs: list[Run]) -> dict[Path, str]:
    """The dataset name, or ``data (run)`` when an experiment has several runs of one dataset."""
    seen: dict[tuple, int] = {}
    for run in runs:
        seen[(run.experiment, run.data)] = seen.get((run.experiment, run.data), 0) + 1
    return {r.path: r.data if seen[(r.experiment, r.data)] == 1 else f"{r.data} ({r.name})" for r in runs}


def find(rows: list[dict], **where) -> dict | None:
    """The first row matching ``where`` (None if absent)."""
    hits = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return hits[0] if hits else None


def qa_means(report: Report, experiment: str) -> list[dict]:
    """Per run of ``experiment``: label, P_train and P_test mean exact match, the paper's, diff."""
    labels = run_labels(report.runs)
    out = []
    for run in report.runs:
        if run.experiment != experiment or not run.has_qa:
            continue
        mine = [r for r in report.rows if r["run"] == run.name and r["experiment"] == experiment]
        test = find(mine, split="test", metric="qa_exact_match", attribute="mean") or {}
        train = find(mine, split="train", metric="qa_exact_match", attribute="mean") or {}
        ours, paper = test.get("value"), test.get("paper_value")
        diff = None if ours is None or paper is None else round(ours - paper, 4)
        out.append({
            "label": labels[run.path], "run": run.name, "data": run.data, "model": run.get("model"),
            "finetune": run.get("finetune"), "qa_ratio": run.get("qa_ratio"), "train": train.get("value"),
            "test": ours, "paper": paper, "diff": diff,
            "paper_source": test.get("paper_source", ""), "note": test.get("note", ""),
        })  # fmt: skip
    return out
