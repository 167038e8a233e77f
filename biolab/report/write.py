"""``ROOT/report``: report.md, results.csv, capacity.csv (Part 3.3 runs) and figures (the QA bars, each
pretraining's curves, the probe heatmaps, the capacity plot), written in one atomic swap."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from biolab.errors import ConfigError
from biolab.io import atomic_dir, atomic_write_text
from biolab.probe.plots import plot_probe_run
from biolab.report.capacity import capacity_csv, plot_capacity
from biolab.report.collect import collect
from biolab.report.markdown import render_markdown
from biolab.report.plots import plot_qa_vs_paper
from biolab.report.rows import FORMAT_ERRORS, Report, unreadable
from biolab.stages.manifest import StageMissing, check_stage
from biolab.stages.probe import probe_images
from biolab.stages.rows import COLUMNS, flag
from biolab.train.curves import plot_training, read_metrics


def results_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    return buf.getvalue()


def _out_dir(root: Path, out: str | Path | None) -> Path:
    out = Path(out) if out else root / "report"
    # the whole folder is swapped in: refuse to replace anything that is not an earlier report
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise ConfigError(f"out={out} exists and is not an earlier report (no report.md); choose another out")
    return out


def write_report(root: str | Path, experiments: str | list[str] | None = None, out: str | Path | None = None,
                 strict: bool = False) -> Path:  # fmt: skip
    """``report.md``, ``results.csv`` and ``figures/`` into ``out`` (default ROOT/report); returns
    the path of report.md."""
    return build_report(root, experiments, out, strict)[0]


def build_report(root: str | Path, experiments: str | list[str] | None = None, out: str | Path | None = None,
                 strict: bool = False) -> tuple[Path, Report]:  # fmt: skip
    """``write_report``, also returning what was collected (its notes say what is missing)."""
    root = Path(root)
    out = _out_dir(root, out)
    report = collect(root, experiments, strict)
    with atomic_dir(out, overwrite=True) as tmp:
        figures: dict = {}
        for exp in sorted({r.experiment for r in report.runs}):
            path = drawn(report, f"{exp}: the QA figure", plot_qa_vs_paper, report, exp,
                         tmp / "figures" / exp / "qa_vs_paper.png")  # fmt: skip
            figures[exp] = path.relative_to(tmp).as_posix() if path else None
        heatmaps = drawn(report, "the probe heatmaps", _heatmaps, report, tmp) or {}
        curves = drawn(report, "the training curves", training_curves, report, tmp) or {}
        capacity = {}
        if report.capacity:
            atomic_write_text(tmp / "capacity.csv", capacity_csv(report.capacity))
            for exp in sorted({r["experiment"] for r in report.capacity}):
                mine = [r for r in report.capacity if r["experiment"] == exp]
                path = drawn(report, f"{exp}: the capacity figure", plot_capacity, mine,
                             tmp / "figures" / exp / "capacity.png")  # fmt: skip
                capacity[exp] = path.relative_to(tmp).as_posix() if path else None
        atomic_write_text(tmp / "results.csv", results_csv(report.rows))
        atomic_write_text(tmp / "report.md", render_markdown(report, figures, heatmaps, curves, capacity))
    return out / "report.md", report


def drawn(report: Report, what: str, draw, *args):
    """``draw(*args)``, or None with a note when a stage's numbers cannot be drawn: the report is
    written without that figure rather than not at all."""
    try:
        return draw(*args)
    except FORMAT_ERRORS as err:
        flag(f"{what} could not be drawn: {unreadable(err)}", False, report.notes)
        return None


def _heatmaps(report: Report, tmp: Path) -> dict:
    """(run path, probe) -> heatmap paths relative to the report: the probe stage's own files, or
    drawn here from its probes.csv when it kept none."""
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


def training_curves(report: Report, tmp: Path) -> dict:
    """Run path -> its pretraining's curves (loss, BIO first-token accuracy) relative to the report,
    drawn from the stage's metrics.jsonl once per folder and experiment; none for a pretraining that
    is not done (its numbers are flagged already) or logged no loss."""
    made: dict = {}
    drawn: dict = {}
    for run in report.runs:
        rel = run.stage("pretrain")
        try:
            folder = check_stage(run, rel, "pretrain")
        except StageMissing:
            continue
        key = (run.experiment, folder)
        if key not in drawn:
            try:
                logged = any("loss" in r for r in read_metrics(folder))
            except (OSError, ValueError):  # a half-written log draws nothing rather than stop the report
                logged = False
            out = tmp / "figures" / run.experiment / run.name / "training.png"
            drawn[key] = plot_training(folder, out).relative_to(tmp).as_posix() if logged else None
        if drawn[key]:
            made[run.path] = drawn[key]
    return made
