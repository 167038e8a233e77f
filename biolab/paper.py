"""The paper's reported numbers (Part 3.1, percents) and statements (Part 3.2) as package data, and
the lookups the report uses.

``biolab/data/paper_numbers.csv`` is long format: figure, data, model, method, metric, attribute,
position, value. ``figure`` is what a run manifest names as its paper source (e.g. "P3.1 Fig 3 left
(= Fig 7 left)"); ``method`` separates rows that share a figure (Figure 10's QAr sweep).
``biolab/data/paper_statements.tsv`` holds findings stated in words (near-zero inverse search, CoT
helps only when the hint is written at test time), some with one number; a manifest lists their
keys under ``paper.statements``.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path

from biolab.config import from_dict
from biolab.errors import ConfigError, DataFileError

PAPER_CSV = Path(__file__).resolve().parent / "data" / "paper_numbers.csv"
COLUMNS = ("figure", "data", "model", "method", "metric", "attribute", "position", "value")


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> tuple[dict, ...]:
    if not path.is_file():
        raise DataFileError(f"{path}: the paper's numbers are missing from the package")
    lines = path.read_text(encoding="utf-8").splitlines()
    skip = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    reader = csv.DictReader(lines[skip:])
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise DataFileError(f"{path}:{skip + 1}: header must be {','.join(COLUMNS)}")
    rows = []
    for row in reader:
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            raise DataFileError(
                f"{path}:{skip + reader.line_num}: value {row['value']!r} is not a number"
            ) from None
        rows.append({**row, "value": value})
    return tuple(rows)


def paper_numbers(path: str | Path = PAPER_CSV) -> list[dict]:
    """Every row, ``value`` as a float (percent), ``position`` a string ('' when none)."""
    return [dict(r) for r in _load(Path(path))]


def _figures(path: str | Path = PAPER_CSV) -> set[str]:
    return {r["figure"] for r in _load(Path(path))}


def paper_value(source: str, data: str, metric: str, attribute: str, position: int | str | None = None,
                method: str | None = None, path: str | Path = PAPER_CSV) -> float | None:  # fmt: skip
    """The paper's number for one cell, or None when the paper does not report it.

    A source or metric the file does not know is a ConfigError (a typo in a manifest must not read
    as "the paper has no number"), and so is a lookup that matches several methods without
    ``method``."""
    rows = _load(Path(path))
    if source not in _figures(path):
        raise ConfigError(f"unknown paper source {source!r}; known: {'; '.join(sorted(_figures(path)))}")
    if metric not in {r["metric"] for r in rows if r["figure"] == source}:
        known = sorted({r["metric"] for r in rows if r["figure"] == source})
        raise ConfigError(f"{source!r} has no metric {metric!r}; it has: {', '.join(known)}")
    where = "" if position is None else str(position)
    hits = [
        r for r in rows
        if r["figure"] == source and r["data"] == data and r["metric"] == metric
        and r["attribute"] == attribute and r["position"] == where and method in (None, r["method"])
    ]  # fmt: skip
    methods = sorted({r["method"] for r in hits})
    if len(methods) > 1:
        raise ConfigError(
            f"{source!r} reports {data} under several methods; pick one of: {'; '.join(methods)}"
        )
    if method is not None and not hits and method not in {r["method"] for r in rows if r["figure"] == source}:
        known = sorted({r["method"] for r in rows if r["figure"] == source})
        raise ConfigError(f"{source!r} has no method {method!r}; it has: {'; '.join(known)}")
    if len({r["value"] for r in hits}) > 1:
        raise DataFileError(
            f"{path}: conflicting values for {source}, {data}, {metric}, {attribute}, {where}"
        )
    return hits[0]["value"] if hits else None


STATEMENTS_TSV = Path(__file__).resolve().parent / "data" / "paper_statements.tsv"
STATEMENT_COLUMNS = ("key", "source", "task", "metric", "value", "statement")


@functools.lru_cache(maxsize=4)
def _load_statements(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise DataFileError(f"{path}: the paper's statements are missing from the package")
    lines = [(i, line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if line and not line.startswith("#")]  # fmt: skip
    if not lines or tuple(lines[0][1].split("\t")) != STATEMENT_COLUMNS:
        raise DataFileError(f"{path}: header must be {', '.join(STATEMENT_COLUMNS)} (tab-separated)")
    out: dict[str, dict] = {}
    for i, line in lines[1:]:
        cells = line.split("\t")
        if len(cells) != len(STATEMENT_COLUMNS) or not cells[0] or not cells[1] or not cells[5]:
            n = len(STATEMENT_COLUMNS)
            raise DataFileError(f"{path}:{i}: expected {n} fields with key, source and statement set")
        row = dict(zip(STATEMENT_COLUMNS, cells, strict=True))
        try:
            row["value"] = float(row["value"]) if row["value"] else None
        except ValueError:
            raise DataFileError(f"{path}:{i}: value {row['value']!r} is not a number") from None
        if row["value"] is not None and not (row["task"] and row["metric"]):
            raise DataFileError(f"{path}:{i}: a value needs the task and metric it is compared with")
        if row["key"] in out:
            raise DataFileError(f"{path}:{i}: duplicate key {row['key']!r}")
        out[row["key"]] = row
    return out


def paper_statements(path: str | Path = STATEMENTS_TSV) -> dict[str, dict]:
    """key -> {key, source, task, metric, value (percent or None), statement}: the paper's findings
    (Part 3.2, and Part 3.1's memorization result) that the report shows as reference rows."""
    return {k: dict(v) for k, v in _load_statements(Path(path)).items()}


SOURCE_KEYS = ("qa", "pprobe_first", "pprobe_whole", "qprobe")  # the manifest keys naming a figure


def check_sources(paper: dict | None, path: str | Path = PAPER_CSV) -> None:
    """Each figure a config's ``paper`` block names must be in the file: a typo fails at plan time, not
    in the report after the runs."""
    named = {k: (paper or {}).get(k) for k in SOURCE_KEYS}
    bad = {k: v for k, v in named.items() if v and v not in _figures(path)}
    if bad:
        raise ConfigError(f"unknown paper source(s) {bad}; known: {'; '.join(sorted(_figures(path)))}")


def check_statements(keys, path: str | Path = STATEMENTS_TSV) -> list[str]:
    """``keys`` as a list; a key the package does not know is a ConfigError naming the known ones."""
    known = _load_statements(Path(path))
    keys = list(keys or [])
    bad = [k for k in keys if k not in known]
    if bad:
        raise ConfigError(f"unknown paper statement(s) {bad}; known: {', '.join(known)}")
    return keys


@dataclass(frozen=True)
class PaperConfig:
    """The ``paper`` section of a run: where the report finds the paper's numbers for it. Each
    source names a figure of ``paper_numbers.csv``; ``statements`` keys of ``paper_statements.tsv``."""

    qa: str | None = None
    qa_method: str | None = None
    pprobe_first: str | None = None
    pprobe_whole: str | None = None
    qprobe: str | None = None
    statements: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> PaperConfig:
        return from_dict(cls, d, "paper")

    def validate(self) -> None:
        check_sources({k: getattr(self, k) for k in SOURCE_KEYS})  # a typo fails before any work
        check_statements(self.statements)


CAPACITY_CSV = Path(__file__).resolve().parent / "data" / "capacity_reference.csv"
CAPACITY_COLUMNS = ("kind", "exposures", "N", "value", "source")


def capacity_reference(path: str | Path = CAPACITY_CSV) -> list[dict]:
    """Part 3.3's reference values (``capacity_reference.csv``): the 2 and 1 bit/param laws and the
    digitised Figure 1(a) peaks and plateaus; exposures, N (None when not one N) and value as numbers."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: the paper's capacity reference values are missing from the package")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    reader = csv.DictReader(lines)
    if tuple(reader.fieldnames or ()) != CAPACITY_COLUMNS:
        raise DataFileError(f"{path}: header must be {','.join(CAPACITY_COLUMNS)}")
    try:
        return [{**r, "exposures": int(r["exposures"]), "N": int(r["N"]) if r["N"] else None,
                 "value": float(r["value"])} for r in reader]  # fmt: skip
    except ValueError as err:
        raise DataFileError(f"{path}: {err}") from None
