"""A report row: one long-format row per number (percents, like the paper), the vocabulary each
stage kind's reader writes its numbers in (``biolab.stages.qa.qa_rows``, ...), and what a reader
needs to fill it: percents, counts, Wilson intervals, the paper's number for a cell.

A row that is an accuracy over a count of people, questions, items or bios carries that count ``n``
and its 95% Wilson interval (``ci_low``, ``ci_high``, percents): sampling error of the people only,
not of seeds or training runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.paper import check_statements, paper_statements, paper_value
from biolab.stages.manifest import SEP, Run, StageMissing

RESULT_COLUMNS = ("experiment", "scale", "run", "data", "model", "finetune", "split", "probe", "attribute",
                  "task", "metric", "position", "value", "paper_value", "paper_source", "note")  # fmt: skip
STAT_COLUMNS = ("n", "ci_low", "ci_high")
# appended after the first columns: a reader of the older results.csv finds its columns where they were
COLUMNS = (*RESULT_COLUMNS, *STAT_COLUMNS)
QA_ATTRIBUTES = (*ATTRIBUTES, "mean")
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


@dataclass
class Readout:
    """What a stage kind's reader makes of one run's finished folders: results.csv rows, and what the
    report draws besides (probes.csv rows per probe preset for heatmaps, capacity.csv records)."""

    rows: list[dict] = field(default_factory=list)
    probes: dict[str, list[dict]] = field(default_factory=dict)
    capacity: list[dict] = field(default_factory=list)


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


def paper_lookup(run: Run, source: str | None, data: str, metric: str, attribute: str, position=None,
                 method: str | None = None) -> float | None:  # fmt: skip
    """The paper's number for a cell of ``run`` from figure/table ``source`` (None: no source, or the
    paper has no such cell); ReportError naming the manifest when the manifest names it wrongly."""
    if not source:
        return None
    try:
        return paper_value(source, data, metric, attribute, position, method)
    except ConfigError as err:  # a mis-wired manifest is an error, not "the paper has no number"
        raise ReportError(f"{run.path}: {err}") from None


def run_statements(run: Run) -> list[str]:
    """The paper statements (``biolab/data/paper_statements.tsv`` keys) the run's manifest lists."""
    try:
        return check_statements(run.paper.get("statements"))
    except ConfigError as err:  # a typo in a manifest is an error, not "the paper says nothing"
        raise ReportError(f"{run.path}: {err}") from None


def statement_value(run: Run, task: str, metric: str) -> tuple[float | None, str]:
    """(number, source) of the one statement the run lists for ``task`` and ``metric``; (None, "")
    when none gives a number, ReportError when several do."""
    known = paper_statements()
    listed = [known[k] for k in run_statements(run)]
    hits = [h for h in listed if h["task"] == task and h["metric"] == metric and h["value"] is not None]
    if len(hits) > 1:
        keys = ", ".join(h["key"] for h in hits)
        raise ReportError(f"{run.path}: paper.statements gives several numbers for {task} {metric}: {keys}")
    return (hits[0]["value"], hits[0]["source"]) if hits else (None, "")


@dataclass(frozen=True)
class Reader:
    """A stage kind's reader of the run slots named ``slot`` (``eval``, ``probe/<preset>``, ...).
    ``after_runs``: its rows follow every run's own numbers in results.csv (memorization and task
    rows, which compare runs of an experiment, come after the QA, probe and capacity rows)."""

    slot: str
    read: Callable[[Run, bool, list], Readout]
    after_runs: bool = False

    def reads(self, run: Run) -> bool:
        """Whether ``run`` names a stage this reader reads."""
        return any(k == self.slot or k.startswith(self.slot + SEP) for k in run.manifest.stages)
