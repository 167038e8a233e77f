"""The Report that holds a root's rows (their columns and makers: biolab.stages.rows), and the
lookups and statistics the tables and figures share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biolab.stages.manifest import Run

# The paper's setting (P3.1 App. C): 100k people, GPT-2 with rotary, 80k steps on bioS; bioR used the
# larger model and 150k steps. A run elsewhere is compared by direction, not by level.
PAPER_PEOPLE = 100_000
PAPER_SETTING = {"bioS": ("gpt2_rotary_124m", 80_000), "bioR": ("gpt2_rotary_302m", 150_000)}
MISSING = "missing"  # ours could not be read: the notes at the top of report.md say why
# What a stage's odd file (a null, a string or a key where a number belongs) raises when its numbers are
# read or formatted: caught per row, table or figure so that one stage never costs the whole report.
FORMAT_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError)


@dataclass
class Report:
    root: Path
    runs: list[Run]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)  # one per missing stage, shown at the top
    probe_data: dict = field(default_factory=dict)  # (run path, probe) -> probes.csv rows, for heatmaps
    probe_families: dict = field(default_factory=dict)  # (run path, probe) -> p | q | None (unknown)
    settings: dict = field(default_factory=dict)  # run path -> people, steps, model, overrides (run_setting)
    provenance: dict = field(default_factory=dict)  # run path -> its stages' status.json facts
    capacity: list = field(default_factory=list)  # Part 3.3: a record per model and precision (capacity.csv)


def unreadable(err: BaseException) -> str:
    """The cell of a row or table that could not be formatted: ``missing`` and why, on one line."""
    why = " ".join(str(err).split())
    text = f"{type(err).__name__}: {why}" if why else type(err).__name__
    return f"{MISSING} ({text})".replace("|", "/")  # a markdown cell holds no pipe


def md_table(header: list, rows: list[list]) -> str:
    """A markdown table: the header row, the rule, one line per row (cells as str)."""
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
            "train_row": train, "test_row": test,  # their n and intervals
        })  # fmt: skip
    return out


def paper_gaps(setting: dict, data: str) -> list[str]:
    """How a run's setting differs from the paper's (people, model, pretraining steps); an unknown
    fact counts as a difference, since the comparison cannot be shown to be like for like."""
    model, steps = PAPER_SETTING["bioR" if data.startswith("bioR") else "bioS"]
    gaps = []
    people, celebrities = setting.get("people"), setting.get("celebrities")
    if celebrities:  # Result 6: the paper adds as many celebrities as it has minority people
        minority = None if people is None else people - celebrities
        if (minority, celebrities) != (PAPER_PEOPLE, PAPER_PEOPLE):
            gaps.append(f"{number(minority)} minority people + {number(celebrities)} celebrities "
                        f"(paper: {PAPER_PEOPLE:,} + {PAPER_PEOPLE:,})")  # fmt: skip
    elif people != PAPER_PEOPLE:
        gaps.append(f"{number(people)} people (paper: {PAPER_PEOPLE:,})")
    if setting.get("model") != model:
        gaps.append(f"model {setting.get('model') or '?'} (paper: {model})")
    if setting.get("steps") != steps:
        gaps.append(f"{number(setting.get('steps'))} pretraining steps (paper: {steps:,})")
    return gaps


def number(n) -> str:
    """A count with thousands separators, ``?`` when it could not be read."""
    return "?" if n is None else f"{n:,}"


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
