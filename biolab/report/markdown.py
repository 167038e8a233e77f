"""report.md: per experiment, QA and probe tables of ours beside the paper's numbers, memorization
beside QA, task accuracies and the paper's statements (percents)."""

from __future__ import annotations

import math

from biolab.data.people import ATTRIBUTES, SPLITS
from biolab.paper import paper_statements
from biolab.probe.plots import SHORT
from biolab.report.rows import QA_ATTRIBUTES, Report, find, qa_means, run_labels, spearman

MISSING = "missing"  # ours could not be read: the notes at the top say why
NONE = "n/a"  # the paper reports no such number
PROBE_TABLES = (
    (
        "pprobe_first_token_acc",
        "s0",
        "P-probe, first token, position s0 (before the first attribute), last layer",
    ),
    ("pprobe_whole_attribute_acc", "s0", "P-probe, whole attribute, position s0, last layer"),
    ("qprobe_first_token_acc", None, "Q-probe, first token, the name alone, last layer"),
    ("qprobe_whole_attribute_acc", None, "Q-probe, whole attribute, the name alone, last layer"),
)


def fmt(v, missing: str = MISSING) -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def signed(v) -> str:
    return "" if v is None else f"{v:+.1f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def qa_mean_table(report: Report, experiment: str) -> str:
    means = qa_means(report, experiment)
    mixed = any(m["qa_ratio"] for m in means)
    header = ["data", "model", "finetune", *(["QAr"] if mixed else []), "P_train", "P_test", "paper", "diff",
              "paper source"]  # fmt: skip
    rows = [
        [m["label"], m["model"] or "", m["finetune"] or "none", *([m["qa_ratio"]] if mixed else []),
         fmt(m["train"], NONE), fmt(m["test"]), fmt(m["paper"], NONE), signed(m["diff"]), m["paper_source"]]
        for m in means
    ]  # fmt: skip
    return md_table(header, rows)


def spearman_line(report: Report, experiment: str) -> str:
    pairs = [(m["test"], m["paper"]) for m in qa_means(report, experiment)]
    pairs = [p for p in pairs if p[0] is not None and p[1] is not None]
    if len(pairs) < 3:
        return (
            f"Spearman rank correlation with the paper: needs >= 3 datasets with both numbers ({len(pairs)})."
        )
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    shown = "undefined (one side is constant)" if math.isnan(rho) else f"{rho:.2f}"
    return f"Spearman rank correlation of our P_test means with the paper's (n={len(pairs)}): **{shown}**."


def qa_attribute_table(report: Report, experiment: str) -> str:
    labels = run_labels(report.runs)
    header = ["data", "", *[SHORT[a] for a in ATTRIBUTES], "mean"]
    rows = []
    for run in (r for r in report.runs if r.experiment == experiment and r.has_qa):
        mine = [r for r in report.rows if r["run"] == run.name and r["experiment"] == experiment]
        cells = [find(mine, split="test", metric="qa_exact_match", attribute=a) or {} for a in QA_ATTRIBUTES]
        ours = [c.get("value") for c in cells]
        paper = [c.get("paper_value") for c in cells]
        diff = [None if o is None or p is None else o - p for o, p in zip(ours, paper, strict=True)]
        rows.append([labels[run.path], "ours", *map(fmt, ours)])
        rows.append(["", "paper", *(fmt(p, NONE) for p in paper)])
        rows.append(["", "diff", *map(signed, diff)])
    return md_table(header, rows)


def probe_table(report: Report, experiment: str, metric: str, position: str | None) -> str | None:
    """Per run and probe: ours, the paper's and our majority-class accuracy, per attribute."""
    labels = run_labels(report.runs)
    mine_all = [r for r in report.rows if r["experiment"] == experiment]
    # birth date has no whole-attribute task: its column would stay empty
    attrs = [a for a in ATTRIBUTES if find(mine_all, metric=metric, attribute=a)] or list(ATTRIBUTES)
    rows = []
    for run in (r for r in report.runs if r.experiment == experiment):
        mine = [r for r in mine_all if r["run"] == run.name]
        for probe in run.probes():
            if find(mine, probe=probe, metric="probe"):
                if probe.startswith(metric[0]):  # p_* probes fill the P tables, q_* the Q tables
                    rows.append([labels[run.path], probe, "ours", *[MISSING] * len(attrs)])
                continue
            where = {"probe": probe, **({"position": position} if position else {})}
            cells = [find(mine, metric=metric, attribute=a, **where) for a in attrs]
            if not any(cells):
                continue
            majority = [
                find(mine, metric=metric.replace("_acc", "_majority"), attribute=a, **where) for a in attrs
            ]
            rows.append([labels[run.path], probe, "ours", *(fmt(c["value"]) if c else "" for c in cells)])
            rows.append(["", "", "paper", *(fmt(c["paper_value"], NONE) if c else "" for c in cells)])
            rows.append(["", "", "majority", *(fmt(c["value"]) if c else "" for c in majority)])
    if not rows:
        return None
    return md_table(["data", "probe", "", *[SHORT[a] for a in attrs]], rows)


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
        for label, info in run.task_runs().items():
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


def knowledge_sections(report: Report, experiment: str) -> list[str]:
    """The memorization, task and statement headings and tables of one experiment (none when it has
    no such rows)."""
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


def render_markdown(report: Report, figures: dict, heatmaps: dict) -> str:
    """The whole report.md; ``figures``: experiment -> QA bar chart, ``heatmaps``: (run, probe) -> pngs."""
    parts = [
        "# biolab report",
        f"Root `{report.root}`. Percents. Ours are read from the finished stage folders; the paper's "
        "(GPT2-124M on 100k people, arXiv v3 figures) from `biolab/data/paper_numbers.csv`. "
        f"diff = ours - paper; `{MISSING}`: our number could not be read (see below); `{NONE}`: the paper "
        "reports none. Probe tables: last layer, P_test people; `majority` is the most common class; "
        "p_fast/q_fast are linear probes on frozen states, the paper's (p_paper/q_paper) also train a "
        "low-rank embedding update. Part 3.2 (tasks, memorization) is read against the paper's statements "
        "(`biolab/data/paper_statements.tsv`).",
    ]
    if report.notes:
        parts.append(f"## Missing or unfinished ({len(report.notes)})")
        parts.append("\n".join(f"- {n}" for n in report.notes))
    labels = run_labels(report.runs)
    for exp in sorted({r.experiment for r in report.runs}):
        runs = [r for r in report.runs if r.experiment == exp]
        scales = ", ".join(sorted({str(r.get("scale")) for r in runs}))
        parts.append(f"## Experiment `{exp}` (scale {scales})")
        if any(r.has_qa for r in runs):
            parts += ["### QA exact match, mean over attributes", qa_mean_table(report, exp),
                      spearman_line(report, exp)]  # fmt: skip
            if figures.get(exp):
                parts.append(f"![P_test QA accuracy, ours vs the paper]({figures[exp]})")
            parts += ["### QA exact match on P_test, per attribute", qa_attribute_table(report, exp)]
        for metric, position, title in PROBE_TABLES:
            table = probe_table(report, exp, metric, position)
            if table:
                parts += [f"### {title}", table]
        parts += knowledge_sections(report, exp)
        links = [
            f"- {labels[run.path]} / {probe}: " + ", ".join(f"[{p.rsplit('/', 1)[-1]}]({p})" for p in paths)
            for run in runs
            for probe in run.probes()
            if (paths := heatmaps.get((run.path, probe)))
        ]
        if links:
            parts += ["### Probe heatmaps", "\n".join(links)]
    return "\n\n".join(parts) + "\n"
