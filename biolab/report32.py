"""Part 3.2 rows of the report: memorization beside QA, task accuracies, the paper's statements.

Rows follow ``biolab.report.COLUMNS``; percents except the metrics named ``*_tokens`` / ``*_items``
(counts). A task row's ``attribute`` is the task (``month_parity``), its ``task`` the run label
(``month_parity-hint_prob0.5__ft``), its ``finetune`` how it was trained (the finetune preset, or
``mixed QAr=0.8``). The paper's statements (``biolab/data/paper_statements.tsv``) listed in a
manifest's ``paper.statements`` become one ``paper_statement`` row each per experiment, and a
statement with a number fills ``paper_value`` of the P_test row it names.
"""

from __future__ import annotations

from biolab.data.people import ATTRIBUTES
from biolab.errors import ConfigError, ReportError
from biolab.paper import check_statements, paper_statements
from biolab.runs import Run, StageMissing, memorization_metrics, task_metrics

TASK_METRICS = {"answer": "task_answer", "answer_with_hint": "task_answer_with_hint", "hint": "task_hint",
                "majority": "task_majority"}  # fmt: skip
VERBATIM_METRICS = {"exact": "verbatim_exact", "prefix_frac": "verbatim_prefix_frac"}


def _statements(run: Run) -> list[str]:
    try:
        return check_statements(run.paper.get("statements"))
    except ConfigError as err:  # a typo in a manifest is an error, not "the paper says nothing"
        raise ReportError(f"{run.path}: {err}") from None


def memorization_rows(run: Run, strict: bool, notes: list) -> list[dict]:
    """BIO completion per attribute and split, verbatim exact / prefix per split."""
    from biolab.report import _flag, _pct, _row

    try:
        data = memorization_metrics(run)
    except StageMissing as err:
        _flag(str(err), strict, notes)
        return [_row(run, split="test", metric="bio_completion", attribute="mean", note=str(err))]
    rows = []
    for split, block in data["bio_completion"]["splits"].items():
        for a in (*ATTRIBUTES, "name", "mean"):
            if a in block:
                value = _pct(block[a])
                rows.append(_row(run, split=split, metric="bio_completion", attribute=a, value=value))
    for split, block in data["verbatim"]["splits"].items():
        for key, metric in VERBATIM_METRICS.items():
            rows.append(_row(run, split=split, metric=metric, value=_pct(block.get(key))))
        rows.append(_row(run, split=split, metric="verbatim_prefix_tokens", value=block.get("prefix_mean")))
    return rows


def _paper_for(run: Run, task: str, metric: str) -> tuple[float | None, str]:
    known = paper_statements()
    hits = [known[k] for k in _statements(run) if known[k]["task"] == task and known[k]["metric"] == metric]
    hits = [h for h in hits if h["value"] is not None]
    if len(hits) > 1:
        keys = ", ".join(h["key"] for h in hits)
        raise ReportError(f"{run.path}: paper.statements gives several numbers for {task} {metric}: {keys}")
    return (hits[0]["value"], hits[0]["source"]) if hits else (None, "")


def task_rows(run: Run, label: str, info: dict, strict: bool, notes: list) -> list[dict]:
    """Exact match per split without and with the hint at test time, the hint itself, the majority
    answer, the share of inverse queries matching several people, and the item counts."""
    from biolab.report import _flag, _pct, _row

    task = info.get("task", label.split("__")[0])
    how = info.get("finetune") if info.get("mode") != "mixed" else f"mixed QAr={info.get('qa_ratio'):g}"

    def row(split, metric, value=None, note="", raw=False):
        pv, source = _paper_for(run, task, metric) if split == "test" else (None, "")
        value = value if raw else _pct(value)
        return _row(run, finetune=how, split=split, attribute=task, task=label, metric=metric, value=value,
                    paper_value=pv, paper_source=source, note=note)  # fmt: skip

    try:
        metrics = task_metrics(run, label)
    except StageMissing as err:
        _flag(str(err), strict, notes)
        return [row("test", "task_answer", note=str(err))]
    rows = []
    for split, block in metrics["splits"].items():
        for key, metric in TASK_METRICS.items():
            if key in block:
                rows.append(row(split, metric, block[key]))
        if split in (metrics.get("ambiguity") or {}):
            rows.append(row(split, "task_shared_queries", metrics["ambiguity"][split]["shared_frac"]))
    for split, n in (metrics.get("counts") or {}).items():
        if split in ("train", "test"):
            rows.append(row(split, "task_items", n, raw=True))
    return rows


def statement_rows(runs: list[Run]) -> list[dict]:
    """One ``paper_statement`` row per statement an experiment's manifests list, in their order."""
    known = paper_statements()
    keys: dict[str, dict[str, None]] = {}
    scales: dict[str, set] = {}
    for run in runs:
        keys.setdefault(run.experiment, {}).update(dict.fromkeys(_statements(run)))
        scales.setdefault(run.experiment, set()).add(str(run.get("scale")))
    rows = []
    for exp, listed in keys.items():
        for key in listed:
            s = known[key]
            rows.append({
                "experiment": exp, "scale": ",".join(sorted(scales[exp])), "run": "", "data": "", "model": "",
                "finetune": "", "split": "test" if s["value"] is not None else "", "probe": "",
                "attribute": key,
                "task": s["task"], "metric": "paper_statement", "position": "", "value": None,
                "paper_value": s["value"], "paper_source": s["source"], "note": s["statement"],
            })  # fmt: skip
    return rows


def collect32(runs: list[Run], strict: bool, notes: list) -> list[dict]:
    """Every Part 3.2 row of ``runs`` (none for a run without Part 3.2 stages)."""
    rows = []
    for run in runs:
        if run.manifest["stages"].get("memorization"):
            rows += memorization_rows(run, strict, notes)
        for label, info in run.tasks32().items():
            rows += task_rows(run, label, info, strict, notes)
    return rows + statement_rows(runs)
