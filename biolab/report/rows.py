"""The report's rows: one long-format row per number (percents, like the paper), the Report that
holds them, and the lookups and statistics the tables and figures share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biolab.data.people import ATTRIBUTES
from biolab.pipeline.manifest import Run, StageMissing

COLUMNS = ("experiment", "scale", "run", "data", "model", "finetune", "split", "probe", "attribute", "task",
           "metric", "position", "value", "paper_value", "paper_source", "note")  # fmt: skip
QA_ATTRIBUTES = (*ATTRIBUTES, "mean")


@dataclass
class Report:
    root: Path
    runs: list[Run]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)  # one per missing stage, shown at the top
    probe_data: dict = field(default_factory=dict)  # (run path, probe) -> probes.csv rows, for heatmaps


def pct(x) -> float | None:
    try:
        return round(100 * float(x), 4)
    except (TypeError, ValueError):
        return None


def row(run: Run, **kw) -> dict:
    base = {"experiment": run.experiment, "scale": run.get("scale"), "run": run.name, "data": run.data,
            "model": run.get("model"), "finetune": run.get("finetune"), "split": "", "probe": "",
            "attribute": "", "task": "", "metric": "", "position": "", "value": None, "paper_value": None,
            "paper_source": "", "note": ""}  # fmt: skip
    return {**base, **kw}


def flag(note: str, strict: bool, notes: list | None) -> None:
    """Stop (strict) or keep the note for the report's list of what is missing."""
    if strict:
        raise StageMissing(note)
    if notes is not None and note not in notes:
        notes.append(note)


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
