"""report.md sections of Part 3.2: memorization beside QA, task accuracies, the paper's statements."""

from __future__ import annotations

from biolab.paper import paper_statements
from biolab.report import Report, find, run_labels
from biolab.report_md import MISSING, NONE, fmt, md_table

SPLITS = ("train", "test")


def _cell(rows: list[dict], **where) -> str:
    hit = find(rows, **where)
    if hit is None:
        return ""  # not measured for this run (e.g. no hint for an inverse-search task)
    return MISSING if hit["note"] else fmt(hit["value"])


def memorization_table(report: Report, experiment: str) -> str | None:
    """Per dataset: BIO completion and verbatim regurgitation of the pretrained model beside QA
    exact match: "recites, does not answer" reads along a row."""
    labels = run_labels(report.runs)
    rows = []
    for run in report.runs:
        if run.experiment != experiment or not run.manifest["stages"].get("memorization"):
            continue
        mine = [r for r in report.rows if r["experiment"] == experiment and r["run"] == run.name]
        flagged = find(mine, metric="bio_completion", split="test", attribute="mean")
        if flagged and flagged["note"]:
            mem = [MISSING] * 5
        else:
            mem = [
                _cell(mine, metric="bio_completion", split="train", attribute="mean"),
                _cell(mine, metric="bio_completion", split="test", attribute="mean"),
                _cell(mine, metric="verbatim_exact", split="train"),
                _cell(mine, metric="verbatim_exact", split="test"),
                _cell(mine, metric="verbatim_prefix_tokens", split="train"),
            ]
        qa = [_cell(mine, metric="qa_exact_match", split=s, attribute="mean") or NONE for s in SPLITS]
        rows.append([labels[run.path], *mem, *qa])
    if not rows:
        return None
    header = ["data", "BIO completion P_train", "BIO completion P_test", "verbatim P_train",
              "verbatim P_test", "exact prefix P_train (tokens)", "QA P_train", "QA P_test"]  # fmt: skip
    return md_table(header, rows)


def task_table(report: Report, experiment: str) -> str | None:
    """Per dataset and task run: exact match on P_train and P_test (no hint at test, then the hint
    written at test time), the hint itself, the majority answer, shared inverse queries, the paper."""
    labels = run_labels(report.runs)
    rows = []
    for run in report.runs:
        if run.experiment != experiment:
            continue
        mine = [r for r in report.rows if r["experiment"] == experiment and r["run"] == run.name]
        for label, info in run.tasks32().items():
            cells = [r for r in mine if r["task"] == label]
            test = find(cells, metric="task_answer", split="test") or {}
            hint = find(cells, metric="task_answer_with_hint", split="test") or {}
            items = [find(cells, metric="task_items", split=s) for s in ("train", "test")]
            counts = "/".join(str(i["value"]) if i else "?" for i in items)
            values = (
                [MISSING] * 6
                if test.get("note")
                else [
                    _cell(cells, metric="task_answer", split="train"),
                    _cell(cells, metric="task_answer", split="test"),
                    _cell(cells, metric="task_answer_with_hint", split="test"),
                    _cell(cells, metric="task_hint", split="test"),
                    _cell(cells, metric="task_majority", split="test"),
                    _cell(cells, metric="task_shared_queries", split="test"),
                ]
            )
            paper = [fmt(c.get("paper_value"), NONE) if c else "" for c in (test, hint)]
            how = test.get("finetune") or ""
            rows.append([labels[run.path], label, how, counts, info.get("hint_prob", ""), *values, *paper])
    if not rows:
        return None
    header = ["data", "task run", "trained", "items train/test", "hint_prob", "P_train", "P_test",
              "P_test, hint at test", "hint written", "majority", "shared queries", "paper P_test",
              "paper, hint at test"]  # fmt: skip
    return md_table(header, rows)


def statements_list(report: Report, experiment: str) -> str | None:
    """One line per statement: source, key, the metric its number is compared with, the text."""
    known = paper_statements()
    rows = [r for r in report.rows if r["experiment"] == experiment and r["metric"] == "paper_statement"]
    lines = []
    for r in rows:
        s = known[r["attribute"]]
        where = f" ({s['task']} {s['metric']}, P_test: {fmt(s['value'])})" if s["value"] is not None else ""
        lines.append(f"- **{s['source']}** `{s['key']}`{where}: {s['statement']}")
    return "\n".join(lines) or None


def sections(report: Report, experiment: str) -> list[str]:
    """The Part 3.2 headings and tables of one experiment (none when it has no Part 3.2 rows)."""
    parts = []
    for title, part in (
        ("Memorization vs QA (percent; BIO completion and verbatim on the pretrained model)",
         memorization_table(report, experiment)),
        ("Part 3.2 tasks: exact match (percent)", task_table(report, experiment)),
        ("The paper's statements (reference)", statements_list(report, experiment)),
    ):  # fmt: skip
        if part:
            parts += [f"### {title}", part]
    return parts
