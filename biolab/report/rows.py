"""The report's rows: one long-format row per number (percents, like the paper), the Report that
holds them, and the lookups and statistics the tables and figures share.

A row that is an accuracy over a count of people, questions, items or bios carries that count ``n``
and its 95% Wilson interval (``ci_low``, ``ci_high``, percents): sampling error of the people only,
not of seeds or training runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biolab.data.people import ATTRIBUTES
from biolab.stages.manifest import Run, StageMissing

RESULT_COLUMNS = ("experiment", "scale", "run", "data", "model", "finetune", "split", "probe", "attribute",
                  "task", "metric", "position", "value", "paper_value", "paper_source", "note")  # fmt: skip
STAT_COLUMNS = ("n", "ci_low", "ci_high")
# appended after the first columns: a reader of the older results.csv finds its columns where they were
COLUMNS = (*RESULT_COLUMNS, *STAT_COLUMNS)
QA_ATTRIBUTES = (*ATTRIBUTES, "mean")
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
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


def pct(x) -> float | None:
    try:
        return round(100 * float(x), 4)
    except (TypeError, ValueError):
        return None


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` seen in ``n`` trials (fractions): unlike
    p +- z*se it stays inside [0, 1] and does not collapse to a point at 0% or 100%."""
    if n <= 0:
        raise ValueError(f"wilson needs n >= 1, got {n}")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def count(n) -> int | None:
    """A count as written (int, "50", 50.0), or None for an absent or unusable one."""
    try:
        n = int(float(n))
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n > 0 else None


def stats(value: float | None, n, interval: bool = True) -> dict:
    """``n`` and, for a percent ``value`` that is a proportion, its 95% Wilson interval (percents)."""
    n = count(n)
    if n is None or value is None or not interval:
        return {"n": n, "ci_low": None, "ci_high": None}
    low, high = wilson(min(max(value / 100, 0.0), 1.0), n)
    return {"n": n, "ci_low": pct(low), "ci_high": pct(high)}


def blank_row(**kw) -> dict:
    """A row of every column, empty (text "", numbers None) but for ``kw``."""
    numbers = ("value", "paper_value", "scale", "model", "finetune", *STAT_COLUMNS)
    return {**{c: None if c in numbers else "" for c in COLUMNS}, **kw}


def row(run: Run, **kw) -> dict:
    """A row of ``run``: its experiment, scale, name, data, model and finetune, then ``kw``."""
    own = {"experiment": run.experiment, "scale": run.get("scale"), "run": run.name, "data": run.data,
           "model": run.get("model"), "finetune": run.get("finetune")}  # fmt: skip
    return blank_row(**{**own, **kw})


def flag(note: str, strict: bool, notes: list | None) -> None:
    """Stop (strict) or keep the note for the report's list of what is missing."""
    if strict:
        raise StageMissing(note)
    if notes is not None and note not in notes:
        notes.append(note)


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
